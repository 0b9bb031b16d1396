"""The ``process-series`` flow: one job, from stored instances to SEG and SC at the PACS.

Thin on purpose: every task calls library code in ``dicom_node``. It runs the same in the node's
own process (embedded mode) and on a worker elsewhere (distributed mode): both read the job from
the node's database and the instances from the shared data folder.
"""

from __future__ import annotations

import base64
import platform
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from prefect import flow, get_run_logger, runtime, tags, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dicom_node.config import Settings, load_settings
from dicom_node.db.models import JobState
from dicom_node.db.session import Database
from dicom_node.export import export_due, pending_count
from dicom_node.imaging.loading import MRSeries, load_series
from dicom_node.imaging.preview import preview_image
from dicom_node.imaging.pseudocolor import PseudocolorSettings, pseudocolor
from dicom_node.imaging.segmenter import BrainMask, Segmenter, get_segmenter
from dicom_node.jobs import KIND_PROCESS, KIND_RETRAIN, fail_or_retry, finish_job
from dicom_node.outputs.common import Equipment
from dicom_node.outputs.sc import build_sc_series
from dicom_node.outputs.seg import build_segs
from dicom_node.outputs.part10 import write_datasets
from dicom_node.pipeline import uid_seed_for
from dicom_node.processing import JobInput, load_job_input, output_dir, process_job, production_weights, record_outputs
from dicom_node.uids import short_hash


def run_name(series_instance_uid: str, version: int) -> str:
    """Flow-run name: a short hash of the series UID, never patient data."""
    return f"series-{short_hash(series_instance_uid)}-v{version}"


@task(name="load", cache_policy=NO_CACHE)
def load(paths: list[Path]) -> MRSeries:
    return load_series(paths)


@task(name="segment", cache_policy=NO_CACHE)
def segment(series: MRSeries, segmenter: Segmenter) -> BrainMask:
    return segmenter.segment(series)


@task(name="pseudocolor", cache_policy=NO_CACHE)
def colorize(series: MRSeries, brain: BrainMask) -> np.ndarray:
    return pseudocolor(series.pixels, brain.mask, PseudocolorSettings())


@task(name="build-seg", cache_policy=NO_CACHE)
def build_seg(series: MRSeries, brain: BrainMask, segmenter: Segmenter, seed: str, out: Path) -> list[Path]:
    made_by = Equipment.for_model(segmenter.info, device_serial_number=platform.node()[:64] or "unknown")
    return write_datasets(build_segs(series, brain.mask, segmenter.info, made_by, seed), out / "seg")


@task(name="build-sc", cache_policy=NO_CACHE)
def build_sc(series: MRSeries, rgb: np.ndarray, segmenter: Segmenter, seed: str, out: Path) -> list[Path]:
    made_by = Equipment.for_model(segmenter.info, device_serial_number=platform.node()[:64] or "unknown")
    return write_datasets(build_sc_series(series, rgb, made_by, seed, PseudocolorSettings()), out / "sc")


@task(name="record", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15])
def record(db: Database, settings: Settings, job: JobInput, seg: list[Path], sc: list[Path], stats: dict, model_version: str) -> None:
    """Outputs and their pending exports, and the job's end, in one transaction (database retries)."""
    with db.session() as session:
        record_outputs(session, job.job_id, [("seg", p) for p in seg] + [("sc", p) for p in sc], settings)
        finish_job(session, job.job_id, JobState.SUCCEEDED, stats=stats, model_version=model_version)


@task(name="export", cache_policy=NO_CACHE, retries=4, retry_delay_seconds=[2, 5, 15, 30])
def export(db: Database, settings: Settings, job_id: int) -> dict[str, int]:
    """Send this job's outputs now; the node's export loop keeps trying after the task gives up."""
    counts = export_due(db, settings, job_id=job_id, ignore_schedule=True)
    if pending_count(db, job_id):
        raise RuntimeError(f"{pending_count(db, job_id)} output(s) not yet accepted by the PACS")
    return counts


