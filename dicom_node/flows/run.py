"""How the node hands a claimed job to Prefect: run its flow here (embedded) or submit it to a
work pool (distributed). Kinds without a flow run in the node itself, through the same dispatch."""

from __future__ import annotations

from typing import Any

from prefect import Flow, tags
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from dicom_node.config import Settings
from dicom_node.db.session import Database
from dicom_node.flows.process_series import process_series
from dicom_node.flows.retrain import retrain
from dicom_node.jobs import queue
from dicom_node.jobs.dispatch import Processor, read_job, run_read_job
from dicom_node.jobs.kinds import JobKind
from dicom_node.jobs.listing import JobInput

#: The job kinds that run as a flow; the rest are quick bookkeeping, done by the node inline.
FLOWS: dict[JobKind, Flow[..., Any]] = {JobKind.PROCESS_SERIES: process_series, JobKind.RETRAIN: retrain}
DEPLOYMENT_NAME = "dicom-node"


def run_tags(job: JobInput) -> list[str]:
    """Tags of a job's flow run: the node's, and the job's label without its version (no patient data)."""
    return ["dicom-node", job.series_label]


def in_process(api_url: str) -> Processor:
    """The embedded mode's processor: each job's flow runs in the node, reporting to ``api_url``."""

    def run(db: Database, settings: Settings, job_id: int) -> None:
        job = read_job(db, job_id)
        flow = FLOWS.get(job.kind)
        if flow is None:
            run_read_job(db, settings, job)
            return
        # No flow-run heartbeats here: they tell a server that a worker's run crashed, and this
        # run is the node's own (a restart marks its runs crashed). Prefect joins the heartbeat
        # thread, which sleeps in whole seconds, at the end of every run: up to a second per series.
        settings_here = {PREFECT_API_URL: api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        with temporary_settings(updates=settings_here), tags(*run_tags(job)):
            flow(job_id=job_id, name=job.label, settings=settings)

    return run


def submit_to_pool(db: Database, settings: Settings, job_id: int) -> None:
    """The distributed mode's processor: create the flow run and return; the worker's run takes the
    job's lease for this attempt and ends the job."""
    job = read_job(db, job_id)
    flow = FLOWS.get(job.kind)
    if flow is None:
        run_read_job(db, settings, job)
        return
    flow_run = run_deployment(  # sync here: the node's dispatcher thread has no event loop
        f"{flow.name}/{DEPLOYMENT_NAME}",
        parameters={"job_id": job_id, "name": job.label, "attempt": job.attempt},
        flow_run_name=job.label,
        tags=run_tags(job),
        timeout=0,
    )
    assert isinstance(flow_run, FlowRun)
    with db.session() as session:
        queue.take_lease(session, job_id, job.attempt, owner=f"flow-run:{flow_run.id}", flow_run_id=str(flow_run.id))
