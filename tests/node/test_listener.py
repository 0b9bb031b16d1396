"""DCMTK storescu pushes real series to `dicom-node serve` over a loopback socket."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
from sqlalchemy import create_engine, func, select

from dicom_node.db.models import Instance
from dicom_node.uids import short_hash
from tests.conftest import SIEMENS, acknowledged_files, siemens_files, storescu, wait_until
from tests.node.helpers import dataset_bytes, late_copies, stored_path


def _instance_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(Instance))
    finally:
        engine.dispose()


def test_push_series_stores_every_instance_and_makes_versioned_jobs(node_factory, db_url: str, tmp_path: Path) -> None:
    node = node_factory({"DICOM_NODE_DATABASE_URL": db_url, "DICOM_NODE_SERIES_TIMEOUT": "2"}, args=("--no-processing",)).start()
    pushed = storescu(node.port, SIEMENS)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    sources = siemens_files()
    assert sorted(acknowledged_files(pushed.stderr + pushed.stdout)) == sorted(str(p) for p in sources)

    for source in sources:
        stored = stored_path(node.data_dir, source)
        assert stored.exists(), f"{source.name} acknowledged but not on disk"
        assert dataset_bytes(stored) == dataset_bytes(source), f"{source.name} not byte-identical"
    assert _instance_count(db_url) == 192

    jobs = wait_until(lambda: node.jobs(), timeout=30, what="a job for the series")
    assert [(j["version"], j["instances"], j["state"], j["kind"]) for j in jobs] == [(1, 192, "queued", "process_series")]

    # The same instances again: acknowledged, nothing new stored, no new job.
    again = storescu(node.port, sources[:5])
    assert again.returncode == 0 and len(acknowledged_files(again.stderr + again.stdout)) == 5
    late = late_copies(sources[:3], tmp_path / "late")
    pushed_late = storescu(node.port, late)
    assert pushed_late.returncode == 0

    jobs = wait_until(lambda: (j := node.jobs()) and len(j) == 2 and j, timeout=30, what="a second job version")
    assert [(j["version"], j["instances"]) for j in jobs] == [(2, 195), (1, 192)]
    series_uid = str(pydicom.dcmread(sources[0], stop_before_pixels=True).SeriesInstanceUID)
    assert jobs[0]["series"] == jobs[1]["series"] == f"series-{short_hash(series_uid)}"
    # The UIDs can carry dates and site identifiers: the listing names the series by the hash the logs
    # use, and gives the full UIDs only when asked.
    for listing in (node.cli("jobs", "--json"), node.cli("jobs")):
        assert listing.returncode == 0 and series_uid not in listing.stdout, listing.stdout[:500]
    assert f"series-{short_hash(series_uid)}" in node.cli("jobs").stdout
    full = json.loads(node.cli("jobs", "--json", "--uids").stdout)
    assert [j["series_instance_uid"] for j in full] == [series_uid, series_uid]
    assert series_uid in node.cli("jobs", "--uids").stdout
    assert _instance_count(db_url) == 195
    assert node.stop() == 0


def test_echo_and_sigterm_leave_no_partial_files(node_factory) -> None:
    node = node_factory(args=("--no-processing",)).start()
    echo = subprocess.run(["echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port)], capture_output=True, text=True)
    assert echo.returncode == 0, echo.stderr
    assert node.stop() == 0
    leftovers = [p for p in node.data_dir.rglob("*") if p.name.endswith(".part") or p.parent.name == "tmp"]
    assert leftovers == []
