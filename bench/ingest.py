"""Ingest benchmark: DCMTK ``storescu`` pushing the Siemens series to the node vs to DCMTK ``storescp``.

Every figure is a ratio from interleaved runs on the same data (the median over repetitions of
node time / storescp time, each pair run back to back), because the machines this runs on are
small and shared; median seconds are reported too and raw times kept in ``bench/out/ingest.json``:

- ``ingest_ratio_vs_dcmtk``: one association, 192 instances; ``dicom-node serve --no-processing``
  (fresh data folder, SQLite, durability as shipped) over ``storescp -dhl`` writing to disk.
- ``ingest4_ratio_vs_dcmtk``: 4 scanners at once (4 ``storescu`` processes, each its own copy of
  the series with fresh Study/Series/SOP Instance UIDs) against the node and ``storescp --fork``.
- ``ingest_ratio_vs_dcmtk_postgres``: as the first, the node on a fresh PostgreSQL database.
- ``ingest_profile_*``: where the node's time goes for one push (in-process node, timed wrappers
  around each step of ``ingest_file``), and the push time with the node's ingest replaced by a
  no-op (what pynetdicom costs by itself).

Run alone with ``python -m bench.ingest`` (prints JSON). ``BENCH_INGEST_REPS`` (default 5) and
``BENCH_INGEST4_REPS`` / ``BENCH_INGEST_PG_REPS`` (default 3) set the repetitions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SHARED_DATA = Path(os.environ.get("DICOM_NODE_SHARED_DATA", REPO.parent / "shared" / "data"))
SIEMENS = SHARED_DATA / "dicom" / "sag-t1-siemens-skyra"
POSTGRES_ADMIN_URL = os.environ.get(
    "DICOM_NODE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
SCANNERS = 4
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

# metric -> (goal, peer), for the table bench.run prints.
METRICS: dict[str, tuple[str, str]] = {
    "ingest_ratio_vs_dcmtk": ("<= 2.0", "storescp -dhl (disk, no fsync)"),
    "ingest4_ratio_vs_dcmtk": ("<= 2.0", "storescp -dhl --fork, 4 assocs"),
    "ingest_ratio_vs_dcmtk_postgres": ("<= 2.0", "storescp -dhl (disk, no fsync)"),
    "ingest_node_s": ("", "median s, 192 instances"),
    "ingest_storescp_s": ("", "median s, 192 instances"),
    "ingest4_node_s": ("", "median s, 4 x 192 instances"),
    "ingest4_storescp_s": ("", "median s, 4 x 192 instances"),
    "ingest_node_postgres_s": ("", "median s, 192 instances"),
    "ingest_storescp_postgres_pair_s": ("", "median s, storescp runs paired with PostgreSQL"),
}


def log(msg: str) -> None:
    print(f"[bench.ingest] {msg}", file=sys.stderr, flush=True)


# ---- helpers ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def count_files(root: Path, pattern: str) -> int:
    return sum(1 for p in root.rglob(pattern) if p.is_file() and not p.name.startswith("."))


def siemens_files() -> list[Path]:
    files = sorted(SIEMENS.glob("*.dcm"))
    if len(files) != 192:
        raise RuntimeError(f"expected the 192-slice Siemens series in {SIEMENS}, found {len(files)} .dcm files")
    return files


def make_scanner_copies(files: list[Path], root: Path, count: int) -> list[list[Path]]:
    """``count`` copies of the series, each with its own Study, Series and SOP Instance UIDs."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    copies = []
    for n in range(count):
        folder = root / f"scanner{n}"
        folder.mkdir(parents=True)
        study, series = generate_uid(), generate_uid()
        out = []
        for i, path in enumerate(files):
            ds = dcmread(path)
            sop = generate_uid()
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            target = folder / f"{i:04d}.dcm"
            ds.save_as(target)
            out.append(target)
        copies.append(out)
    return copies


