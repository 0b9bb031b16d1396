"""DICOM TLS on the listener (DCMTK storescu +tls) and on export (DCMTK storescp +tls as the PACS)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dicom_node.config import Destination, Settings
from dicom_node.export.sender import send_files
from dicom_node.receive.tls import client_context
from tests.conftest import acknowledged_files, free_port, siemens_files, wait_for_port
from tests.node.helpers import dataset_bytes, stored_path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(crt))
    return key, crt


def _signed(folder: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    key, csr, crt = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial", "-days", "2", "-out", str(crt))
    return key, crt


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, tuple[Path, Path]]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = _ca(folder, "hospital-ca"), _ca(folder, "rogue-ca")
    return {"ca": ca, "node": _signed(folder, "node", ca), "scanner": _signed(folder, "scanner", ca),
            "pacs": _signed(folder, "pacs", ca), "intruder": _signed(folder, "intruder", rogue)}


def _storescu_tls(port: int, files: list[Path], key: Path, crt: Path, ca: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-v", "-aec", "DICOMNODE", "+tls", str(key), str(crt), "+cf", str(ca), "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_listener_speaks_tls_and_requires_a_certificate_from_the_ca(node_factory, pki) -> None:
    node = node_factory({"DICOM_NODE_TLS_CERT": str(pki["node"][1]), "DICOM_NODE_TLS_KEY": str(pki["node"][0]),
                         "DICOM_NODE_TLS_CA": str(pki["ca"][1])}, args=("--no-processing",)).start()
    files = siemens_files()[:3]
    ok = _storescu_tls(node.port, files, *pki["scanner"], pki["ca"][1])
    assert ok.returncode == 0 and len(acknowledged_files(ok.stderr + ok.stdout)) == 3, ok.stderr[-800:]
    assert all(dataset_bytes(stored_path(node.data_dir, f)) == dataset_bytes(f) for f in files)

    rogue = _storescu_tls(node.port, siemens_files()[3:4], *pki["intruder"], pki["ca"][1])
    plain = subprocess.run(["storescu", "-v", "-aec", "DICOMNODE", "127.0.0.1", str(node.port), str(siemens_files()[4])], capture_output=True, text=True, timeout=60)
    for refused in (rogue, plain):
        assert acknowledged_files(refused.stderr + refused.stdout) == []
    assert len(list((node.data_dir / "incoming").rglob("*.dcm"))) == 3
    assert node.stop() == 0


def test_export_over_tls_to_a_tls_pacs(pki, tmp_path: Path) -> None:
    port, received = free_port(), tmp_path / "pacs"
    received.mkdir()
    pacs = subprocess.Popen(["storescp", "+tls", str(pki["pacs"][0]), str(pki["pacs"][1]), "+cf", str(pki["ca"][1]), "-od", str(received), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TCP_NODELAY": "1"})
    try:
        wait_for_port(port, proc=pacs)
        settings = Settings(data_dir=tmp_path, tls_cert=pki["node"][1], tls_key=pki["node"][0], tls_ca=pki["ca"][1], export_tls=True)
        results = send_files(Destination("STORESCP", "127.0.0.1", port), siemens_files()[:2], "DICOMNODE", tls=client_context(settings))
        assert [r.status for r in results] == [0, 0]
        assert len(list(received.iterdir())) == 2
    finally:
        pacs.terminate()
        pacs.wait(timeout=30)
