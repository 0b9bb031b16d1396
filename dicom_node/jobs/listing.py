"""Reading jobs: what a job works on, and what ``dicom-node jobs`` shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_node.db.models import Instance, Job, JobEvent, JobState, Series, Study
from dicom_node.jobs.kinds import JobKind
from dicom_node.uids import short_hash


@dataclass(frozen=True)
class JobInput:
    """What a handler needs to know about its job; ``label`` names it without patient data."""

    job_id: int
    kind: JobKind
    version: int
    attempt: int
    series_instance_uid: str  # "" for a retraining round
    paths: list[Path]

    @property
    def series_label(self) -> str:
        """``series-<hash of the Series UID>``, or ``retrain`` for a retraining round."""
        return f"series-{short_hash(self.series_instance_uid)}" if self.series_instance_uid else "retrain"

    @property
    def label(self) -> str:
        """Names the job's flow run and output folder: ``series-<hash>-v<version>`` or ``retrain-r<round>``."""
        return f"{self.series_label}-v{self.version}" if self.series_instance_uid else f"retrain-r{self.version}"


def job_instance_paths(session: Session, job: Job) -> list[Path]:
    """Every stored instance of the job's series up to this job's version."""
    return [
        Path(p)
        for p in session.scalars(
            select(Instance.path)
            .where(Instance.series_id == job.series_id, Instance.job_id.is_not(None), Instance.job_id <= job.id)
            .order_by(Instance.id)
        )
    ]


def load_job_input(session: Session, job_id: int) -> JobInput:
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    kind = JobKind(job.kind)
    if job.series_id is None:  # a retraining round
        return JobInput(job.id, kind, job.version, job.attempts, "", [])
    series_uid = session.scalar(select(Series.series_instance_uid).where(Series.id == job.series_id))
    return JobInput(job.id, kind, job.version, job.attempts, str(series_uid), job_instance_paths(session, job))


@dataclass(frozen=True)
class JobRow:
    """What ``dicom-node jobs`` shows: never patient data. ``series`` and ``study`` are the short
    hashes the node's logs and flow-run names use; the CLI shows the full UIDs only when asked."""

    id: int
    series: str | None  # series-<hash of the Series UID>; None for a retrain round
    study: str | None  # study-<hash of the Study UID>
    series_instance_uid: str | None
    study_instance_uid: str | None
    version: int
    kind: str
    state: str
    attempts: int
    instances: int
    model_version: str | None
    error: str | None
    reason: str | None  # why it ended as it did (the last event's message): the rule, the gate's check, the error
    created_at: str
    started_at: str | None
    finished_at: str | None
    flow_run_id: str | None


def list_jobs(session: Session, limit: int = 100, state: str | None = None) -> list[JobRow]:
    """The newest ``limit`` jobs (in ``state``), each with the reason it ended as it did."""
    query = (
        select(Job, Series.series_instance_uid, Study.study_instance_uid)
        .outerjoin(Series, Job.series_id == Series.id)
        .outerjoin(Study, Series.study_id == Study.id)
        .order_by(Job.id.desc())
        .limit(limit)
    )
    if state:
        query = query.where(Job.state == JobState(state))
    rows = session.execute(query).all()
    last_event = (
        select(JobEvent.job_id, func.max(JobEvent.id).label("last")).where(JobEvent.job_id.in_([job.id for job, _, _ in rows])).group_by(JobEvent.job_id)
    ).subquery()
    ends = session.execute(select(JobEvent.job_id, JobEvent.message).join(last_event, JobEvent.id == last_event.c.last)).all()
    reasons = {job_id: message for job_id, message in ends}
    return [
        JobRow(
            id=job.id,
            series=f"series-{short_hash(series_uid)}" if series_uid else None,
            study=f"study-{short_hash(study_uid)}" if study_uid else None,
            series_instance_uid=series_uid,
            study_instance_uid=study_uid,
            version=job.version,
            kind=job.kind,
            state=job.state.value,
            attempts=job.attempts,
            instances=job.instance_count,
            model_version=job.model_version,
            error=job.error,
            reason=reasons.get(job.id),
            created_at=job.created_at.isoformat(),
            started_at=job.started_at.isoformat() if job.started_at else None,
            finished_at=job.finished_at.isoformat() if job.finished_at else None,
            flow_run_id=job.flow_run_id,
        )
        for job, series_uid, study_uid in rows
    ]
