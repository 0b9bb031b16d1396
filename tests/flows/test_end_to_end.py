"""Scanner to PACS through Prefect: storescu -> dicom-node serve -> process-series flow -> Orthanc."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.uids import short_hash
from tests.conftest import REPO, SIEMENS, free_port, siemens_files, storescu, wait_until
from tests.flows.helpers import artifacts_of, browse, flow_run, orthanc_series_by_modality

ARTIFACTS = REPO / "test-artifacts"  # kept after the run for people to look at; git-ignored


@pytest.mark.timeout(1500)
def test_embedded_scanner_to_pacs(node_factory, orthanc, db_url: str, trained_weights: Path, tmp_path: Path) -> None:
    prefect_port = free_port()
    node = node_factory(
        {
            "DICOM_NODE_DATABASE_URL": db_url,
            "DICOM_NODE_SERIES_TIMEOUT": "2",
            "DICOM_NODE_DESTINATIONS": orthanc.destination,
            "DICOM_NODE_MODEL_WEIGHTS": str(trained_weights),
            "DICOM_NODE_PREFECT_PORT": str(prefect_port),
        }
    ).start()
    assert f"Prefect dashboard: http://127.0.0.1:{prefect_port}/" in wait_until(lambda: "dashboard" in node.log() and node.log(), 30, what="dashboard line")

    pushed = storescu(node.port, SIEMENS)
    assert pushed.returncode == 0
    job = wait_until(lambda: (j := node.jobs()) and j[0]["state"] in ("succeeded", "failed") and j[0], timeout=400, what="job finished")
    assert job["state"] == "succeeded", job["error"]
    assert job["model_version"] == "0.0.1-test" and job["flow_run_id"]

    study_uid = str(dcmread(siemens_files()[0], stop_before_pixels=True).StudyInstanceUID)
    held = wait_until(lambda: (m := orthanc_series_by_modality(orthanc)) and "SEG" in m and sum(s["instances"] for s in m.get("OT", []) + m.get("SC", [])) == 192 and m, timeout=120, what="SEG and 192 SC at the PACS")
    assert [s["instances"] for s in held["SEG"]] == [1]
    assert {s["study"] for series in held.values() for s in series} == {study_uid}

    api = f"http://127.0.0.1:{prefect_port}/api"
    run = wait_until(lambda: (r := flow_run(api, job["flow_run_id"]))["state_type"] not in ("RUNNING", "PENDING", "SCHEDULED") and r, timeout=120, what="flow run finished")
    assert run["state_type"] == "COMPLETED"
    series_uid = str(dcmread(siemens_files()[0], stop_before_pixels=True).SeriesInstanceUID)
    assert job["series"] == f"series-{short_hash(series_uid)}"  # `dicom-node jobs` names it as the run does
    assert run["name"] == f"{job['series']}-v1" and series_uid not in run["name"]
    assert job["series"] in run["tags"]
    kinds = {a["type"] for a in artifacts_of(api, job["flow_run_id"])}
    assert {"table", "markdown"} <= kinds

    # What an operator sees: the dashboard page of the run, rendered by a real browser.
    shot = ARTIFACTS / f"dashboard-{db_url.split(':')[0].split('+')[0]}.png"
    dom = browse(f"http://127.0.0.1:{prefect_port}/runs/flow-run/{job['flow_run_id']}", tmp_path / "chromium", shot)
    assert run["name"] in dom and "Completed" in dom
    assert shot.stat().st_size > 20_000
    assert node.stop() == 0

    # No patient data in what operators read: the node's log (flow-run logs included) and Prefect's.
    header = dcmread(siemens_files()[0], stop_before_pixels=True)
    identifiers = [str(header.PatientID), str(header.AccessionNumber), str(header.PatientBirthDate)]
    logs = node.log() + (node.data_dir / "prefect" / "server.log").read_text(errors="replace")
    assert [i for i in identifiers if i in logs] == []


def job_label(job: dict) -> str:
    return f"{job['series']}-v{job['version']}"


@pytest.mark.timeout(1500)
def test_distributed_node_and_separate_worker(node_factory, orthanc, trained_weights: Path, tmp_path: Path) -> None:
    """A real `prefect server start`, a real worker process, the node submitting; PostgreSQL shared."""
    import os
    import subprocess

    from dicom_node.runtime.prefect_server import EmbeddedPrefectServer, api_call
    from tests.conftest import VENV_BIN, _postgres_database
    from tests.flows.helpers import prefect_get

    databases = _postgres_database()
    db_url = next(databases)
    server = EmbeddedPrefectServer(tmp_path / "prefect-server", free_port())
    server.start()
    shared = tmp_path / "shared-storage"
    common = {
        "PREFECT_API_URL": server.api_url,
        "DICOM_NODE_DATABASE_URL": db_url,
        "DICOM_NODE_DATA_DIR": str(shared),
        "DICOM_NODE_DESTINATIONS": orthanc.destination,
        "DICOM_NODE_MODEL_WEIGHTS": str(trained_weights),
        "DICOM_NODE_WORK_POOL": "test-pool",
    }
    worker_log = open(tmp_path / "worker.log", "ab")
    worker = subprocess.Popen(
        [str(VENV_BIN / "dicom-node"), "worker"],
        env={**os.environ, **common, "PREFECT_HOME": str(tmp_path / "worker-home")},
        stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until(lambda: prefect_get(server.api_url, "/deployments/name/process-series/dicom-node"), timeout=120, what="deployment registered")
        env = {**common, "DICOM_NODE_FLOWS": "distributed", "DICOM_NODE_SERIES_TIMEOUT": "2"}
        node = node_factory(env, data_dir=shared).start()
        assert storescu(node.port, SIEMENS).returncode == 0

        # The node stops and restarts while the worker runs the job: the worker's run holds the
        # lease, so the restart neither requeues nor resubmits it. Prefect marks the run RUNNING
        # before the flow's code takes the lease; a restart in between rightly requeues the job
        # (the run then finds its attempt gone and does nothing), so wait for the lease itself.
        def worker_holds_lease() -> bool:
            jobs = node.jobs()
            return bool(jobs) and jobs[0]["state"] == "running" and (jobs[0]["reason"] or "").startswith("lease taken by flow-run:")

        wait_until(worker_holds_lease, timeout=300, interval=0.2, what="the flow run on the worker holding the job's lease")
        assert node.stop() == 0
        node = node_factory({**env, "DICOM_NODE_PORT": str(node.port)}, data_dir=shared).start()
        job = wait_until(lambda: (j := node.jobs()) and j[0]["state"] in ("succeeded", "failed") and j[0], timeout=400, what="job finished on the worker")
        assert job["state"] == "succeeded", job["error"]
        assert job["attempts"] == 1 and len(node.jobs()) == 1
        runs = api_call(server.api_url, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [job_label(job)]}}})
        assert [r["state_type"] for r in runs] == ["COMPLETED"]  # one run of the job, finished once
        run = wait_until(lambda: (r := flow_run(server.api_url, job["flow_run_id"]))["state_type"] not in ("RUNNING", "PENDING", "SCHEDULED") and r, timeout=120, what="flow run finished")
        assert run["state_type"] == "COMPLETED" and run["deployment_id"]
        assert {"table", "markdown"} <= {a["type"] for a in artifacts_of(server.api_url, job["flow_run_id"])}
        held = wait_until(lambda: (m := orthanc_series_by_modality(orthanc)) and "SEG" in m
                          and sum(s["instances"] for s in m.get("OT", []) + m.get("SC", [])) == 192 and m, timeout=120, what="SEG and SC at the PACS")
        assert [s["instances"] for s in held["SEG"]] == [1] and len(orthanc.instance_uids()) == 193
        assert node.stop() == 0
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(timeout=30)
        server.stop()
        next(databases, None)
