"""Series completion: a series the sender has finished sending becomes a job.

A series is complete when the first of these holds for its instances that no job owns yet:

- **whole volume**: every one of them is an Enhanced (multi-frame) image, which holds a volume;
- **released**: the association that brought them all was released (not aborted), none has come
  since, and ``grace_s`` has passed. An association that brought a single instance tells nothing:
  some modalities open one association per instance, and their series wait for the quiet period;
- **acquisition whole**: they are as many as their (one) ImagesInAcquisition says, and none has
  come for ``grace_s`` (GE fills it; a 4D series has more instances than that and goes on waiting);
- **quiet**: none has arrived for the quiet period ``quiet_s`` (the fallback for every sender).

Completing a series creates a job (version 1, 2, ... per series) that owns the instances that
arrived since the last version; a job processes every instance of its series up to and including
its own, so instances that arrive after completion make the next version.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import ExpertMask, Instance, Job, JobState, Series, utcnow
from dicom_node.imaging.loading import ENHANCED_MR_SOP_CLASSES
from dicom_node.jobs import queue
from dicom_node.jobs.kinds import JobKind, kind_for_modality

#: SOP classes whose one instance holds a whole volume: the Enhanced MR ones the loader knows, and
#: Enhanced and Legacy Converted Enhanced CT.
WHOLE_VOLUME_SOP_CLASSES = tuple(sorted(ENHANCED_MR_SOP_CLASSES | {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}))


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the node writes UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def completion_reason(pending: Any, now: datetime, quiet_s: float, grace_s: float) -> str | None:
    """Why the pending instances of one series (a row of :func:`_pending_by_series`) are complete, or None."""
    last = _utc(pending.last)
    if pending.single_frame == 0:
        return "series complete: an Enhanced multi-frame image holds the volume"
    settled = now - last >= timedelta(seconds=grace_s)
    released_at = _utc(pending.released_at) if pending.released_at is not None else None
    if (
        released_at is not None
        and released_at >= last
        and (pending.released_instances or 0) >= max(pending.count, 2)
        and now - released_at >= timedelta(seconds=grace_s)
    ):
        return "series complete: the sender released the association that brought it"
    if settled and pending.iia_low is not None and pending.iia_low == pending.iia_high == pending.count:
        return f"series complete: all {pending.count} images of the acquisition arrived"
    if now - last >= timedelta(seconds=quiet_s):
        return "series complete: quiet period passed"
    return None


def _pending_by_series(session: Session) -> list[Any]:
    """Per series with instances that no job owns yet: how many, the newest, their hints."""
    return list(
        session.execute(
            select(
                Instance.series_id,
                func.count().label("count"),
                func.max(Instance.received_at).label("last"),
                func.sum(case((Instance.sop_class_uid.in_(WHOLE_VOLUME_SOP_CLASSES), 0), else_=1)).label("single_frame"),
                func.min(Instance.images_in_acquisition).label("iia_low"),
                func.max(Instance.images_in_acquisition).label("iia_high"),
                Series.released_at,
                Series.released_instances,
            )
            .join(Series, Series.id == Instance.series_id)
            .where(Instance.job_id.is_(None))
            .group_by(Instance.series_id, Series.released_at, Series.released_instances)
        )
    )


def close_complete_series(session: Session, quiet_s: float, grace_s: float = 0.0, now: datetime | None = None) -> list[Job]:
    """Turn every series that is complete (see the module's rules) into a job."""
    now = now or utcnow()
    jobs = []
    for pending in _pending_by_series(session):
        reason = completion_reason(pending, now, quiet_s, grace_s)
        if reason is None:
            continue
        series = session.get(Series, pending.series_id)
        assert series is not None  # the foreign key guarantees it
        job = queue.create_job(session, kind_for_modality(series.modality), series_id=series.id, message=reason)
        # Only what was counted: an instance stored meanwhile goes to the next version.
        session.execute(
            update(Instance)
            .where(Instance.series_id == series.id, Instance.job_id.is_(None), Instance.received_at <= pending.last)
            .values(job_id=job.id)
        )
        count = session.scalar(
            select(func.count()).select_from(Instance).where(Instance.series_id == series.id, Instance.job_id.is_not(None))
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
