"""The running node: listener, series tracker, job dispatcher and exporter in one process.

Each loop runs in its own thread so that none waits on another: associations are answered while
a series is segmented, and a slow PACS does not hold back series completion.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from typing import Any

from dicom_node.config import Settings
from dicom_node.db.session import Database
from dicom_node.export.queue import export_due
from dicom_node.jobs.dispatch import Processor, load_handlers, report_failure, run_job, when_jobs_end
from dicom_node.jobs.queue import claim_next, requeue_interrupted
from dicom_node.jobs.tracker import close_complete_series, queue_retrain_if_due
from dicom_node.receive.listener import start_listener
from dicom_node.receive.storage import remove_stale_parts, tmp_dir

log = logging.getLogger(__name__)

NODE_LEASE = "node:"  # prefix of the lease of a job that a node process runs itself


def _no_processor(_db: Database, _settings: Settings, job_id: int) -> None:
    raise RuntimeError(f"job {job_id} was dispatched on a node started without processing")


class Node:
    """Start with ``start()``, stop with ``stop()``; ``run()`` blocks until ``stop_event`` is set."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        processor: Processor | None = None,
        ssl_context: Any = None,
        dispatch: bool = True,
    ) -> None:
        self.settings = settings
        self.dispatch = dispatch
        self.db = db
        self.processor = processor or (run_job if dispatch else _no_processor)
        self.ssl_context = ssl_context
        self.owner = f"{NODE_LEASE}{socket.gethostname()}:{os.getpid()}"
        self.stop_event = threading.Event()
        # Each loop also wakes early when another has work for it: a released association (the
        # tracker, after the grace), a new job (the dispatcher), new outputs (the exporter).
        self._wake = {name: threading.Event() for name in ("tracker", "exporter", "dispatcher")}
        self._threads: list[threading.Thread] = []
        self._timer_lock = threading.Lock()
        self._release_timer: threading.Timer | None = None
        self._server: Any = None
        self._stop_waking: Callable[[], None] = lambda: None
        self._busy = threading.Event()

    def recover(self) -> None:
        """Clean what a crash left: temporary files, and jobs a node was running (a worker's flow
        run holds its own lease and is left alone)."""
        scratch = tmp_dir(self.settings.data_dir)
        if scratch.exists():
            shutil.rmtree(scratch)
        removed = remove_stale_parts(self.settings.data_dir)
        with self.db.session() as session:
            requeued = requeue_interrupted(session, self.settings.job_max_attempts, NODE_LEASE)
        if removed or requeued:
            log.info("recovered: %d partial files removed, %d interrupted jobs requeued", removed, requeued)

    def start(self) -> None:
        self.recover()
        self._server = start_listener(self.settings, self.db, self.ssl_context, on_release=self._association_released)
        self._stop_waking = when_jobs_end(self._wake["exporter"].set)
        loops = [("tracker", self._tracker_loop), ("exporter", self._export_loop)]
        if self.dispatch:
            loops.append(("dispatcher", self._dispatch_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _association_released(self) -> None:
        """Wake the tracker once the grace has passed (one timer at a time: a sender that opens an
        association per instance must not start a thread per instance; the tick catches the rest)."""
        with self._timer_lock:
            if self._release_timer is not None and self._release_timer.is_alive():
                return
            self._release_timer = threading.Timer(self.settings.completion_grace_s + 0.05, self._wake["tracker"].set)
            self._release_timer.daemon = True
            self._release_timer.start()

    def _every_tick(self, step: Callable[[], object], what: str, name: str) -> None:
        wake = self._wake[name]
        while not self.stop_event.is_set():
            wake.clear()
            try:
                step()
            except Exception:
                log.exception("%s step failed; trying again next tick", what)
            wake.wait(self.settings.poll_interval_s)

    def _tracker_loop(self) -> None:
        def step() -> None:
            with self.db.session() as session:
                jobs = close_complete_series(session, self.settings.series_timeout, self.settings.completion_grace_s)
                for job in jobs:
                    log.info("job %d queued (%s, version %d, %d instances)", job.id, job.kind, job.version, job.instance_count)
            if jobs:
                self._wake["dispatcher"].set()
            if self.dispatch:
                with self.db.session() as session:
                    round_job = queue_retrain_if_due(session, self.settings.retrain_min_masks)
                    if round_job is not None:
                        log.info("job %d queued: retraining round %d", round_job.id, round_job.version)

        self._every_tick(step, "series tracker", "tracker")

    def _export_loop(self) -> None:
        self._every_tick(lambda: export_due(self.db, self.settings) if self.settings.destinations else None, "export", "exporter")

    def _dispatch_loop(self) -> None:
        try:
            from dicom_node.series.pipeline import warm_up  # highdicom loads here, not at import

            load_handlers()
            warm_up()  # and what start-up made is out of the garbage collector's reach from here on
        except Exception:  # only speed is lost: the first job imports what it needs
            log.exception("warming up the job handlers failed")

        def step() -> None:
            while not self.stop_event.is_set():
                with self.db.session() as session:
                    job = claim_next(session, self.owner)
                if job is None:
                    return
                self._busy.set()
                try:
                    self.processor(self.db, self.settings, job.id)
                except Exception as exc:
                    state = report_failure(self.db, self.settings, job.id, exc)
                    log.warning("job %d attempt failed (%s), now %s", job.id, type(exc).__name__, state.value)
                finally:
                    self._busy.clear()

        self._every_tick(step, "dispatcher", "dispatcher")

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, let open associations and the running job finish, then hand back the rest."""
        if self._server is not None:
            socketserver.BaseServer.shutdown(self._server)  # no new associations
            deadline = time.monotonic() + grace_s
            # Wait for associations that are exchanging data; a bare TCP connect is not one.
            while any(a.is_established for a in self._server.active_associations) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.stop_event.set()
        self._stop_waking()
        for wake in self._wake.values():
            wake.set()
        for thread in self._threads:
            thread.join(timeout=max(grace_s, 1.0) if thread.name == "dispatcher" else 5.0)
        if self._server is not None:
            self._server.shutdown()  # aborts anything still open; unacknowledged data is only in tmp
        with self.db.session() as session:
            # a job cut off by the grace period is handed back
            requeue_interrupted(session, None, self.owner)

    def run(self) -> None:
        """Block until ``stop_event`` is set, waking every second: CPython runs a signal's Python
        handler only when the main thread runs bytecode, and the kernel may hand a SIGTERM to
        any thread, so an untimed wait here could ignore it for good."""
        while not self.stop_event.wait(timeout=1.0):
            pass
