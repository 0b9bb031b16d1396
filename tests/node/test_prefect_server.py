"""The embedded Prefect server: a taken port stops the node from starting; a dead server comes back."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from dicom_node.prefect_server import EmbeddedPrefectServer, PrefectServerError
from tests.conftest import free_port, wait_until


def test_a_port_in_use_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as other:  # a second node, or any program, already on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        server = EmbeddedPrefectServer(tmp_path / "prefect", other.getsockname()[1])
        with pytest.raises(PrefectServerError, match="DICOM_NODE_PREFECT_PORT"):
            server.start(timeout=30)
    assert server.proc is None  # nothing was started


def test_a_killed_server_is_restarted(tmp_path: Path) -> None:
    server = EmbeddedPrefectServer(tmp_path / "prefect", free_port())
    server.start(timeout=180, watch_s=1)
    try:
        assert server.proc is not None
        first = server.proc.pid
        os.killpg(first, signal.SIGKILL)
        wait_until(lambda: server.restarts == 1 and server.healthy(), timeout=180, interval=1, what="Prefect restarted")
        assert server.proc.pid != first
    finally:
        server.stop()
