"""Migrations, series completion and the job queue on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import inspect, select

from dicom_node.db.migrate import current_revision
from dicom_node.db.models import Instance, Job, JobEvent, JobState, utcnow
from dicom_node.db.session import Database
from dicom_node.jobs.queue import claim_next, fail_or_retry, requeue_interrupted, take_lease
from dicom_node.jobs.tracker import close_complete_series
from dicom_node.receive.ingest import Header, insert_instance, series_id_for


def _add(db: Database, sop: str, series: str = "1.2.3.4", modality: str = "MR", age_s: float = 60) -> None:
    header = Header("1.2.840.10008.5.1.4.1.1.4", sop, "1.2.3", series, modality, "1.2.840.10008.1.2.1")
    with db.session() as session:
        assert insert_instance(session, header, series_id_for(session, header), Path(f"/x/{sop}.dcm"), 10, "SCANNER")
        session.execute(Instance.__table__.update().where(Instance.sop_instance_uid == sop).values(received_at=utcnow() - timedelta(seconds=age_s)))


def test_migrations_create_every_table(migrated_db: Database) -> None:
    tables = set(inspect(migrated_db.engine).get_table_names())
    assert {"studies", "series", "instances", "jobs", "job_events", "outputs", "exports", "model_versions", "expert_masks"} <= tables
    assert current_revision(migrated_db.url) is not None


def test_quiet_series_become_versioned_jobs(migrated_db: Database) -> None:
    db = migrated_db
    _add(db, "1.1")
    _add(db, "1.2")
    _add(db, "2.1", series="1.2.3.5", age_s=0)  # still arriving
    _add(db, "3.1", series="1.2.3.6", modality="SR")
    with db.session() as session:
        jobs = close_complete_series(session, quiet_s=10)
        # every series goes to the selection rules (which skip an SR); SEG series would be expert masks
        assert sorted((j.kind, j.version, j.instance_count) for j in jobs) == [("process_series", 1, 1), ("process_series", 1, 2)]
        assert close_complete_series(session, quiet_s=10) == []
    _add(db, "1.3")  # a late instance of the first series
    with db.session() as session:
        (late,) = close_complete_series(session, quiet_s=10)
        assert (late.version, late.instance_count) == (2, 3)


def test_claims_never_hand_one_job_to_two_dispatchers_and_retries_are_bounded(migrated_db: Database) -> None:
    db = migrated_db
    for i in range(3):
        _add(db, f"5.{i}", series=f"1.2.9.{i}")
    with db.session() as session:
        close_complete_series(session, quiet_s=10)
    with db.session() as a, db.session() as b:
        first, second = claim_next(a, "node-a"), None
        a.commit()
        second = claim_next(b, "node-b")
    assert first is not None and second is not None and first.id != second.id
    with db.session() as session:
        assert requeue_interrupted(session, 3, "node-a") == 1
    with db.session() as session:
        job = claim_next(session, "node-c")
        assert job is not None and job.id == first.id and job.attempts == 2
        assert fail_or_retry(session, job.id, "boom", max_attempts=2) is JobState.FAILED
        events = [e.state for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id))]
        assert events == ["queued", "running", "queued", "running", "failed"]
        assert session.get(Job, job.id).error == "boom"


def test_a_job_that_keeps_killing_the_node_fails_at_the_attempt_limit(migrated_db: Database) -> None:
    """Each restart reclaims the interrupted job; once its attempts are spent it fails instead."""
    db = migrated_db
    _add(db, "6.1", series="1.2.10.1")
    with db.session() as session:
        (job,) = close_complete_series(session, quiet_s=10)
    for restart in range(1, 4):
        with db.session() as session:
            assert claim_next(session, f"node:{restart}") is not None
        with db.session() as session:  # the node died mid-job; its successor starts
            assert requeue_interrupted(session, 3, "node:") == 1
    with db.session() as session:
        row = session.get(Job, job.id)
        assert (row.state, row.attempts) == (JobState.FAILED, 3)
        assert "interrupted 3 times" in row.error
        assert claim_next(session, "node:4") is None


def test_a_restart_before_the_worker_takes_the_lease_runs_the_job_once(migrated_db: Database) -> None:
    """A node submits attempt 1 to a worker and restarts before that run starts: the restart
    requeues the job, and the late run of attempt 1 finds it gone and must not run it."""
    db = migrated_db
    _add(db, "8.1", series="1.2.12.1")
    with db.session() as session:
        (job,) = close_complete_series(session, quiet_s=10)
        assert claim_next(session, "node:a") is not None
    with db.session() as session:  # the restart: the lease is still the node's
        assert requeue_interrupted(session, 3, "node:") == 1
    with db.session() as session:
        assert take_lease(session, job.id, 1, "flow-run:late") is False
        assert claim_next(session, "node:b") is not None
    with db.session() as session:
        assert take_lease(session, job.id, 1, "flow-run:late") is False  # attempt 2 is running now
        assert take_lease(session, job.id, 2, "flow-run:second") is True
    with db.session() as session:  # and once a worker's run holds it, a restart leaves it alone
        assert requeue_interrupted(session, 3, "node:") == 0
        row = session.get(Job, job.id)
        assert (row.state, row.attempts, row.lease_owner) == (JobState.RUNNING, 2, "flow-run:second")


def test_a_permanent_failure_ends_the_job_at_once_and_uids_stay_out_of_errors(migrated_db: Database) -> None:
    db = migrated_db
    _add(db, "7.1", series="1.2.11.1")
    with db.session() as session:
        close_complete_series(session, quiet_s=10)
        job = claim_next(session, "node:x")
        assert job is not None
        message = "SeriesLoadError: /data/incoming/1.2.826.0.1.3680043.2.1/1.2.826.0.1.3680043.9.7.dcm mixes orientations"
        assert fail_or_retry(session, job.id, message, max_attempts=3, permanent=True) is JobState.FAILED
        error = session.get(Job, job.id).error
    assert job.attempts == 1 and "1.2.826.0.1.3680043" not in error and "mixes orientations" in error
