"""The embedded Prefect server: the node starts it, flows report to it, operators open its dashboard.

In distributed mode the node uses an external server (``PREFECT_API_URL``) instead.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)


class PrefectServerError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the node dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class EmbeddedPrefectServer:
    """``prefect server start`` as a child process, its state under ``home``."""

    def __init__(self, home: Path, port: int, host: str = "127.0.0.1") -> None:
        self.home = home
        self.port = port
        self.host = host
        self.proc: subprocess.Popen | None = None

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

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until its API answers."""
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
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                raise PrefectServerError(f"the Prefect server exited with {self.proc.returncode}; see {self.home / 'server.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise PrefectServerError(f"the Prefect server did not answer on port {self.port} within {timeout:.0f}s")
            time.sleep(0.5)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's process group; kill it if it has not gone after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
