"""How jobs are run in each flow mode (``DICOM_NODE_FLOWS``), set up once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from dicom_node.config import Settings
from dicom_node.jobs.dispatch import Processor, run_job
from dicom_node.runtime.prefect_server import EmbeddedPrefectServer


class StartupError(RuntimeError):
    """The configured mode cannot start; the message says what to set."""


@dataclass
class Processing:
    processor: Processor
    prefect_server: EmbeddedPrefectServer | None = None


def start_processing(settings: Settings) -> Processing:
    """``off``: plain calls; ``distributed``: submit to the work pool of Prefect's configured API;
    ``embedded``: start a Prefect server here and run each job's flow in this process."""
    if settings.flows == "off":
        return Processing(run_job)
    if settings.flows == "distributed":
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise StartupError("DICOM_NODE_FLOWS=distributed needs PREFECT_API_URL (the Prefect server's API)")
        from dicom_node.flows.run import submit_to_pool

        return Processing(submit_to_pool)
    server = EmbeddedPrefectServer(settings.data_dir / "prefect", settings.prefect_port)
    try:
        server.start()
    except Exception as exc:
        raise StartupError(str(exc)) from exc
    from dicom_node.flows.run import in_process

    return Processing(in_process(server.api_url), server)
