"""The embedded Prefect server: the node starts it, flows report to it, operators open its dashboard.

In distributed mode the node uses an external server (``PREFECT_API_URL``) instead. The node
refuses to start when the port is taken (its flows would report to someone else's server), and
restarts the server when it dies (every later job would fail with "Failed to reach API").
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class PrefectServerError(RuntimeError):
    pass


# Loaded here, not in the child: the watchdog forks from a busy, threaded node, and a child must
# not dlopen (another thread may hold the loader's lock at fork time).
_PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the node dies (PR_SET_PDEATHSIG)."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``host:port`` (a TIME_WAIT leftover does not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def api_call(api_url: str, path: str, body: dict | None = None, retries: int = 5, timeout: float = 30) -> Any:
    """GET ``path`` of a Prefect API, or POST ``body`` to it, and return the JSON answer.

    Prefect answers 503 for errors a client may retry (its SQLite database busy, typically while
    the server's own services start); its client retries those, and so does this.
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api_url}{path}", data=data, headers={"Content-Type": "application/json"})
    attempt = 0
    while True:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as rsp:
                payload = rsp.read()
            return json.loads(payload) if payload else None
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt >= retries:
                raise
        time.sleep(0.5 * 2**attempt)
        attempt += 1


class EmbeddedPrefectServer:
    """``prefect server start`` as a child process, its state under ``home``."""

    def __init__(self, home: Path, port: int, host: str = "127.0.0.1") -> None:
        self.home = home
        self.port = port
        self.host = host
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": self.host,
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_UI_API_URL": self.api_url,
        }

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as rsp:
                return rsp.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 180.0, watch_s: float = 5.0) -> None:
        """Start the server, wait until its API answers, then keep it running (checked every ``watch_s``)."""
        if port_in_use(self.host, self.port):
            raise PrefectServerError(
                f"port {self.port} is already in use by another program (another node's Prefect server?): "
                "set DICOM_NODE_PREFECT_PORT to a free port, or stop that program"
            )
        self._spawn(timeout)
        try:
            crashed = self.mark_interrupted_runs()
        except (OSError, ValueError) as exc:  # the dashboard shows stale runs; jobs are unaffected
            log.warning("could not mark interrupted flow runs Crashed: %s", exc)
            crashed = 0
        if crashed:
            log.warning("%d flow runs were left running by a node that stopped without finishing them: marked Crashed", crashed)
        self._stopping.clear()
        self._watchdog = threading.Thread(target=self._watch, args=(watch_s, timeout), name="prefect-watchdog", daemon=True)
        self._watchdog.start()

    def _spawn(self, timeout: float) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        prefect = Path(sys.executable).parent / "prefect"
        log_file = open(self.home / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", self.host, "--port", str(self.port)],
            env=self._env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to the node reaches the node, which stops this in order
            preexec_fn=_die_with_parent,  # and a kill -9 of the node takes the server with it
        )
        log_file.close()  # the child holds its own descriptor
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                raise PrefectServerError(f"the Prefect server exited with {self.proc.returncode}; see {self.home / 'server.log'}")
            if time.monotonic() > deadline:
                self._terminate()
                raise PrefectServerError(f"the Prefect server did not answer on port {self.port} within {timeout:.0f}s")
            time.sleep(0.5)

    def mark_interrupted_runs(self) -> int:
        """Mark Crashed every flow run this server still has as Pending/Running/Cancelling.

        Called when the node starts its server: flows run inside the node, so a run in such a
        state belongs to a node process that is gone (kill -9, power cut) and will never report.
        """
        unfinished = {"flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING", "CANCELLING"]}}}, "limit": 200}
        crashed = {
            "state": {"type": "CRASHED", "name": "Crashed", "message": "the node stopped during this run (found at its next start)"},
            "force": True,
        }
        count = 0
        while True:
            runs = api_call(self.api_url, "/flow_runs/filter", unfinished)
            if not isinstance(runs, list) or not runs:
                return count
            for run in runs:
                api_call(self.api_url, f"/flow_runs/{run['id']}/set_state", crashed)
                count += 1

    def _watch(self, every_s: float, timeout: float) -> None:
        """Restart the server whenever its process is gone; jobs meanwhile fail and are retried."""
        while not self._stopping.wait(every_s):
            if self.proc is None or self.proc.poll() is None:
                continue
            log.warning("the Prefect server exited with %s; restarting it", self.proc.returncode)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its uvicorn child may still hold the port
            except ProcessLookupError:
                pass
            try:
                self._spawn(timeout)
                self.restarts += 1
                log.info("the Prefect server is back on port %d", self.port)
            except PrefectServerError as exc:
                log.error("cannot restart the Prefect server: %s; trying again", exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching, then terminate the server's process group (killed after ``timeout``)."""
        self._stopping.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=timeout)
        self._terminate(timeout)

    def _terminate(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
