"""Run one claimed job: segment the series, keep the outputs, queue their export, close the job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_node.config import Settings
from dicom_node.db.models import Job, JobState, ModelVersion, Output, Series
from dicom_node.db.session import Database
from dicom_node.export import queue_exports
from dicom_node.expert_masks import register_expert_masks
from dicom_node.jobs import KIND_EXPERT_MASK, KIND_PROCESS, KIND_RETRAIN, finish_job, job_instance_paths
from dicom_node.uids import short_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobInput:
    job_id: int
    kind: str
    version: int
    series_instance_uid: str
    paths: list[Path]

    @property
    def label(self) -> str:
        if not self.series_instance_uid:
            return f"retrain-r{self.version}"
        return f"series-{short_hash(self.series_instance_uid)}-v{self.version}"


def load_job_input(db: Database, job_id: int) -> JobInput:
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        if job.series_id is None:  # a retrain round
            return JobInput(job.id, job.kind, job.version, "", [])
        series_uid = session.scalar(select(Series.series_instance_uid).where(Series.id == job.series_id))
        return JobInput(job.id, job.kind, job.version, str(series_uid), [Path(p) for p in job_instance_paths(session, job)])


def output_dir(settings: Settings, job: JobInput) -> Path:
    return settings.outputs_dir / job.label


def record_outputs(session: Session, job_id: int, files: list[tuple[str, Path]], settings: Settings) -> list[int]:
    """Register output files (kind, path) of a job and queue them for every destination.

    Idempotent: an output whose SOP Instance UID is already recorded is not added twice, so a
    job that is rerun after a crash re-exports the same objects rather than new ones.
    """
    ids = []
    for kind, path in files:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID", "SeriesInstanceUID"])
        sop_uid = str(ds.SOPInstanceUID)
        existing = session.scalar(select(Output).where(Output.sop_instance_uid == sop_uid))
        if existing is None:
            existing = Output(job_id=job_id, kind=kind, sop_instance_uid=sop_uid, series_instance_uid=str(ds.SeriesInstanceUID), path=str(path))
            session.add(existing)
            session.flush()
        ids.append(existing.id)
    queue_exports(session, ids, list(settings.destinations))
    return ids


def production_weights(db: Database, settings: Settings) -> Path:
    """The weights new jobs use: the registry's production version.

    An empty registry is bootstrapped with the configured weights (``DICOM_NODE_MODEL_WEIGHTS`` or
    the shipped model), which are loaded first so a missing or corrupt file fails here, clearly.
    """
    from dicom_node.registry import production

    with db.session() as session:
        row = production(session)
        if row is None:
            row = _adopt_configured(session, settings)
        return Path(row.weights_path)


def check_model(db: Database, settings: Settings) -> str:
    """At start-up: register a new shipped model version (an upgrade may bring one), then load the
    production model, so a missing or corrupt weights file stops start-up clearly."""
    from dicom_node.imaging.segmenter import get_segmenter
    from dicom_node.registry import production
    from models import resolve_weights_path

    with db.session() as session:
        if production(session) is None or resolve_weights_path().is_file():
            _adopt_configured(session, settings)
    info = get_segmenter(production_weights(db, settings), settings.device).info
    return f"{info.name} {info.version}"


def _adopt_configured(session: Session, settings: Settings) -> ModelVersion:
    from dicom_node.imaging.network import load_weights
    from dicom_node.registry import adopt_shipped
    from models import resolve_weights_path

    path = resolve_weights_path()
    _, info = load_weights(path, "cpu")
    return adopt_shipped(session, path, info.version, settings.models_dir)


def process_job(db: Database, settings: Settings, job_id: int) -> None:
    """The default processor: segment, write SEG and SC, record them, queue their export."""
    job = load_job_input(db, job_id)
    if job.kind == KIND_EXPERT_MASK:
        with db.session() as session:
            series_id = session.get(Job, job_id).series_id  # type: ignore[union-attr]
            count = register_expert_masks(session, series_id)
            finish_job(session, job_id, JobState.SUCCEEDED, message=f"{count} expert mask(s) registered")
        return
    if job.kind == KIND_RETRAIN:
        from dicom_node.retraining import run_round

        run_round(db, settings, job_id)
        return
    if job.kind != KIND_PROCESS:
        with db.session() as session:
            finish_job(session, job_id, JobState.SUCCEEDED, message=f"{job.kind}: nothing to process")
        return
    from dicom_node.imaging.segmenter import get_segmenter  # torch is imported only where it is used
    from dicom_node.pipeline import process_series, uid_seed_for

    segmenter = get_segmenter(production_weights(db, settings), settings.device)
    seed = uid_seed_for(job.series_instance_uid, job.version, segmenter.info.version)
    result = process_series(job.paths, output_dir(settings, job), segmenter, seed)
    files = [("seg", p) for p in result.seg_paths] + [("sc", p) for p in result.sc_paths]
    with db.session() as session:
        record_outputs(session, job_id, files, settings)
        finish_job(session, job_id, JobState.SUCCEEDED, stats=job_stats(result), model_version=result.model_version)
    log.info("job %d (%s) succeeded", job_id, job.label)


def job_stats(result) -> dict:  # type: ignore[no-untyped-def]
    """The numbers kept on the job row and shown to operators: no patient data."""
    return {
        "slices": result.n_slices,
        "brain_volume_ml": result.brain_volume_ml,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "model": f"{result.model_name} {result.model_version}",
        "notes": result.notes,
    }
