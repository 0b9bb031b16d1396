"""Register the ``process-series`` deployment on a process work pool (distributed mode)."""

from __future__ import annotations

from pathlib import Path

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from flows.submit import DEPLOYMENT_NAME

REPO = Path(__file__).resolve().parents[1]


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


ENTRYPOINTS = ("flows/process_series.py:process_series", "flows/retrain.py:retrain")


def deploy(work_pool: str) -> list[str]:
    """Create or update both deployments; workers load the flows from this checkout's path."""
    ensure_work_pool(work_pool)
    ids = []
    for entrypoint in ENTRYPOINTS:
        flow = Flow.from_source(source=str(REPO), entrypoint=entrypoint)
        ids.append(str(flow.deploy(name=DEPLOYMENT_NAME, work_pool_name=work_pool, print_next_steps=False, build=False, push=False)))
    return ids
