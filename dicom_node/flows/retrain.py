"""The ``retrain`` flow: one retraining round, with its training curve and comparison as artifacts."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dicom_node.config import Settings
from dicom_node.flows.context import job_crashed, job_run
from dicom_node.jobs.dispatch import complete
from dicom_node.models.retraining import RoundResult, round_outcome, run_round


def _curve_markdown(result: RoundResult) -> str:
    from dicom_node.training.curves import plot_history

    with tempfile.TemporaryDirectory() as folder:
        png = plot_history(result.history, Path(folder) / "curve.png", title=f"fine-tuning {result.version}")
        data = base64.b64encode(png.read_bytes()).decode()
    return f"![training curve](data:image/png;base64,{data})"


@flow(name="retrain", flow_run_name="{name}", on_crashed=[job_crashed])
def retrain(job_id: int, name: str = "retrain", settings: Settings | None = None, attempt: int | None = None) -> dict:
    """Fine-tune production on all expert masks; promote the candidate only if it is not worse."""
    with job_run(job_id, settings, attempt) as (db, run_settings, job):
        fine_tune = task(name="fine-tune-and-compare", cache_policy=NO_CACHE)(run_round)
        result = fine_tune(db, run_settings, job.version, log_line=get_run_logger().info)
        complete(db, job_id, round_outcome(result))
    keys = ["dice", "iou", "precision", "recall", "ap"]
    create_table_artifact(
        key="retrain-comparison",
        table=[
            {"model": f"{result.version} (candidate)", **{k: round(float(result.candidate.get(k, float("nan"))), 4) for k in keys}},
            {"model": f"{result.parent} (production)", **{k: round(float(result.production.get(k, float("nan"))), 4) for k in keys}},
        ],
        description=f"Scored on {result.evaluated_on}; decision: {result.status}",
    )
    if result.history:
        create_markdown_artifact(markdown=_curve_markdown(result), description="Training curve (loss and Dice per epoch)")
    return {"version": result.version, "status": result.status, "dice": result.candidate.get("dice")}
