"""Issue 13 figures: ingest with idle associations open, and memory while receiving a large instance.

- ``idle25_ingest_ratio``: DCMTK ``storescu`` pushes the Siemens series (191 instances after one
  untimed warm-up instance) to a fresh
  ``dicom-node serve --no-processing``, once with no other association and once with 25 idle
  associations open (raw sockets that negotiated and then say nothing, so they cost the client
  nothing); median over repetitions of (time with 25 idle) / (time with none), runs interleaved.
- ``large_instance_peak_rss_ratio``: the node's peak resident memory (``VmHWM``) while it receives
  one 300 MB instance from ``storescu``, divided by the instance's size; the node's resident memory
  before the push is reported too.

Run alone with ``python -m bench.bench_hostile`` (prints JSON). ``BENCH_IDLE_REPS`` (default 3).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.ingest import REPO, log, node, push, siemens_files
from tests.node.helpers import association_request

IDLE = 25
LARGE_MB = 300

METRICS: dict[str, tuple[str, str]] = {
    "idle25_ingest_ratio": ("<= 1.2", "the same push with no idle association"),
    "idle0_ingest_s": ("", "median s, 191 instances, no idle association"),
    "idle25_ingest_s": ("", "median s, 191 instances, 25 idle associations"),
    "large_instance_peak_rss_ratio": ("< 2", "node peak RSS / instance size, one 300 MB instance"),
    "large_instance_peak_rss_mb": ("", "node VmHWM after receiving it"),
    "node_rss_before_mb": ("", "node VmRSS before the push"),
}


@contextlib.contextmanager
def idle_associations(port: int, count: int) -> Iterator[None]:
    socks = []
    request = association_request(calling="IDLE")
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(request)
            head = sock.recv(6)
            if head[:1] != b"\x02":
                raise RuntimeError(f"idle association {len(socks) + 1} was not accepted: {head!r}")
            remaining = struct.unpack(">I", head[2:6])[0]
            while remaining:
                remaining -= len(sock.recv(remaining))
            socks.append(sock)
        time.sleep(1)  # let the node settle into idleness
        yield
    finally:
        for sock in socks:
            sock.close()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _node_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the node this module started)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":
            inode = parts[9]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
    raise RuntimeError(f"no process listens on port {port}")


def large_instance(out: Path) -> Path:
    import numpy as np
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    ds = dcmread(siemens_files()[0])
    frames = LARGE_MB * 1024 * 1024 // (256 * 256 * 2)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 256, 256, frames
    ds.PixelData = np.zeros(frames * 256 * 256, dtype=np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(out, enforce_file_format=True)
    return out


def run(out_dir: Path) -> dict[str, float | str]:
    reps = int(os.environ.get("BENCH_IDLE_REPS", "3"))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = siemens_files()
    saved = os.environ.get("DICOM_NODE_MIN_FREE_BYTES")
    os.environ["DICOM_NODE_MIN_FREE_BYTES"] = "0"  # the 300 MB instance must not meet the floor
    times: dict[str, list[float]] = {"idle0": [], "idle25": []}
    results: dict[str, float | str] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="dn-bench-hostile-") as tmp:
            work = Path(tmp)
            for i in range(reps):
                order = ["idle0", "idle25"] if i % 2 == 0 else ["idle25", "idle0"]
                for kind in order:
                    with node(work) as (port, _incoming):
                        push(port, [files[:1]], "DICOMNODE")  # first association: lazy imports, untimed
                        with idle_associations(port, IDLE if kind == "idle25" else 0):
                            times[kind].append(push(port, [files[1:]], "DICOMNODE"))
                log(f"idle {i + 1}/{reps}: none {times['idle0'][-1]:.2f}s, {IDLE} idle {times['idle25'][-1]:.2f}s")
            results["idle25_ingest_ratio"] = round(statistics.median(b / a for a, b in zip(times["idle0"], times["idle25"])), 2)
            results["idle0_ingest_s"] = round(statistics.median(times["idle0"]), 3)
            results["idle25_ingest_s"] = round(statistics.median(times["idle25"]), 3)

            big = large_instance(work / "large.dcm")
            size = big.stat().st_size
            with node(work) as (port, incoming):
                pid = _node_pid(port)
                results["node_rss_before_mb"] = round(_status_kb(pid, "VmRSS") / 1024, 1)
                push(port, [[big]], "DICOMNODE")
                peak = _status_kb(pid, "VmHWM") * 1024
                if not any(incoming.rglob("*.dcm")):
                    raise RuntimeError("the node acknowledged the large instance but holds no file")
            results["large_instance_peak_rss_mb"] = round(peak / 2**20, 1)
            results["large_instance_peak_rss_ratio"] = round(peak / size, 2)
    finally:
        if saved is None:
            os.environ.pop("DICOM_NODE_MIN_FREE_BYTES", None)
        else:
            os.environ["DICOM_NODE_MIN_FREE_BYTES"] = saved
    (out_dir / "hostile.json").write_text(json.dumps({"times": times, "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    print(json.dumps(run(REPO / "bench" / "out"), indent=2))
    sys.exit(0)
