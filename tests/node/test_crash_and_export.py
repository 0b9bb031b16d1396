"""Crashes, restarts and exports: nothing acknowledged is lost, queued work resumes, the PACS gets it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom_node.config import Settings
from dicom_node.db.models import Export, ExportState, Instance, Job, JobState, Output
from dicom_node.db.session import Database
from dicom_node.export.queue import export_due
from dicom_node.jobs.dispatch import Outcome, complete, read_job
from dicom_node.outputs.part10 import OutputFile
from dicom_node.runtime.node import Node
from dicom_node.series.job import output_dir, record_outputs
from tests.conftest import SIEMENS, acknowledged_files, free_port, siemens_files, wait_until
from tests.node.helpers import dataset_bytes, stored_path


def derive_processor(db: Database, settings: Settings, job_id: int) -> None:
    """A real, minimal processor: a derived copy of the series' first instance, with UIDs seeded by the job."""
    job = read_job(db, job_id)
    ds = dcmread(sorted(job.paths)[0])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[job.series_instance_uid, str(job.version), "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[job.series_instance_uid, str(job.version), "sop"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = output_dir(settings, job) / "derived.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    complete(db, job_id, Outcome(model_version="test", writes=[lambda s: record_outputs(s, job_id, [("derived", OutputFile.read(path))], settings)]))


def test_kill_9_during_push_loses_no_acknowledged_instance(node_factory, tmp_path: Path) -> None:
    node = node_factory({"DICOM_NODE_SERIES_TIMEOUT": "1"}, args=("--no-processing",)).start()
    push = subprocess.Popen(
        ["storescu", "-v", "-nh", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), "+sd", "+sp", "*.dcm", str(SIEMENS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    incoming = node.data_dir / "incoming"
    wait_until(lambda: incoming.exists() and sum(1 for _ in incoming.rglob("*.dcm")) >= 40, timeout=60, interval=0.01, what="40 stored")
    node.kill()
    output, _ = push.communicate(timeout=60)
    acked = acknowledged_files(output)
    assert 20 <= len(acked) < 192, f"kill came too late or too early: {len(acked)} acknowledged"

    restarted = node_factory({"DICOM_NODE_SERIES_TIMEOUT": "1", "DICOM_NODE_PORT": str(node.port)}, args=("--no-processing",), data_dir=node.data_dir).start()
    db = Database(f"sqlite:///{node.data_dir / 'dicom-node.db'}")
    with db.session() as session:
        recorded = set(session.scalars(select(Instance.sop_instance_uid)))
    for name in acked:
        source = Path(name)
        assert dataset_bytes(stored_path(node.data_dir, source)) == dataset_bytes(source)
        assert dcmread(source, stop_before_pixels=True).SOPInstanceUID in recorded
    assert not list(node.data_dir.rglob("*.part")) and not list((node.data_dir / "tmp").glob("*"))

    # The sender retries the whole series: everything ends up stored, once, in one job.
    again = subprocess.run(["storescu", "-nh", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), "+sd", "+sp", "*.dcm", str(SIEMENS)], capture_output=True)
    assert again.returncode == 0
    jobs = wait_until(lambda: restarted.jobs(), timeout=30, what="a job")
    assert jobs[-1]["instances"] >= len(acked)
    total = wait_until(lambda: (j := restarted.jobs()) and sum(x["instances"] for x in j[:1]) == 192 and j, timeout=30, what="all 192 in the newest job")
    assert total[0]["instances"] == 192
    restarted.stop()
    db.dispose()


def test_restart_resumes_queued_work_and_exports_to_orthanc(node_factory, orthanc, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    node = node_factory({"DICOM_NODE_SERIES_TIMEOUT": "1"}, args=("--no-processing",), data_dir=data_dir).start()
    pushed = subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), *map(str, siemens_files()[:8])], capture_output=True)
    assert pushed.returncode == 0
    wait_until(lambda: node.jobs(), timeout=30, what="a queued job")
    assert node.stop() == 0

    settings = Settings(data_dir=data_dir, port=free_port(), host="127.0.0.1", destinations=orthanc.destination,
                        poll_interval_s=0.2, min_free_bytes=0)
    db = Database(settings.resolved_database_url)
    restarted = Node(settings, db, processor=derive_processor)
    restarted.start()
    try:
        def exported() -> bool:
            with db.session() as session:
                return session.scalar(select(func.count()).select_from(Export).where(Export.state == ExportState.SENT)) == 1
        wait_until(exported, timeout=60, what="the output exported")
    finally:
        restarted.stop()
    with db.session() as session:
        job = session.scalars(select(Job)).one()
        output = session.scalars(select(Output)).one()
        assert job.state is JobState.SUCCEEDED and job.attempts == 1
    assert orthanc.instance_uids() == {output.sop_instance_uid}
    db.dispose()


