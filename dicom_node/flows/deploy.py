"""Register the flows as deployments on a process work pool (distributed mode)."""

from __future__ import annotations

from pathlib import Path

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from dicom_node.flows.run import DEPLOYMENT_NAME, FLOWS

FLOWS_DIR = Path(__file__).resolve().parent  # wherever the package is installed; workers run the same install


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(work_pool: str) -> list[str]:
    """Create or update one deployment per flow; workers load the flows from this installed package."""
    ensure_work_pool(work_pool)
    ids = []
    for flow in FLOWS.values():
        module = Path(flow.fn.__code__.co_filename).name
        source = Flow.from_source(source=str(FLOWS_DIR), entrypoint=f"{module}:{flow.fn.__name__}")
        assert isinstance(source, Flow)  # sync here: no event loop runs
        ids.append(str(source.deploy(name=DEPLOYMENT_NAME, work_pool_name=work_pool, print_next_steps=False, build=False, push=False)))
    return ids
