"""What every flow run of a job does first and last: settings, database, lease, failure report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import Flow, runtime
from prefect.client.schemas.objects import FlowRun
from prefect.states import State

from dicom_node.config import Settings, load_settings
from dicom_node.db.session import Database
from dicom_node.jobs import queue
from dicom_node.jobs.dispatch import read_job, report_failure
from dicom_node.jobs.listing import JobInput


class LeaseLost(RuntimeError):
    """The job moved on before this run started (it was handed out again): the run does nothing."""


@contextmanager
def job_run(job_id: int, settings: Settings | None, attempt: int | None) -> Iterator[tuple[Database, Settings, JobInput]]:
    """Open the job's database and mark the job as this flow run's.

    ``settings`` come from the node when it runs the flow in its own process; a worker (``None``)
    reads its own. ``attempt`` is set when the node submitted the run to a work pool: the run then
    takes the job's lease for that attempt, or stops at once when the job has moved on, so that a
    node restart never has one attempt run twice.
    """
    settings = settings or load_settings()
    db = Database(settings.resolved_database_url)
    try:
        run_id = str(runtime.flow_run.id or "")
        with db.session() as session:
            if attempt is not None:
                if not queue.take_lease(session, job_id, attempt, owner=f"flow-run:{run_id}", flow_run_id=run_id or None):
                    raise LeaseLost(f"job {job_id} attempt {attempt} is no longer this run's")
            elif run_id:
                queue.record_flow_run(session, job_id, run_id)
        try:
            yield db, settings, read_job(db, job_id)
        except Exception as exc:
            if attempt is not None:  # on a worker nobody else sees it; in the node the dispatcher reports it
                report_failure(db, settings, job_id, exc)
            raise
    finally:
        db.dispose()


def job_crashed(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """A worker's run crashed (its process died, nothing was raised): retry the job while attempts remain."""
    if flow_run.parameters.get("attempt") is None:
        return  # run by the node itself: the node's restart recovers the job
    settings = load_settings()
    db = Database(settings.resolved_database_url)
    try:
        report_failure(db, settings, int(flow_run.parameters["job_id"]), f"flow run {flow_run.name} crashed: {state.message or ''}")
    finally:
        db.dispose()
