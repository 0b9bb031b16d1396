"""A SIGTERM stops the node whichever of its threads the kernel hands it to.

A process-directed signal goes to any thread that does not block it. CPython runs the Python
handler only in the main thread, when that thread next runs bytecode: a main thread parked in an
untimed wait would never see it, and ``systemctl stop`` would end in a SIGKILL. Seen under load:
a node ignored SIGTERM for 90 s.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import time
from pathlib import Path

from tests.conftest import acknowledged_files, siemens_files, storescu

SYS_TGKILL = {"x86_64": 234, "aarch64": 131}  # by machine


def _tgkill(pid: int, tid: int, sig: int) -> bool:
    """Send ``sig`` to thread ``tid`` of ``pid``; False when that thread has ended."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL[platform.machine()], pid, tid, sig) == 0:
        return True
    if ctypes.get_errno() == errno.ESRCH:
        return False
    raise OSError(ctypes.get_errno(), f"tgkill {pid} {tid}")


def _other_threads(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)


def test_sigterm_on_a_worker_thread_stops_the_node(node_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(args=("--no-processing",)).start()
    pushed = storescu(node.port, siemens_files()[:2])  # a queued job and association threads have run
    assert len(acknowledged_files(pushed.stderr + pushed.stdout)) == 2
    assert node.proc is not None
    assert any(_tgkill(node.proc.pid, tid, signal.SIGTERM) for tid in _other_threads(node.proc.pid)), "no worker thread took it"
    deadline = time.monotonic() + 30
    while node.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.proc.poll() == 0, "the node did not stop within 30 s of a SIGTERM to a worker thread"
    assert "signal 15: shutting down" in node.log()