def _preview_markdown(series: MRSeries, brain: BrainMask, rgb: np.ndarray) -> str:
    """The preview montage inline as a PNG data URI (the dashboard shows it; no file server needed)."""
    image = preview_image(series.pixels, brain.mask, rgb)
    ok, png = cv2.imencode(".png", image[:, :, ::-1])
    if not ok:
        return "(preview could not be encoded)"
    return f"![preview](data:image/png;base64,{base64.b64encode(png.tobytes()).decode()})"


def _job_failed(flow, flow_run, state) -> None:  # type: ignore[no-untyped-def]
    """Failure or crash of a run (here or on a worker): retry the job while attempts remain."""
    settings = load_settings()
    job_id = int(flow_run.parameters["job_id"])
    with database_for(settings.resolved_database_url).session() as session:
        fail_or_retry(session, job_id, f"flow run {flow_run.name} ended {state.type.value}: {state.message or ''}".strip(), settings.job_max_attempts)


@flow(name="process-series", flow_run_name="{name}", log_prints=False, on_failure=[_job_failed], on_crashed=[_job_failed])
def process_series(job_id: int, name: str = "process-series") -> dict:
    """Segment one job's series, write SEG + SC, record them and export them."""
    settings = load_settings()
    db = database_for(settings.resolved_database_url)
    job = load_job_input(db, job_id)
    with db.session() as session:
        from dicom_node.db.models import Job

        row = session.get(Job, job_id)
        if row is not None and runtime.flow_run.id:
            row.flow_run_id = str(runtime.flow_run.id)
    segmenter = get_segmenter(production_weights(db, settings), settings.device)
    seed = uid_seed_for(job.series_instance_uid, job.version, segmenter.info.version)
    out = output_dir(settings, job)

    series = load(job.paths)
    brain = segment(series, segmenter)
    rgb = colorize(series, brain)
    seg = build_seg(series, brain, segmenter, seed, out)
    sc = build_sc(series, rgb, segmenter, seed, out)
    stats = {
        "slices": series.n_slices,
        "brain_volume_ml": brain.volume_ml,
        "segment_seconds": round(brain.seconds, 3),
        "model": f"{segmenter.info.name} {segmenter.info.version}",
        "notes": [*series.notes, *brain.notes],
    }
    record(db, settings, job, seg, sc, stats, segmenter.info.version)
    exported = export(db, settings, job_id, return_state=True) if settings.destinations else None

    create_table_artifact(
        key=f"series-{short_hash(job.series_instance_uid)}",
        table=[{"metric": k, "value": str(v)} for k, v in {**stats, "job": job_id, "version": job.version,
               "exported": "yes" if exported is None or exported.is_completed() else "pending (node retries)"}.items()],
        description="Series numbers (no patient data)",
    )
    create_markdown_artifact(markdown=_preview_markdown(series, brain, rgb), description="Pseudocolor and mask overlay")
    get_run_logger().info("job %d done: %d slices, brain %.1f ml", job_id, series.n_slices, brain.volume_ml or 0.0)
    return stats


@lru_cache(maxsize=4)
def database_for(url: str) -> Database:
    """One engine per database URL per process (flows run many times in one worker)."""
    return Database(url)


def run_in_process(db: Database, settings: Settings, job_id: int) -> None:
    """The node's processor in embedded mode: run the job's flow here, named without patient data."""
    job = load_job_input(db, job_id)
    if job.kind == KIND_RETRAIN:
        from flows.retrain import retrain

        with tags("dicom-node", "retrain"):
            retrain(job_id=job_id, name=job.label)
    elif job.kind == KIND_PROCESS:
        with tags("dicom-node", f"series-{short_hash(job.series_instance_uid)}"):
            process_series(job_id=job_id, name=run_name(job.series_instance_uid, job.version))
    else:  # bookkeeping (expert-mask registration): quick, no flow run needed
        process_job(db, settings, job_id)
