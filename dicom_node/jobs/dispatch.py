"""One registry of job handlers, and the one way a job is run and ended, whatever the mode.

A handler does a kind's work and returns an :class:`Outcome`; :func:`complete` writes the
outcome's own rows (outputs, registry entries) and the job's end in one transaction. The node's
dispatcher, the flows and the CLI all go through :func:`run_job` or :func:`complete`, so a kind is
added by one ``@handler_for`` function, never by another ``if`` chain.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from dicom_node.config import Settings
from dicom_node.db.models import JobState
from dicom_node.db.session import Database
from dicom_node.jobs import queue
from dicom_node.jobs.kinds import JobKind
from dicom_node.jobs.listing import JobInput, load_job_input


@dataclass
class Outcome:
    """How a job ended, and what is written with its end (in the same transaction)."""

    state: JobState = JobState.SUCCEEDED
    message: str | None = None
    stats: dict | None = None
    model_version: str | None = None
    writes: list[Callable[[Session], object]] = field(default_factory=list)


Handler = Callable[[Database, Settings, JobInput], Outcome]
#: Runs one claimed job to its end, or raises: :func:`run_job` here, or a flow (``dicom_node.flows.run``).
Processor = Callable[[Database, Settings, int], None]
_HANDLERS: dict[JobKind, Handler] = {}
# Called after a job of this process ends (the node wakes its exporter: a flow still has its
# dashboard artifacts and Prefect's teardown to do when the outputs are ready to go).
_ENDED: list[Callable[[], None]] = []

# The modules whose @handler_for functions fill the registry; imported on first use, so that
# importing the registry (the CLI, the tracker) does not import torch.
_HANDLER_MODULES = ("dicom_node.series.job", "dicom_node.models.expert_masks", "dicom_node.models.retraining")


def handler_for(kind: JobKind) -> Callable[[Handler], Handler]:
    """Register the function that runs jobs of ``kind``."""

    def register(fn: Handler) -> Handler:
        if kind in _HANDLERS:
            raise ValueError(f"two handlers for job kind {kind.value}")
        _HANDLERS[kind] = fn
        return fn

    return register


def load_handlers() -> None:
    """Import the handler modules (highdicom, pydicom's code tables: half a second, once)."""
    for module in _HANDLER_MODULES:
        importlib.import_module(module)


def handler(kind: JobKind) -> Handler:
    load_handlers()
    try:
        return _HANDLERS[kind]
    except KeyError:
        raise LookupError(f"no handler for job kind {kind.value}") from None


def read_job(db: Database, job_id: int) -> JobInput:
    with db.session() as session:
        return load_job_input(session, job_id)


def when_jobs_end(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` after each job this process ends; returns the function that stops it."""
    _ENDED.append(callback)
    return lambda: _ENDED.remove(callback)


def complete(db: Database, job_id: int, outcome: Outcome) -> None:
    """Write the outcome's rows and end the job, in one transaction."""
    with db.session() as session:
        for write in outcome.writes:
            write(session)
        queue.finish(
            session, job_id, outcome.state, message=outcome.message, stats=outcome.stats, model_version=outcome.model_version
        )
    for callback in list(_ENDED):
        callback()


def run_job(db: Database, settings: Settings, job_id: int) -> None:
    """Run a claimed job here, to its end; an exception leaves the job to :func:`report_failure`."""
    run_read_job(db, settings, read_job(db, job_id))


def run_read_job(db: Database, settings: Settings, job: JobInput) -> None:
    """:func:`run_job` for a job already read."""
    complete(db, job.job_id, handler(job.kind)(db, settings, job))


def report_failure(db: Database, settings: Settings, job_id: int, exc: BaseException | str) -> JobState:
    """Retry the job while attempts remain; a :class:`PermanentJobError` ends it at once."""
    message = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    with db.session() as session:
        return queue.fail_or_retry(
            session, job_id, message, settings.job_max_attempts, permanent=isinstance(exc, queue.PermanentJobError)
        )
