"""Series completion: a series whose instances have stopped arriving becomes a job.

A series is complete when none of its instances has arrived for the quiet period. Completing it
creates a job (version 1, 2, ... per series) that owns the instances that arrived since the last
version; a job processes every instance of its series up to and including its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import ExpertMask, Instance, Job, JobState, Series, utcnow
from dicom_node.jobs import queue
from dicom_node.jobs.kinds import JobKind, kind_for_modality


def close_quiet_series(session: Session, quiet_s: float, now: datetime | None = None) -> list[Job]:
    """Turn every series whose newest unassigned instance is older than ``quiet_s`` into a job."""
    cutoff = (now or utcnow()) - timedelta(seconds=quiet_s)
    pending = (
        select(Instance.series_id, func.max(Instance.received_at).label("last"))
        .where(Instance.job_id.is_(None))
        .group_by(Instance.series_id)
        .subquery()
    )
    jobs = []
    for series_id in session.scalars(select(pending.c.series_id).where(pending.c.last <= cutoff)).all():
        series = session.get(Series, series_id)
        assert series is not None  # the foreign key guarantees it
        kind = kind_for_modality(series.modality)
        job = queue.create_job(session, kind, series_id=series_id, message="series complete")
        session.execute(
            update(Instance)
            .where(Instance.series_id == series_id, Instance.job_id.is_(None), Instance.received_at <= cutoff)
            .values(job_id=job.id)
        )
        count = session.scalar(
            select(func.count()).select_from(Instance).where(Instance.series_id == series_id, Instance.job_id.is_not(None))
        )
        queue.set_instance_count(session, job.id, count or 0)
        jobs.append(job)
    return jobs


def queue_retrain_if_due(session: Session, min_new_masks: int, force: bool = False) -> Job | None:
    """Queue a retraining round when ``min_new_masks`` expert masks arrived since the last one.

    At most one round is queued or running at a time; ``force`` (on demand) skips the count.
    """
    busy = session.scalar(
        select(Job.id).where(Job.kind == JobKind.RETRAIN.value, Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
    )
    if busy is not None:
        return None
    new = session.scalar(select(func.count()).select_from(ExpertMask).where(ExpertMask.used_in_version.is_(None))) or 0
    total = session.scalar(select(func.count()).select_from(ExpertMask)) or 0
    if total == 0 or (not force and new < min_new_masks):
        return None
    return queue.create_job(
        session, JobKind.RETRAIN, series_id=None, instance_count=total, message=f"{new} new expert mask(s), {total} in all"
    )
