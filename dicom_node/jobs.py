"""Series completion and the durable job queue, as plain functions over a session.

A series is complete when none of its instances has arrived for the quiet period. Completing it
creates a job (version 1, 2, ... per series) that owns the instances that arrived since the last
version; a job processes every instance of its series up to and including its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import Instance, Job, JobEvent, JobState, Series, Study, utcnow

# What a job of each kind does; a series' modality picks the kind.
KIND_PROCESS = "process_series"
KIND_EXPERT_MASK = "register_seg"
KIND_STORE_ONLY = "store_only"
KIND_RETRAIN = "retrain"


def kind_for_modality(modality: str | None) -> str:
    if modality == "MR":
        return KIND_PROCESS
    if modality == "SEG":
        return KIND_EXPERT_MASK
    return KIND_STORE_ONLY


def add_event(session: Session, job_id: int, state: str, message: str | None = None) -> None:
    session.add(JobEvent(job_id=job_id, state=state, message=message))


def close_quiet_series(session: Session, quiet_s: float, now: datetime | None = None) -> list[Job]:
    """Turn every series whose newest unassigned instance is older than ``quiet_s`` into a job."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=quiet_s)
    pending = (
        select(Instance.series_id, func.max(Instance.received_at).label("last"))
        .where(Instance.job_id.is_(None))
        .group_by(Instance.series_id)
        .subquery()
    )
    quiet_ids = session.scalars(select(pending.c.series_id).where(pending.c.last <= cutoff)).all()
    jobs = []
    for series_id in quiet_ids:
        series = session.get(Series, series_id)
        assert series is not None  # the foreign key guarantees it
        version = (session.scalar(select(func.max(Job.version)).where(Job.series_id == series_id)) or 0) + 1
        kind = kind_for_modality(series.modality)
        job = Job(series_id=series_id, version=version, kind=kind, state=JobState.QUEUED)
        session.add(job)
        session.flush()
        session.execute(
            update(Instance)
            .where(Instance.series_id == series_id, Instance.job_id.is_(None), Instance.received_at <= cutoff)
            .values(job_id=job.id)
        )
        job.instance_count = session.scalar(
            select(func.count()).select_from(Instance).where(Instance.series_id == series_id, Instance.job_id.is_not(None))
        ) or 0
        add_event(session, job.id, JobState.QUEUED.value, f"series complete, version {version}")
        if kind == KIND_STORE_ONLY:
            finish_job(session, job.id, JobState.SUCCEEDED, message=f"modality {series.modality or 'unknown'}: stored only")
        jobs.append(job)
    return jobs


def queue_retrain_if_due(session: Session, min_new_masks: int, force: bool = False) -> Job | None:
    """Queue a retraining round when ``min_new_masks`` expert masks arrived since the last one.

    At most one round is queued or running at a time; ``force`` (on demand) skips the count.
    """
    from dicom_node.db.models import ExpertMask

    busy = session.scalar(select(Job.id).where(Job.kind == KIND_RETRAIN, Job.state.in_([JobState.QUEUED, JobState.RUNNING])))
    if busy is not None:
        return None
    new = session.scalar(select(func.count()).select_from(ExpertMask).where(ExpertMask.used_in_version.is_(None))) or 0
    total = session.scalar(select(func.count()).select_from(ExpertMask)) or 0
    if total == 0 or (not force and new < min_new_masks):
        return None
    version = (session.scalar(select(func.max(Job.version)).where(Job.kind == KIND_RETRAIN)) or 0) + 1
    job = Job(series_id=None, version=version, kind=KIND_RETRAIN, state=JobState.QUEUED, instance_count=total)
    session.add(job)
    session.flush()
    add_event(session, job.id, JobState.QUEUED.value, f"{new} new expert mask(s), {total} in all")
    return job