def test_pacs_down_results_wait_and_go_out_when_it_returns(migrated_db: Database, tmp_path: Path, orthanc) -> None:
    db = migrated_db
    orthanc.stop()
    settings = Settings(data_dir=tmp_path, destinations=orthanc.destination, export_backoff_s=0.5, min_free_bytes=0)
    # An output of a job, as processing leaves it.
    source = siemens_files()[0]
    out = tmp_path / "outputs" / "one.dcm"
    out.parent.mkdir(parents=True)
    out.write_bytes(source.read_bytes())
    with db.session() as session:
        from dicom_node.receive.ingest import insert_instance, read_header, series_id_for
        header = read_header(source)
        insert_instance(session, header, series_id_for(session, header), source, source.stat().st_size, None)
        instance = session.scalars(select(Instance)).one()
        job = Job(series_id=instance.series_id, version=1, state=JobState.SUCCEEDED)
        session.add(job)
        session.flush()
        record_outputs(session, job.id, [("seg", OutputFile.read(out))], settings)
        record_outputs(session, job.id, [("seg", OutputFile.read(out))], settings)  # idempotent on a rerun

    assert export_due(db, settings) == {"sent": 0, "pending": 1, "failed": 0}
    with db.session() as session:
        export = session.scalars(select(Export)).one()
        assert export.attempts == 1 and export.state is ExportState.PENDING and "failed" in export.last_error
    assert export_due(db, settings) == {"sent": 0, "pending": 0, "failed": 0}  # backing off: not due yet

    orthanc.start()
    time.sleep(0.6)
    assert export_due(db, settings) == {"sent": 1, "pending": 0, "failed": 0}
    assert orthanc.instance_uids() == {header.sop_instance_uid}
    with db.session() as session:
        assert session.scalars(select(Export)).one().attempts == 2


def test_kill_9_mid_processing_requeues_and_never_exports_twice_as_different_objects(node_factory, orthanc, trained_weights: Path) -> None:
    env = {
        "DICOM_NODE_FLOWS": "off",
        "DICOM_NODE_SERIES_TIMEOUT": "1",
        "DICOM_NODE_DESTINATIONS": orthanc.destination,
        "DICOM_NODE_MODEL_WEIGHTS": str(trained_weights),
    }
    node = node_factory(env).start()
    assert subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), "+sd", "+sp", "*.dcm", str(SIEMENS)], capture_output=True).returncode == 0
    wait_until(lambda: any(j["state"] == "running" for j in node.jobs()), timeout=60, interval=0.05, what="the job running")
    time.sleep(1.0)  # well inside segmentation
    node.kill()

    restarted = node_factory({**env, "DICOM_NODE_PORT": str(node.port)}, data_dir=node.data_dir).start()
    job = wait_until(lambda: (j := restarted.jobs()) and j[0]["state"] in ("succeeded", "failed") and j[0], timeout=400, what="job finished after restart")
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    held = wait_until(lambda: len(orthanc.instance_uids()) >= 193 and orthanc.instance_uids(), timeout=120, what="all outputs at the PACS")
    assert len(held) == 193  # one SEG + 192 SC: a rerun reuses the same UIDs
    assert restarted.stop() == 0
