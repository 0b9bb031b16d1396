"""The ``retrain`` flow: one retraining round, with its training curve and comparison as artifacts."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dicom_node.config import Settings, load_settings
from dicom_node.db.session import Database
from dicom_node.retraining import RoundResult, run_round
from flows.process_series import _job_failed, database_for


@task(name="fine-tune-and-compare", cache_policy=NO_CACHE)
def fine_tune_and_compare(db: Database, settings: Settings, job_id: int) -> RoundResult:
    return run_round(db, settings, job_id, log_line=get_run_logger().info)


def _curve_markdown(result: RoundResult) -> str:
    from dicom_node.training.curves import plot_history

    with tempfile.TemporaryDirectory() as folder:
        png = plot_history(result.history, Path(folder) / "curve.png", title=f"fine-tuning {result.version}")
        data = base64.b64encode(png.read_bytes()).decode()
    return f"![training curve](data:image/png;base64,{data})"


@flow(name="retrain", flow_run_name="{name}", on_failure=[_job_failed], on_crashed=[_job_failed])
def retrain(job_id: int, name: str = "retrain") -> dict:
    """Fine-tune production on all expert masks; promote the candidate only if it is not worse."""
    settings = load_settings()
    result = fine_tune_and_compare(database_for(settings.resolved_database_url), settings, job_id)
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
