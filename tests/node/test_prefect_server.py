"""The embedded Prefect server: a taken port stops the node from starting; a dead server comes back."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import threading
import urllib.error
from pathlib import Path

import pytest

from dicom_node.runtime.prefect_server import EmbeddedPrefectServer, PrefectServerError, api_call
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


def test_a_run_left_running_by_a_killed_node_is_marked_crashed_at_the_next_start(tmp_path: Path) -> None:
    home, port = tmp_path / "prefect", free_port()
    first = EmbeddedPrefectServer(home, port)
    first.start(timeout=180, watch_s=3600)  # no restart: this server stays dead
    try:
        flow = api_call(first.api_url, "/flows/", {"name": "process-series"})
        run = api_call(first.api_url, "/flow_runs/", {"flow_id": flow["id"], "name": "series-abc", "state": {"type": "RUNNING", "name": "Running"}})
        done = api_call(first.api_url, "/flow_runs/", {"flow_id": flow["id"], "name": "series-def", "state": {"type": "COMPLETED", "name": "Completed"}})
    finally:
        assert first.proc is not None
        os.killpg(first.proc.pid, signal.SIGKILL)  # the node (and with it its server) killed mid-flow
        first.proc.wait(timeout=30)
        first.stop()
    second = EmbeddedPrefectServer(home, port)
    second.start(timeout=180)
    try:
        assert api_call(second.api_url, f"/flow_runs/{run['id']}")["state"]["type"] == "CRASHED"
        assert api_call(second.api_url, f"/flow_runs/{done['id']}")["state"]["type"] == "COMPLETED"
    finally:
        second.stop()


def test_api_calls_retry_prefects_retryable_503_and_nothing_else() -> None:
    """Prefect answers 503 while its SQLite database is busy (as at start-up): retried, as its own
    client does; any other error reaches the caller at once."""
    answers = [503, 503, 200]
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            code = answers.pop(0) if answers else 404
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'[{"id": "run"}]' if code == 200 else b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        assert api_call(url, "/flow_runs/filter", {"limit": 1}) == [{"id": "run"}]
        assert seen == ['{"limit": 1}'] * 3
        with pytest.raises(urllib.error.HTTPError) as raised:
            api_call(url, "/flow_runs/filter", {"limit": 1})
        assert raised.value.code == 404 and len(seen) == 4
    finally:
        server.shutdown()
        server.server_close()
