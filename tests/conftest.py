"""Fixtures shared by all tests: real databases, a real node process, real DCMTK and Orthanc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DICOM_NODE_SHARED_DATA", REPO.parent / "shared" / "data"))
SIEMENS = SHARED_DATA / "dicom" / "sag-t1-siemens-skyra"
POSTGRES_ADMIN_URL = os.environ.get("DICOM_NODE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def siemens_files() -> list[Path]:
    files = sorted(SIEMENS.glob("*.dcm"))
    assert len(files) == 192, f"expected the 192-slice Siemens series in {SIEMENS}"
    return files


# ---- databases -------------------------------------------------------------------------------

def _postgres_database() -> Iterator[str]:
    name = f"dn_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({type(exc).__name__}); "
            "start it (make test starts a local cluster) or set DICOM_NODE_TEST_POSTGRES_URL"
        )
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, empty database of each kind; migrations are the test's business."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def migrated_db(db_url: str):  # type: ignore[no-untyped-def]
    from dicom_node.db.migrate import upgrade
    from dicom_node.db.session import Database

    upgrade(db_url)
    db = Database(db_url)
    yield db
    db.dispose()


# ---- a node process --------------------------------------------------------------------------

class NodeProcess:
    """``dicom-node serve`` in a subprocess on a free loopback port."""

    def __init__(self, data_dir: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = int(env.get("DICOM_NODE_PORT") or free_port())
        self.env = {
            **os.environ,
            "DICOM_NODE_DATA_DIR": str(data_dir),
            "DICOM_NODE_PORT": str(self.port),
            "DICOM_NODE_HOST": "127.0.0.1",
            "DICOM_NODE_MIN_FREE_BYTES": "0",
            **env,
        }
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"node-{self.port}.log"

    def start(self) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "dicom-node"), "serve", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, timeout=240, proc=self.proc)  # embedded Prefect starts first
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "dicom-node"), *args], env=self.env, capture_output=True, text=True, timeout=120)

    def jobs(self) -> list[dict]:
        result = self.cli("jobs", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def node_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    nodes: list[NodeProcess] = []

    def make(env: dict[str, str] | None = None, args: tuple[str, ...] = (), data_dir: Path | None = None) -> NodeProcess:
        node = NodeProcess(data_dir or tmp_path / "var", env or {}, args)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()


# ---- DCMTK -----------------------------------------------------------------------------------

def storescu(port: int, paths: list[Path] | Path, *extra: str, aet: str = "STORESCU", aec: str = "DICOMNODE", timeout: float = 300) -> subprocess.CompletedProcess:
    """Push with DCMTK's storescu (verbose, so acknowledged files can be read from its output)."""
    targets = [str(p) for p in paths] if isinstance(paths, list) else ["+sd", "+sp", "*.dcm", str(paths)]
    return subprocess.run(
        ["storescu", "-v", "-nh", "-aet", aet, "-aec", aec, *extra, "127.0.0.1", str(port), *targets],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def acknowledged_files(storescu_output: str) -> list[str]:
    """Files storescu reports a Success response for, in order (from its -v output)."""
    acked, current = [], None
    for line in storescu_output.splitlines():
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
            current = None
    return acked


# ---- Orthanc ---------------------------------------------------------------------------------

class Orthanc:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.aet = "ORTHANC"
        self.proc: subprocess.Popen | None = None

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def start(self) -> Orthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "test-pacs",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": True,
            "DicomAlwaysAllowStore": True,
            "Plugins": [],
        }
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(config))
        log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen(["Orthanc", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.http_port, proc=self.proc)
        wait_for_port(self.dicom_port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def get(self, path: str):  # type: ignore[no-untyped-def]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as rsp:
            return json.loads(rsp.read())

    def instance_uids(self) -> set[str]:
        uids = set()
        for oid in self.get("/instances"):
            uids.add(self.get(f"/instances/{oid}/simplified-tags")["SOPInstanceUID"])
        return uids


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    if shutil.which("Orthanc") is None:
        pytest.fail("Orthanc is not installed: run the tests with `make test` (it installs the Debian package)")
    pacs = Orthanc(tmp_path / "orthanc").start()
    yield pacs
    pacs.stop()


# ---- small weights trained in the session ----------------------------------------------------

@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """Weights trained here on a few Siemens slices (deepbet's mask) and phantom slices (empty).

    Enough for the pipeline to find a brain in one and none in the other; not a model to judge
    quality by (that is the shipped model's job).
    """
    import numpy as np
    import torch

    from dicom_node.imaging.loading import load_folder
    from dicom_node.imaging.model_info import ArchSpec
    from dicom_node.imaging.network import build_network, save_weights
    from dicom_node.outputs.seg import read_seg_mask
    from tests.small_fit import fit, training_pairs

    torch.manual_seed(0)
    arch = ArchSpec(input_size=128)
    (siemens,), _ = load_folder(SIEMENS)
    (phantom,), _ = load_folder(SHARED_DATA / "dicom" / "t1-phantom-ge-signa")
    mask = read_seg_mask(SHARED_DATA / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm", siemens)
    brain_x, brain_y = training_pairs(siemens, mask, [60, 80, 96, 110, 130], arch.input_size)
    phantom_x, phantom_y = training_pairs(phantom, np.zeros(phantom.pixels.shape, dtype=bool), [30, 65, 100], arch.input_size)
    network = build_network(arch)
    fit(network, torch.cat([brain_x, phantom_x]), torch.cat([brain_y, phantom_y]), steps=60, batch_size=8)
    path = tmp_path_factory.mktemp("weights") / "test-brain.pt"
    return save_weights(path, network, arch, name="test-brain", version="0.0.1-test", metrics={"steps": 60})
