"""The ``process-series`` flow: one job's series to SEG + SC, each pipeline step a task."""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import cv2
import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dicom_node.config import Settings
from dicom_node.flows.context import job_crashed, job_run
from dicom_node.jobs.dispatch import complete
from dicom_node.series.job import run_series_job
from dicom_node.uids import redact_exception

T = TypeVar("T")


def as_task(name: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one pipeline step as a Prefect task named for it (no caching: jobs are not repeats).

    A failure's message loses its UIDs before Prefect stores it as the task run's state message.
    """

    @functools.wraps(fn)
    def step(*step_args: Any) -> T:
        try:
            return fn(*step_args)
        except Exception as exc:
            raise redact_exception(exc) from None

    return task(name=name, cache_policy=NO_CACHE)(step)(*args)


def _preview_markdown(image: np.ndarray | None) -> str:
    """The preview montage inline as a PNG data URI (the dashboard shows it; no file server needed)."""
    ok, png = cv2.imencode(".png", image[:, :, ::-1]) if image is not None else (False, None)
    if not ok or png is None:
        return "(preview could not be encoded)"
    return f"![preview](data:image/png;base64,{base64.b64encode(png.tobytes()).decode()})"


@flow(name="process-series", flow_run_name="{name}", on_crashed=[job_crashed])
def process_series(job_id: int, name: str = "process-series", settings: Settings | None = None, attempt: int | None = None) -> dict:
    """Segment one job's series, write SEG + SC, record them for export and end the job."""
    with job_run(job_id, settings, attempt) as (db, run_settings, job):
        outcome, result = run_series_job(db, run_settings, job, with_preview=True, call=as_task)
        complete(db, job_id, outcome)
    stats = result.stats()
    create_table_artifact(
        key=job.series_label,
        table=[{"metric": k, "value": str(v)} for k, v in {**stats, "job": job_id, "version": job.version}.items()],
        description="Series numbers (no patient data)",
    )
    create_markdown_artifact(markdown=_preview_markdown(result.preview), description="Pseudocolor and mask overlay")
    get_run_logger().info("job %d done: %d slices, brain %.1f ml", job_id, result.n_slices, result.brain_volume_ml or 0.0)
    return stats
