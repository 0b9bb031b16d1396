"""Reading what the Prefect API and Orthanc hold, for the end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
from pathlib import Path

from dicom_node.runtime.prefect_server import api_call
from tests.conftest import Orthanc


def flow_run(api_url: str, flow_run_id: str) -> dict:
    return api_call(api_url, f"/flow_runs/{flow_run_id}")


def artifacts_of(api_url: str, flow_run_id: str) -> list[dict]:
    return api_call(api_url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})


def orthanc_series_by_modality(pacs: Orthanc) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for sid in pacs.get("/series"):
        series = pacs.get(f"/series/{sid}")
        study = pacs.get(f"/studies/{series['ParentStudy']}")
        found.setdefault(series["MainDicomTags"].get("Modality", "?"), []).append(
            {"instances": len(series["Instances"]), "study": study["MainDicomTags"]["StudyInstanceUID"]}
        )
    return found


def prefect_get(api_url: str, path: str) -> dict | None:
    try:
        return api_call(api_url, path)
    except urllib.error.HTTPError:  # 404 until it exists
        return None


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000", "--virtual-time-budget=20000",
]


def browse(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """Open ``url`` in Debian's headless Chromium; return the rendered DOM, optionally save a PNG."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("chromium is not installed: run the tests with `make test` (it installs the Debian package)")
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    return subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