def push(port: int, file_sets: list[list[Path]], aec: str) -> float:
    """Start one ``storescu`` per file set at once (one association each); seconds until all exit."""
    procs = []
    start = time.perf_counter()
    for files in file_sets:
        procs.append(
            subprocess.Popen(
                ["storescu", "-aet", "BENCHSCU", "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
                env=DCMTK_ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    elapsed = time.perf_counter() - start
    for p, out in zip(procs, outputs):
        if p.returncode != 0:
            raise RuntimeError(f"storescu exited with {p.returncode}: {out.decode(errors='replace')[-2000:]}")
    return elapsed


# ---- the two peers ---------------------------------------------------------------------------

@contextlib.contextmanager
def storescp(workdir: Path, fork: bool) -> Iterator[tuple[int, Path]]:
    """DCMTK ``storescp -dhl`` writing every instance to a fresh folder."""
    out = workdir / f"storescp-{uuid.uuid4().hex[:8]}"
    out.mkdir(parents=True)
    port = free_port()
    args = ["storescp", "-dhl", *(["--fork"] if fork else []), "-od", str(out), str(port)]
    with open(workdir / "storescp.log", "ab") as logfile:
        proc = subprocess.Popen(args, env=DCMTK_ENV, stdout=logfile, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield port, out
    finally:
        stop_process(proc)
        if fork:  # children still writing when the parent got SIGTERM exit on their own
            time.sleep(0.2)
        shutil.rmtree(out, ignore_errors=True)


@contextlib.contextmanager
def node(workdir: Path, database_url: str | None = None) -> Iterator[tuple[int, Path]]:
    """``dicom-node serve --no-processing`` on a fresh data folder (and the given database)."""
    data = workdir / f"node-{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "DICOM_NODE_DATA_DIR": str(data),
        "DICOM_NODE_PORT": str(port),
        "DICOM_NODE_HOST": "127.0.0.1",
        "DICOM_NODE_LOG_LEVEL": "WARNING",
    }
    env.pop("DICOM_NODE_CONFIG", None)
    if database_url:
        env["DICOM_NODE_DATABASE_URL"] = database_url
    else:
        env.pop("DICOM_NODE_DATABASE_URL", None)
    with open(workdir / "node.log", "ab") as logfile:
        proc = subprocess.Popen(
            [str(VENV_BIN / "dicom-node"), "serve", "--no-processing"], env=env, stdout=logfile, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, proc)
        yield port, data / "incoming"
    finally:
        stop_process(proc)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"dn_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


def postgres_available() -> str | None:
    """None when the admin URL answers, else why not."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({type(exc).__name__})"


# ---- measurements ----------------------------------------------------------------------------

def timed_node_push(workdir: Path, file_sets: list[list[Path]], database_url: str | None = None) -> float:
    with node(workdir, database_url) as (port, incoming):
        seconds = push(port, file_sets, "DICOMNODE")
        stored = count_files(incoming, "*.dcm")
    expected = sum(len(f) for f in file_sets)
    if stored != expected:
        raise RuntimeError(f"the node acknowledged the push but holds {stored} of {expected} instances")
    return seconds


def timed_storescp_push(workdir: Path, file_sets: list[list[Path]], fork: bool) -> float:
    with storescp(workdir, fork) as (port, out):
        seconds = push(port, file_sets, "STORESCP")
        if fork:  # the parent answers at once; give the children a moment to close their files
            time.sleep(0.2)
        stored = count_files(out, "*")
    expected = sum(len(f) for f in file_sets)
    if stored != expected:
        raise RuntimeError(f"storescp holds {stored} of {expected} instances")
    return seconds


def interleaved(
    label: str, reps: int, node_run: Callable[[], float], peer_run: Callable[[], float]
) -> dict[str, list[float]]:
    """Alternate node and peer runs (peer first on even repetitions) so drift hits both alike."""
    times: dict[str, list[float]] = {"node": [], "peer": []}
    for i in range(reps):
        order = [("peer", peer_run), ("node", node_run)]
        if i % 2:
            order.reverse()
        for who, fn in order:
            times[who].append(fn())
        log(f"{label} {i + 1}/{reps}: node {times['node'][-1]:.2f}s, storescp {times['peer'][-1]:.2f}s")
    return times


def _ratio(times: dict[str, list[float]]) -> float:
    """Median of the per-repetition ratios: each pair ran back to back, under the same load."""
    return statistics.median(n / p for n, p in zip(times["node"], times["peer"]))


# ---- profile ---------------------------------------------------------------------------------

class _Timings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.totals[name] = self.totals.get(name, 0.0) + seconds
            self.counts[name] = self.counts.get(name, 0) + 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed


@contextlib.contextmanager
def _patched(patches: list[tuple[Any, str, Any]]) -> Iterator[None]:
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def _in_process_push(
    workdir: Path, files: list[Path], patches_for: Callable[[], list[tuple[Any, str, Any]]], database_url: str = ""
) -> float:
    """Run a ``Node`` (no processing; SQLite unless ``database_url``) in this process with the
    patches ``patches_for()`` gives applied; push the series once and return the seconds."""
    from dicom_node.config import Settings
    from dicom_node.db.migrate import upgrade
    from dicom_node.db.session import Database
    from dicom_node.runtime.node import Node

    data = workdir / f"inproc-{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = Settings(data_dir=data, port=port, host="127.0.0.1", database_url=database_url)
    data.mkdir(parents=True)
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url)
    saved_tempdir = tempfile.tempdir
    try:
        with _patched(patches_for()):
            the_node = Node(settings, db, dispatch=False)
            the_node.start()
            try:
                wait_for_port(port)
                seconds = push(port, [files], "DICOMNODE")
            finally:
                the_node.stop(grace_s=5)
    finally:
        tempfile.tempdir = saved_tempdir
        db.dispose()
        shutil.rmtree(data, ignore_errors=True)
    return seconds


def profile(workdir: Path, files: list[Path]) -> dict[str, float]:
    """Where the node's time goes for one push of the series, in ms per instance."""
    import logging

    from sqlalchemy import Connection

    from dicom_node.receive import ingest, listener, storage

    for name in ("dicom_node", "alembic", "pynetdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    n = len(files)
    timings = _Timings()

    def instrumented() -> list[tuple[Any, str, Any]]:
        return [
            (listener, "ingest_file", timings.wrap("handler_ingest_file", ingest.ingest_file)),
            (ingest, "free_bytes", timings.wrap("free_space_check", ingest.free_bytes)),
            (ingest, "read_header", timings.wrap("dcmread_header_parse", ingest.read_header)),
            (ingest, "series_id_for", timings.wrap("db_series_lookup", ingest.series_id_for)),
            (ingest, "insert_instance", timings.wrap("db_insert_statements", ingest.insert_instance)),
            (ingest, "commit_file", timings.wrap("file_commit_total", ingest.commit_file)),
            (storage, "fsync_file", timings.wrap("fsync_file", storage.fsync_file)),
            (storage, "_fsync_dir", timings.wrap("fsync_dir", storage._fsync_dir)),
            (Connection, "_commit_impl", timings.wrap("db_commit", Connection._commit_impl)),
        ]

    def no_op() -> list[tuple[Any, str, Any]]:
        # what the listener needs back of a stored instance: its series (for the release)
        return [(listener, "ingest_file", lambda *a, **k: SimpleNamespace(series_instance_uid="1.2.3"))]

    # Alternate instrumented and pynetdicom-only pushes, twice each; keep the faster of each kind
    # (the one least disturbed by whatever else runs on the machine).
    runs: list[tuple[float, dict[str, float]]] = []
    floors: list[float] = []
    for _ in range(2):
        timings.totals.clear()
        wall = _in_process_push(workdir, files, instrumented)
        runs.append((wall, dict(timings.totals)))
        floors.append(_in_process_push(workdir, files, no_op))
    wall, t = min(runs, key=lambda r: r[0])
    floor = min(floors)

    ms = lambda seconds: round(seconds * 1000 / n, 3)  # noqa: E731
    handler = t.get("handler_ingest_file", 0.0)
    fsync = t.get("fsync_file", 0.0) + t.get("fsync_dir", 0.0)
    file_other = t.get("file_commit_total", 0.0) - fsync
    db_total = t.get("db_series_lookup", 0.0) + t.get("db_insert_statements", 0.0) + t.get("db_commit", 0.0)
    accounted = t.get("free_space_check", 0.0) + t.get("dcmread_header_parse", 0.0) + t.get("file_commit_total", 0.0) + db_total
    return {
        "ingest_profile_push_s": round(wall, 3),
        "ingest_profile_pynetdicom_only_push_s": round(floor, 3),
        "ingest_profile_ms_per_instance_total": ms(wall),
        "ingest_profile_ms_pynetdicom_only": ms(floor),
        "ingest_profile_ms_outside_ingest": ms(wall - handler),
        "ingest_profile_ms_ingest_file": ms(handler),
        "ingest_profile_ms_fsync_file": ms(t.get("fsync_file", 0.0)),
        "ingest_profile_ms_fsync_dir": ms(t.get("fsync_dir", 0.0)),
        "ingest_profile_ms_link_rename_mkdir": ms(file_other),
        "ingest_profile_ms_db_commit": ms(t.get("db_commit", 0.0)),
        "ingest_profile_ms_db_statements": ms(t.get("db_series_lookup", 0.0) + t.get("db_insert_statements", 0.0)),
        "ingest_profile_ms_dcmread_header": ms(t.get("dcmread_header_parse", 0.0)),
        "ingest_profile_ms_free_space_check": ms(t.get("free_space_check", 0.0)),
        "ingest_profile_ms_ingest_other": ms(handler - accounted),
    }


# ---- entry point -----------------------------------------------------------------------------

def run(out_dir: Path) -> dict[str, float | str]:
    """Measure everything above; raw timings go to ``out_dir/ingest.json``."""
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            return {"ingest_ratio_vs_dcmtk": f"skipped: DCMTK {tool} not installed (make test installs it)"}
    reps = int(os.environ.get("BENCH_INGEST_REPS", "5"))
    reps4 = int(os.environ.get("BENCH_INGEST4_REPS", "3"))
    reps_pg = int(os.environ.get("BENCH_INGEST_PG_REPS", "3"))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = siemens_files()
    results: dict[str, float | str] = {}
    raw: dict[str, Any] = {"reps": {"single": reps, "four": reps4, "postgres": reps_pg}}
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="dn-bench-ingest-") as tmp:
        work = Path(tmp)
        # Warm the page cache and the interpreter imports once, untimed.
        timed_storescp_push(work, [files], fork=False)

        single = interleaved(
            "1 association", reps, lambda: timed_node_push(work, [files]), lambda: timed_storescp_push(work, [files], fork=False)
        )
        raw["single"] = single
        results["ingest_ratio_vs_dcmtk"] = round(_ratio(single), 2)
        results["ingest_node_s"] = round(statistics.median(single["node"]), 3)
        results["ingest_storescp_s"] = round(statistics.median(single["peer"]), 3)

        copies = make_scanner_copies(files, work / "copies", SCANNERS)
        four = interleaved(
            f"{SCANNERS} associations", reps4, lambda: timed_node_push(work, copies), lambda: timed_storescp_push(work, copies, fork=True)
        )
        raw["four"] = four
        results["ingest4_ratio_vs_dcmtk"] = round(_ratio(four), 2)
        results["ingest4_node_s"] = round(statistics.median(four["node"]), 3)
        results["ingest4_storescp_s"] = round(statistics.median(four["peer"]), 3)

        why_not = postgres_available()
        if why_not:
            results["ingest_ratio_vs_dcmtk_postgres"] = f"skipped: {why_not}"
        else:

            def node_pg() -> float:
                with postgres_database() as url:
                    return timed_node_push(work, [files], url)

            pg = interleaved("PostgreSQL", reps_pg, node_pg, lambda: timed_storescp_push(work, [files], fork=False))
            raw["postgres"] = pg
            results["ingest_ratio_vs_dcmtk_postgres"] = round(_ratio(pg), 2)
            results["ingest_node_postgres_s"] = round(statistics.median(pg["node"]), 3)
            results["ingest_storescp_postgres_pair_s"] = round(statistics.median(pg["peer"]), 3)

        if os.environ.get("BENCH_INGEST_PROFILE", "1") != "0":
            results.update(profile(work, files))

    raw["elapsed_s"] = round(time.monotonic() - started, 1)
    raw["results"] = results
    (out_dir / "ingest.json").write_text(json.dumps(raw, indent=2) + "\n")
    log(f"done in {raw['elapsed_s']}s")
    return results


if __name__ == "__main__":
    print(json.dumps(run(REPO / "bench" / "out"), indent=2))
