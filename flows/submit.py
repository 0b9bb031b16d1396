"""Distributed mode: the node submits ``process-series`` runs to a work pool; workers run them."""

from __future__ import annotations

from prefect.deployments import run_deployment

from dicom_node.config import Settings
from dicom_node.db.models import Job
from dicom_node.db.session import Database
from dicom_node.jobs import KIND_PROCESS, KIND_RETRAIN
from dicom_node.processing import load_job_input, process_job
from dicom_node.uids import short_hash
from flows.process_series import run_name

DEPLOYMENT_NAME = "dicom-node"


def submit_to_pool(db: Database, settings: Settings, job_id: int) -> None:
    """Create the flow run and return at once; the worker's flow run finishes the job row."""
    job = load_job_input(db, job_id)
    if job.kind == KIND_PROCESS:
        flow_name, name = "process-series", run_name(job.series_instance_uid, job.version)
        run_tags = ["dicom-node", f"series-{short_hash(job.series_instance_uid)}"]
    elif job.kind == KIND_RETRAIN:
        flow_name, name, run_tags = "retrain", job.label, ["dicom-node", "retrain"]
    else:  # bookkeeping jobs run here
        process_job(db, settings, job_id)
        return
    flow_run = run_deployment(
        f"{flow_name}/{DEPLOYMENT_NAME}",
        parameters={"job_id": job_id, "name": name},
        flow_run_name=name,
        tags=run_tags,
        timeout=0,
    )
    with db.session() as session:
        row = session.get(Job, job_id)
        if row is not None:
            row.flow_run_id = str(flow_run.id)
