"""The ``process_series`` job: the pipeline over a job's stored instances, outputs recorded for export."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.config import Settings
from dicom_node.db.models import JobState, Output
from dicom_node.db.session import Database
from dicom_node.export.queue import queue_exports
from dicom_node.imaging.loading import SeriesLoadError
from dicom_node.jobs.dispatch import Outcome, handler_for
from dicom_node.jobs.kinds import JobKind
from dicom_node.jobs.listing import JobInput
from dicom_node.jobs.queue import PermanentJobError
from dicom_node.outputs.common import OutputBuildError
from dicom_node.outputs.part10 import OutputFile
from dicom_node.series.pipeline import SeriesResult, StepCall, call_directly, process_series, uid_seed_for
from dicom_node.series.selection import RulesError, load_rules
from dicom_node.uids import redact_uids


def output_dir(settings: Settings, job: JobInput) -> Path:
    return settings.outputs_dir / job.label


def record_outputs(session: Session, job_id: int, files: list[tuple[str, OutputFile]], settings: Settings) -> list[int]:
    """Register output files (kind, file) of a job and queue them for every destination.

    Idempotent: an output whose SOP Instance UID is already recorded is not added twice, so a
    job that is rerun after a crash re-exports the same objects rather than new ones.
    """
    ids = []
    for kind, written in files:
        existing = session.scalar(select(Output).where(Output.sop_instance_uid == written.sop_instance_uid))
        if existing is None:
            existing = Output(
                job_id=job_id,
                kind=kind,
                sop_instance_uid=written.sop_instance_uid,
                series_instance_uid=written.series_instance_uid,
                path=str(written.path),
            )
            session.add(existing)
            session.flush()
        ids.append(existing.id)
    queue_exports(session, ids, list(settings.destinations))
    return ids


def run_series_job(
    db: Database, settings: Settings, job: JobInput, *, with_preview: bool = False, call: StepCall = call_directly
) -> tuple[Outcome, SeriesResult]:
    """Segment the job's series with the production model; the outcome records and queues the outputs."""
    from dicom_node.imaging.segmenter import get_segmenter  # torch loads where it is used
    from dicom_node.models.shipped import production_weights

    segmenter = get_segmenter(production_weights(db, settings), settings.device)
    seed = uid_seed_for(job.series_instance_uid, job.version, segmenter.info.version)
    try:
        result = process_series(
            job.paths, output_dir(settings, job), segmenter, seed, rules=load_rules(settings.series_rules),
            pseudocolor_settings=settings.pseudocolor, multiframe_sc=settings.pseudocolor_sc == "multi-frame",
            with_preview=with_preview, call=call,
        )
    except (SeriesLoadError, OutputBuildError, RulesError) as exc:  # the same files would fail the same way again
        raise PermanentJobError(redact_uids(f"{type(exc).__name__}: {exc}")) from None
    if result.state != "segmented":
        state = JobState.SKIPPED if result.state == "skipped" else JobState.NO_BRAIN
        judged_by = result.model_version if state is JobState.NO_BRAIN else None  # a skipped series met no model
        return Outcome(state=state, message=result.reason, stats=result.stats(), model_version=judged_by), result
    files = [("seg", f) for f in result.seg] + [("sc", f) for f in result.sc]
    outcome = Outcome(
        message=result.reason,
        stats=result.stats(),
        model_version=result.model_version,
        writes=[lambda session: record_outputs(session, job.job_id, files, settings)],
    )
    return outcome, result


@handler_for(JobKind.PROCESS_SERIES)
def process_series_job(db: Database, settings: Settings, job: JobInput) -> Outcome:
    return run_series_job(db, settings, job)[0]
