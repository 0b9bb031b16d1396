"""End-to-end latency: the last instance sent to the PACS (Orthanc) holding SEG and every SC image.

One push of the Siemens series with DCMTK storescu to `dicom-node serve` (embedded Prefect, the
shipped model or, if none exists yet, random weights of the default architecture), exporting to
an Orthanc started here. The series quiet period is subtracted: it is a setting, not work.
Runnable alone: ``python -m bench.e2e`` (prints JSON).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERIES = Path(os.environ.get("DICOM_NODE_SHARED_DATA", REPO.parent / "shared" / "data")) / "dicom" / "sag-t1-siemens-skyra"
QUIET_S = 2.0
METRICS = {"e2e_latency_s": ("", "last instance sent -> Orthanc holds SEG + 192 SC, minus the quiet period")}


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
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _orthanc_count(http_port: int) -> tuple[int, int]:
    """(SEG instances, other instances) Orthanc holds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/statistics", timeout=5) as rsp:
        total = json.loads(rsp.read())["CountInstances"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/tools/find",
        data=json.dumps({"Level": "Instance", "Query": {"Modality": "SEG"}}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as rsp:
        seg = len(json.loads(rsp.read()))
    return seg, total - seg


def _weights(work: Path) -> tuple[Path, str]:
    from dicom_node.models.shipped import default_weights_path

    shipped = default_weights_path()
    if shipped.exists():
        return shipped, "shipped model"
    from dicom_node.imaging.model_info import ArchSpec
    from dicom_node.imaging.network import build_network, save_weights

    arch = ArchSpec()
    return save_weights(work / "random.pt", build_network(arch), arch, name="random", version="bench"), "random weights"


def run(out_dir: Path) -> dict[str, float | str]:
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    procs: list[subprocess.Popen] = []
    try:
        weights, which = _weights(work)
        dicom_port, http_port, node_port, prefect_port = _port(), _port(), _port(), _port()
        (work / "orthanc").mkdir()
        (work / "orthanc.json").write_text(json.dumps({
            "Name": "bench", "StorageDirectory": str(work / "orthanc"), "IndexDirectory": str(work / "orthanc"),
            "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "Plugins": [],
        }))
        procs.append(subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = {**os.environ, "DICOM_NODE_DATA_DIR": str(work / "var"), "DICOM_NODE_PORT": str(node_port),
               "DICOM_NODE_HOST": "127.0.0.1", "DICOM_NODE_PREFECT_PORT": str(prefect_port),
               "DICOM_NODE_SERIES_TIMEOUT": str(QUIET_S), "DICOM_NODE_POLL_INTERVAL_S": "0.2",
               "DICOM_NODE_DESTINATIONS": f"ORTHANC@127.0.0.1:{dicom_port}", "DICOM_NODE_MODEL_WEIGHTS": str(weights),
               "DICOM_NODE_MIN_FREE_BYTES": "0"}
        node_log = open(work / "node.log", "ab")
        procs.append(subprocess.Popen([str(Path(sys.executable).parent / "dicom-node"), "serve"], env=env, stdout=node_log, stderr=subprocess.STDOUT))
        _wait(lambda: _listening(node_port) and _listening(dicom_port), 300, "node and Orthanc listening")
        files = sorted(str(p) for p in SERIES.glob("*.dcm"))
        push = subprocess.run(["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(node_port), *files],
                              env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True)
        sent = time.monotonic()
        if push.returncode != 0:
            return {"e2e_latency_s": f"storescu failed: {push.stderr[-200:]!r}"}
        _wait(lambda: _orthanc_count(http_port) == (1, len(files)), 900, "SEG and SC at the PACS")
        latency = time.monotonic() - sent - QUIET_S
        return {"e2e_latency_s": round(latency, 2), "e2e_model": which, "e2e_slices": len(files)}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(REPO / "bench" / "out")))
