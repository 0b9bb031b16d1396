"""End-to-end latency: the last instance sent to the PACS (Orthanc) holding the SEG and every SC.

One push of the 192-slice Siemens series by DCMTK storescu, in one association, to a `dicom-node
serve` in service (it has just processed another series, the Philips one) with its default settings (embedded Prefect, the shipped model or, if none exists yet,
random weights of the default architecture) exporting to an Orthanc started here. Nothing is
subtracted: series completion is part of the wait. The breakdown comes from the node's job row:

- completion: storescu returned (last instance acknowledged, association released) -> job queued;
- queue: job queued -> job started; processing: started -> finished (outputs written, recorded);
- export: job finished -> Orthanc holds the SEG and every SC.

The same again with ``DICOM_NODE_PSEUDOCOLOR_SC=multi-frame``, and as the first series of a node
just started (``e2e_first_series_*``: the imports and Prefect's first flow run of the process). The floor: Orthanc's own ingest of
the node's output files pushed by storescu to a fresh Orthanc, over one association and over four
(what the node's exporter opens by default). Runnable alone: ``python -m bench.e2e`` (prints JSON).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DICOM_NODE_SHARED_DATA", REPO.parent / "shared" / "data")) / "dicom"
SERIES = DATA / "sag-t1-siemens-skyra"
WARM_UP = DATA / "sag-t1-philips-ingenia"  # sent first: the node is measured in service, not just started
METRICS = {
    "e2e_latency_s": ("<= 8", "last instance sent -> Orthanc holds SEG + every SC, completion included, defaults"),
    "e2e_multiframe_latency_s": ("", "the same with DICOM_NODE_PSEUDOCOLOR_SC=multi-frame"),
    "e2e_first_series_latency_s": ("", "the same, as the first series after the node started (imports, first flow run)"),
    "e2e_orthanc_floor_s": ("", "Orthanc ingest of the same SEG + SC pushed by storescu, 1 association"),
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Orthanc:
    """A fresh Orthanc 1.10 with its default SQLite index, in ``root``."""

    def __init__(self, root: Path) -> None:
        self.dicom_port, self.http_port = _port(), _port()
        root.mkdir(parents=True)
        config = root / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "bench", "StorageDirectory": str(root), "IndexDirectory": str(root),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "Plugins": [],
        }))
        self.proc = subprocess.Popen(["Orthanc", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: _listening(self.dicom_port) and _listening(self.http_port), 120, "Orthanc listening")

    def counts(self) -> tuple[int, int]:
        """(SEG instances, other instances) Orthanc holds."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/statistics", timeout=5) as rsp:
            total = json.loads(rsp.read())["CountInstances"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/tools/find",
            data=json.dumps({"Level": "Instance", "Query": {"Modality": "SEG"}}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as rsp:
            seg = len(json.loads(rsp.read()))
        return seg, total - seg

    def total(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/statistics", timeout=5) as rsp:
            return int(json.loads(rsp.read())["CountInstances"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _weights(work: Path) -> tuple[Path, str]:
    from dicom_node.models.shipped import default_weights_path

    shipped = default_weights_path()
    if shipped.exists():
        return shipped, "shipped model"
    from dicom_node.imaging.model_info import ArchSpec
    from dicom_node.imaging.network import build_network, save_weights

    arch = ArchSpec()
    return save_weights(work / "random.pt", build_network(arch), arch, name="random", version="bench"), "random weights"


def _utc(text: str) -> float:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _job_times(database: Path) -> tuple[float, float, float, dict[str, float]]:
    """(queued, started, finished) of the series' job, as epoch seconds, and its pipeline steps' seconds."""
    with sqlite3.connect(database) as conn:
        created, started, finished, stats = conn.execute(
            "SELECT created_at, started_at, finished_at, stats FROM jobs WHERE kind = 'process_series' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return _utc(created), _utc(started), _utc(finished), json.loads(stats)["seconds"]


def _storescu(port: int, files: list[str], aec: str = "DICOMNODE") -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-R", "-aec", aec, "127.0.0.1", str(port), *files],
                          env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True)


def _jobs_done(database: Path, count: int) -> bool:
    with sqlite3.connect(database) as conn:
        ended = conn.execute(
            "SELECT count(*) FROM jobs WHERE kind = 'process_series' AND state NOT IN ('queued', 'running')"
        ).fetchone()[0]
    return ended >= count


def one_push(
    work: Path, weights: Path, pushes: list[list[str]], extra_env: dict[str, str], prefix: str
) -> tuple[dict[str, float | str], list[str]]:
    """Push each series in turn (waiting until the PACS holds its outputs) to a node that exports
    to a fresh Orthanc; the wait and its parts for the last one, and the node's output files."""
    orthanc = Orthanc(work / "orthanc")
    node_port = _port()
    env = {**os.environ, "DICOM_NODE_DATA_DIR": str(work / "var"), "DICOM_NODE_PORT": str(node_port),
           "DICOM_NODE_HOST": "127.0.0.1", "DICOM_NODE_PREFECT_PORT": str(_port()),
           "DICOM_NODE_DESTINATIONS": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "DICOM_NODE_MODEL_WEIGHTS": str(weights),
           "DICOM_NODE_MIN_FREE_BYTES": "0", **extra_env}
    node_log = open(work / "node.log", "ab")
    node = subprocess.Popen([str(Path(sys.executable).parent / "dicom-node"), "serve"], env=env, stdout=node_log, stderr=subprocess.STDOUT)
    database, outputs_dir = work / "var" / "dicom-node.db", work / "var" / "outputs"
    try:
        _wait(lambda: _listening(node_port), 300, "node listening")
        for number, files in enumerate(pushes, start=1):
            before = set(outputs_dir.rglob("*.dcm")) if outputs_dir.exists() else set()
            push = _storescu(node_port, files)
            sent = time.time()
            if push.returncode != 0:
                return {f"{prefix}latency_s": f"storescu failed: {push.stderr[-200:]!r}"}, []
            _wait(lambda n=number: _jobs_done(database, n), 900, "the series' job ended")
            expected = len(list(outputs_dir.rglob("*.dcm")))
            _wait(lambda n=expected: orthanc.total() == n, 900, "every output at the PACS")
            held = time.time()
        new = sorted(str(p) for p in set(outputs_dir.rglob("*.dcm")) - before)
        queued, started, finished, steps = _job_times(database)
        print(f"[bench.e2e] {prefix}steps: {steps}", file=sys.stderr)
        return {
            f"{prefix}latency_s": round(held - sent, 2),
            f"{prefix}completion_s": round(queued - sent, 2),
            f"{prefix}queue_s": round(started - queued, 2),
            f"{prefix}processing_s": round(finished - started, 2),
            f"{prefix}pipeline_steps_s": round(sum(steps.values()), 2),
            f"{prefix}export_s": round(held - finished, 2),
            f"{prefix}objects": len(new),
        }, new
    finally:
        node.terminate()
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
        orthanc.stop()


def orthanc_floor(work: Path, outputs: list[str], associations: int) -> float:
    """Seconds for a fresh Orthanc to hold ``outputs`` pushed by storescu over ``associations`` associations."""
    orthanc = Orthanc(work)
    try:
        started = time.monotonic()
        pushes = [subprocess.Popen(["storescu", "-R", "-aec", "ORTHANC", "127.0.0.1", str(orthanc.dicom_port), *outputs[i::associations]],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(associations)]
        for push in pushes:
            push.wait()
        _wait(lambda: orthanc.total() == len(outputs), 300, "Orthanc holding the outputs")
        return round(time.monotonic() - started, 2)
    finally:
        orthanc.stop()


def run(out_dir: Path) -> dict[str, float | str]:
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        weights, which = _weights(work)
        files = sorted(str(p) for p in SERIES.glob("*.dcm"))
        metrics: dict[str, float | str] = {"e2e_model": which, "e2e_slices": len(files)}
        warm_up = sorted(str(p) for p in WARM_UP.glob("*.dcm"))
        single, outputs = one_push(work / "default", weights, [warm_up, files], {}, "e2e_")
        metrics.update(single)
        multi, _ = one_push(work / "multiframe", weights, [warm_up, files], {"DICOM_NODE_PSEUDOCOLOR_SC": "multi-frame"}, "e2e_multiframe_")
        metrics.update(multi)
        cold, _ = one_push(work / "cold", weights, [files], {}, "e2e_first_series_")
        metrics["e2e_first_series_latency_s"] = cold["e2e_first_series_latency_s"]
        metrics["e2e_first_series_processing_s"] = cold.get("e2e_first_series_processing_s", "")
        if outputs:
            metrics["e2e_orthanc_floor_s"] = orthanc_floor(work / "floor-1", outputs, 1)
            metrics["e2e_orthanc_floor_4_associations_s"] = orthanc_floor(work / "floor-4", outputs, 4)
        return metrics
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(REPO / "bench" / "out")))