def claim_next_job(
    session: Session, owner: str, kinds: tuple[str, ...] = (KIND_PROCESS, KIND_EXPERT_MASK, KIND_RETRAIN)
) -> Job | None:
    """Move the oldest queued job to running for ``owner``; None when the queue is empty.

    The conditional UPDATE makes the claim safe when several dispatchers share the database.
    """
    while True:
        job_id = session.scalar(
            select(Job.id).where(Job.state == JobState.QUEUED, Job.kind.in_(kinds)).order_by(Job.id).limit(1)
        )
        if job_id is None:
            return None
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(state=JobState.RUNNING, lease_owner=owner, attempts=Job.attempts + 1, started_at=utcnow())
        ).rowcount
        if claimed:
            add_event(session, job_id, JobState.RUNNING.value, None)
            return session.get(Job, job_id)


def finish_job(
    session: Session,
    job_id: int,
    state: JobState,
    *,
    message: str | None = None,
    stats: dict | None = None,
    model_version: str | None = None,
) -> None:
    values: dict = {"state": state, "finished_at": utcnow(), "lease_owner": None}
    if state is JobState.FAILED:
        values["error"] = message
    if stats is not None:
        values["stats"] = stats
    if model_version is not None:
        values["model_version"] = model_version
    session.execute(update(Job).where(Job.id == job_id).values(**values))
    add_event(session, job_id, state.value, message)


def fail_or_retry(session: Session, job_id: int, message: str, max_attempts: int) -> JobState:
    """After a failed attempt: back to the queue while attempts remain, else failed.

    Only a running job changes: a second report of the same failure (the flow's hook and the
    dispatcher both see it in embedded mode) is a no-op.
    """
    job = session.get(Job, job_id)
    if job is None or job.state is not JobState.RUNNING:
        return job.state if job is not None else JobState.FAILED
    if job.attempts < max_attempts:
        session.execute(update(Job).where(Job.id == job_id).values(state=JobState.QUEUED, lease_owner=None, error=message))
        add_event(session, job_id, JobState.QUEUED.value, f"retry after: {message}")
        return JobState.QUEUED
    finish_job(session, job_id, JobState.FAILED, message=message)
    return JobState.FAILED


def requeue_interrupted(session: Session, owner: str | None = None) -> int:
    """Put running jobs (all, or ``owner``'s) back in the queue: they were cut off mid-way."""
    condition = [Job.state == JobState.RUNNING]
    if owner is not None:
        condition.append(Job.lease_owner == owner)
    ids = session.scalars(select(Job.id).where(*condition)).all()
    if ids:
        session.execute(update(Job).where(Job.id.in_(ids)).values(state=JobState.QUEUED, lease_owner=None))
    for job_id in ids:
        add_event(session, job_id, JobState.QUEUED.value, "requeued after an interrupted run")
    return len(ids)


def job_instance_paths(session: Session, job: Job) -> list[str]:
    """Every stored instance of the job's series up to this job's version."""
    return list(
        session.scalars(
            select(Instance.path)
            .where(Instance.series_id == job.series_id, Instance.job_id.is_not(None), Instance.job_id <= job.id)
            .order_by(Instance.id)
        )
    )


@dataclass(frozen=True)
class JobRow:
    """What ``dicom-node jobs`` shows: UIDs only, never patient data."""

    id: int
    series_instance_uid: str | None  # None for a retrain round
    study_instance_uid: str | None
    version: int
    kind: str
    state: str
    attempts: int
    instances: int
    model_version: str | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    flow_run_id: str | None


def list_jobs(session: Session, limit: int = 100, state: str | None = None) -> list[JobRow]:
    query = (
        select(Job, Series.series_instance_uid, Study.study_instance_uid)
        .outerjoin(Series, Job.series_id == Series.id)
        .outerjoin(Study, Series.study_id == Study.id)
        .order_by(Job.id.desc())
        .limit(limit)
    )
    if state:
        query = query.where(Job.state == JobState(state))
    rows = []
    for job, series_uid, study_uid in session.execute(query):
        rows.append(
            JobRow(
                id=job.id,
                series_instance_uid=series_uid,
                study_instance_uid=study_uid,
                version=job.version,
                kind=job.kind,
                state=job.state.value,
                attempts=job.attempts,
                instances=job.instance_count,
                model_version=job.model_version,
                error=job.error,
                created_at=job.created_at.isoformat(),
                started_at=job.started_at.isoformat() if job.started_at else None,
                finished_at=job.finished_at.isoformat() if job.finished_at else None,
                flow_run_id=job.flow_run_id,
            )
        )
    return rows
