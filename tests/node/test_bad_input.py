"""Hostile and broken input over a real association: a failure status, nothing stored, node stays up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from tests.conftest import acknowledged_files, siemens_files, storescu
from tests.node.helpers import dataset_bytes, stored_path


def _send_raw(port: int, path: Path, calling: str = "STORESCU") -> int | None:
    """Send a file's bytes as they are (pynetdicom's chunked send does not re-encode)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
        ae = AE(ae_title=calling)
        ae.add_requested_context(MRImageStorage, str(ds.file_meta.TransferSyntaxUID))
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
        assert assoc.is_established, "association should be accepted"
        try:
            status = assoc.send_c_store(path)
            return int(status.Status) if status and "Status" in status else None
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False


def _variant(src: Path, out: Path, **changes: object) -> Path:
    ds = dcmread(src)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(out, enforce_file_format=False)
    return out


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def running_node(node_factory):  # type: ignore[no-untyped-def]
    node = node_factory({"DICOM_NODE_ALLOWED_CALLERS": "STORESCU,GOODSCU"}, args=("--no-processing",)).start()
    yield node
    node.stop()


def test_broken_instances_are_refused_and_nothing_is_kept(running_node, tmp_path: Path) -> None:
    node = running_node
    src = siemens_files()[0]
    before = _files_under(node.data_dir / "incoming")

    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size - 5000])
    traversal = _variant(src, tmp_path / "traversal.dcm", SeriesInstanceUID="1.2.3/../../../../tmp/evil")
    dotdot = _variant(src, tmp_path / "dotdot.dcm", StudyInstanceUID="..")
    no_study = _variant(src, tmp_path / "nostudy.dcm", StudyInstanceUID=None)
    no_series = _variant(src, tmp_path / "noseries.dcm", SeriesInstanceUID=None)
    garbage = tmp_path / "garbage.dcm"
    raw = src.read_bytes()
    meta_end = len(raw) - len(dataset_bytes(src))
    garbage.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xff\xff" + b"\x00" * 64)  # a UI claiming 65 KiB

    statuses = {p.name: _send_raw(node.port, p) for p in (truncated, traversal, dotdot, no_study, no_series, garbage)}
    for name, status in statuses.items():
        assert status is not None and (status & 0xF000) in (0xA000, 0xC000), f"{name}: status {status!r} is not a failure"

    assert _files_under(node.data_dir / "incoming") == before, "a refused instance left a file"
    assert not list(Path("/tmp").glob("evil*"))
    assert node.jobs() == [] or all(j["instances"] == 0 for j in node.jobs())

    # The node still serves: a good instance afterwards is stored byte-identically.
    assert _send_raw(node.port, src) == 0
    assert dataset_bytes(stored_path(node.data_dir, src)) == dataset_bytes(src)


def test_caller_not_on_allow_list_is_rejected_at_association(running_node) -> None:
    node = running_node
    echo = subprocess.run(["echoscu", "-aet", "INTRUDER", "-aec", "DICOMNODE", "127.0.0.1", str(node.port)], capture_output=True, text=True)
    assert echo.returncode != 0
    assert "Rejected" in echo.stderr or "rejected" in (echo.stderr + echo.stdout).lower()
    pushed = storescu(node.port, siemens_files()[:2], aet="INTRUDER")
    assert acknowledged_files(pushed.stderr + pushed.stdout) == []
    assert not (node.data_dir / "incoming").exists() or _files_under(node.data_dir / "incoming") == set()

    allowed = storescu(node.port, siemens_files()[:2], aet="GOODSCU")
    assert allowed.returncode == 0 and len(acknowledged_files(allowed.stderr + allowed.stdout)) == 2


def test_free_space_floor_refuses_instances_it_cannot_keep(node_factory) -> None:
    node = node_factory({"DICOM_NODE_MIN_FREE_BYTES": str(10**18)}, args=("--no-processing",)).start()
    pushed = storescu(node.port, siemens_files()[:3])
    assert acknowledged_files(pushed.stderr + pushed.stdout) == []
    assert (pushed.stderr + pushed.stdout).count("Refused: OutOfResources") == 3
    assert not list((node.data_dir / "incoming").rglob("*.dcm"))
    echo = subprocess.run(["echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(node.port)], capture_output=True)
    assert echo.returncode == 0
    node.stop()
