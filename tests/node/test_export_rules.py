"""Export rules against a real Orthanc: the attempt limit, and only the newest version of a series."""

from __future__ import annotations

import time
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from dicom_node.config import Settings
from dicom_node.db.models import Export, ExportState, Instance, Job, JobState
from dicom_node.db.session import Database
from dicom_node.export.queue import export_due
from dicom_node.outputs.part10 import OutputFile
from dicom_node.receive.ingest import ingest_file
from dicom_node.series.job import record_outputs
from tests.conftest import siemens_files
from tests.node.helpers import late_copies


def _job_with_output(db: Database, settings: Settings, version: int, output: Path) -> int:
    """A succeeded job of the Siemens series (version ``version``) that made ``output``."""
    with db.session() as session:
        series_id = session.scalars(select(Instance.series_id)).first()
        job = Job(series_id=series_id, version=version, state=JobState.SUCCEEDED)
        session.add(job)
        session.flush()
        record_outputs(session, job.id, [("seg", OutputFile.read(output))], settings)
        return job.id


def test_export_gives_up_after_the_configured_attempts(migrated_db: Database, tmp_path: Path, orthanc) -> None:
    db = migrated_db
    orthanc.stop()
    settings = Settings(data_dir=tmp_path, destinations=orthanc.destination, export_backoff_s=0.01, export_max_attempts=2, min_free_bytes=0)
    ingest_file(db, siemens_files()[0], settings.incoming_dir)
    (output,) = late_copies(siemens_files()[:1], tmp_path / "outputs")
    _job_with_output(db, settings, 1, output)
    assert export_due(db, settings) == {"sent": 0, "pending": 1, "failed": 0}
    time.sleep(0.05)
    assert export_due(db, settings) == {"sent": 0, "pending": 0, "failed": 1}
    with db.session() as session:
        export = session.scalars(select(Export)).one()
        assert (export.state, export.attempts) == (ExportState.FAILED, 2) and "gave up after 2 attempts" in export.last_error


def test_a_newer_version_withdraws_the_older_versions_pending_outputs(migrated_db: Database, tmp_path: Path, orthanc) -> None:
    db = migrated_db
    settings = Settings(data_dir=tmp_path, destinations=orthanc.destination, min_free_bytes=0)
    ingest_file(db, siemens_files()[0], settings.incoming_dir)
    old, new = late_copies(siemens_files()[:2], tmp_path / "outputs")
    _job_with_output(db, settings, 1, old)  # version 1 finished while the PACS was away...
    _job_with_output(db, settings, 2, new)  # ...and version 2 (the resent, complete series) too
    assert export_due(db, settings) == {"sent": 1, "pending": 0, "failed": 0}
    with db.session() as session:
        states = {e.output.path: e.state for e in session.scalars(select(Export))}
    assert states == {str(old): ExportState.SUPERSEDED, str(new): ExportState.SENT}
    assert orthanc.instance_uids() == {str(dcmread(new, stop_before_pixels=True).SOPInstanceUID)}
