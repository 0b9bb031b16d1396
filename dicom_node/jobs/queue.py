"""The durable job queue: the only code that writes ``jobs`` and ``job_events`` rows.

Every state change goes through a function here and leaves an event, so a job's history can be
read back in order. Functions take the caller's session and never commit: the caller's
transaction decides what is written together (a job's end with its outputs, for example).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, Update, func, select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import Job, JobEvent, JobState, utcnow
from dicom_node.jobs.kinds import JobKind
from dicom_node.uids import redact_uids

#: States a job ends in; nothing changes it afterwards.
TERMINAL = (JobState.SUCCEEDED, JobState.SKIPPED, JobState.NO_BRAIN, JobState.FAILED)


class PermanentJobError(Exception):
    """A failure that a retry would repeat (bad geometry, a missing attribute): the job ends at once."""


def _updated(session: Session, statement: Update) -> int:
    """Rows changed by a conditional UPDATE: how a claim knows it won."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return result.rowcount


def _event(session: Session, job_id: int, state: JobState, message: str | None = None) -> None:
    session.add(JobEvent(job_id=job_id, state=state.value, message=message))


def next_version(session: Session, kind: JobKind, series_id: int | None) -> int:
    """1 + the highest version of the series' jobs (or of retraining rounds when ``series_id`` is None)."""
    scope = Job.series_id == series_id if series_id is not None else Job.kind == kind.value
    return (session.scalar(select(func.max(Job.version)).where(scope)) or 0) + 1


def create_job(session: Session, kind: JobKind, *, series_id: int | None, instance_count: int = 0, message: str) -> Job:
    """A new queued job, next version of its series (or of retraining rounds)."""
    job = Job(
        series_id=series_id,
        version=next_version(session, kind, series_id),
        kind=kind.value,
        state=JobState.QUEUED,
        instance_count=instance_count,
    )
    session.add(job)
    session.flush()
    _event(session, job.id, JobState.QUEUED, message)
    return job


def set_instance_count(session: Session, job_id: int, count: int) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(instance_count=count))


def claim_next(session: Session, owner: str, kinds: tuple[JobKind, ...] = tuple(JobKind)) -> Job | None:
    """Move the oldest queued job to running for ``owner``; None when the queue is empty.

    The conditional UPDATE makes the claim safe when several dispatchers share the database.
    """
    while True:
        job_id = session.scalar(
            select(Job.id).where(Job.state == JobState.QUEUED, Job.kind.in_([k.value for k in kinds])).order_by(Job.id).limit(1)
        )
        if job_id is None:
            return None
        claimed = _updated(
            session,
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(state=JobState.RUNNING, lease_owner=owner, attempts=Job.attempts + 1, started_at=utcnow()),
        )
        if claimed:
            _event(session, job_id, JobState.RUNNING, f"claimed by {owner}")
            return session.get(Job, job_id)


def take_lease(session: Session, job_id: int, attempt: int, owner: str, flow_run_id: str | None = None) -> bool:
    """Hand a running job's lease to ``owner`` (a flow run on a worker) for attempt ``attempt``.

    False when the job moved on meanwhile (requeued and claimed again, or ended): the caller must
    then do nothing, so that no attempt runs twice.
    """
    values: dict[str, Any] = {"lease_owner": owner}
    if flow_run_id is not None:
        values["flow_run_id"] = flow_run_id
    taken = _updated(session, update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING, Job.attempts == attempt).values(**values))
    if taken:
        _event(session, job_id, JobState.RUNNING, f"lease taken by {owner}")
    return bool(taken)


def record_flow_run(session: Session, job_id: int, flow_run_id: str) -> None:
    """Mirror the Prefect flow run that carries the job."""
    session.execute(update(Job).where(Job.id == job_id).values(flow_run_id=flow_run_id))


def finish(
    session: Session,
    job_id: int,
    state: JobState,
    *,
    message: str | None = None,
    stats: dict | None = None,
    model_version: str | None = None,
) -> None:
    """End a job in ``state`` (a terminal one), with its message and numbers."""
    if state not in TERMINAL:
        raise ValueError(f"{state.value} is not a terminal job state")
    message = redact_uids(message) if message else message
    values: dict[str, Any] = {"state": state, "finished_at": utcnow(), "lease_owner": None}
    if state is JobState.FAILED:
        values["error"] = message
    if stats is not None:
        values["stats"] = stats
    if model_version is not None:
        values["model_version"] = model_version
    session.execute(update(Job).where(Job.id == job_id).values(**values))
    _event(session, job_id, state, message)


def fail_or_retry(session: Session, job_id: int, message: str, max_attempts: int, *, permanent: bool = False) -> JobState:
    """After a failed attempt: back to the queue while attempts remain, else failed.

    A ``permanent`` failure ends the job at once. Only a running job changes: a second report of
    the same failure (a flow's hook and the dispatcher both see it) is a no-op.
    """
    job = session.get(Job, job_id)
    if job is None or job.state is not JobState.RUNNING:
        return job.state if job is not None else JobState.FAILED
    message = redact_uids(message)
    if permanent or job.attempts >= max_attempts:
        finish(session, job_id, JobState.FAILED, message=message)
        return JobState.FAILED
    session.execute(update(Job).where(Job.id == job_id).values(state=JobState.QUEUED, lease_owner=None, error=message))
    _event(session, job_id, JobState.QUEUED, f"retry after: {message}")
    return JobState.QUEUED


def requeue_interrupted(session: Session, max_attempts: int | None, owner_prefix: str = "") -> int:
    """Hand back running jobs whose lease starts with ``owner_prefix``: they were cut off mid-way.

    After a crash (``max_attempts`` given) a job that has used all its attempts fails instead, so a
    series that kills the process cannot be reclaimed on every restart. A job cut off by an
    orderly stop (``None``) always goes back.
    """
    rows = session.execute(
        select(Job.id, Job.attempts).where(Job.state == JobState.RUNNING, Job.lease_owner.startswith(owner_prefix, autoescape=True))
    ).all()
    for job_id, attempts in rows:
        if max_attempts is not None and attempts >= max_attempts:
            finish(session, job_id, JobState.FAILED, message=f"interrupted {attempts} times (attempt limit {max_attempts})")
        else:
            session.execute(update(Job).where(Job.id == job_id).values(state=JobState.QUEUED, lease_owner=None))
            _event(session, job_id, JobState.QUEUED, "requeued after an interrupted run")
    return len(rows)
