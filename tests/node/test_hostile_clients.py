"""Clients that try to lock out, slow down or fill up the node (issue 13), over real loopback sockets.

Each test holds a real ``dicom-node serve`` with a short network timeout and checks that real
senders (DCMTK storescu, pynetdicom) are still served, that the hostile connection is dropped, and
that nothing partial is kept. Raw sockets play the hostile clients.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import acknowledged_files, siemens_files, storescu, wait_until
from tests.node.helpers import association_request
from tests.node.test_bad_input import _send_raw

TIMEOUT_S = 2  # the node's network timeout in these tests
FAST = {"DICOM_NODE_NETWORK_TIMEOUT_S": str(TIMEOUT_S)}


def associate_raw(port: int, timeout: float = 30) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(association_request())
    reply = sock.recv(6)
    assert reply[:1] == b"\x02", f"expected an A-ASSOCIATE-AC, got {reply!r}"
    length = struct.unpack(">I", reply[2:6])[0]
    while length:
        length -= len(sock.recv(min(length, 65536)))
    return sock


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the node closes ``sock`` (EOF, reset, or an A-ABORT then EOF) within ``within`` s."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tmp_files(node) -> list[Path]:  # type: ignore[no-untyped-def]
    scratch = node.data_dir / "tmp"
    return [p for p in scratch.iterdir() if p.is_file()] if scratch.exists() else []


def big_instance(out: Path, megabytes: int) -> Path:
    """A multi-frame MR instance of about ``megabytes`` MB, fresh UIDs."""
    ds = dcmread(siemens_files()[0])
    frames = megabytes * 1024 * 1024 // (256 * 256 * 2)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 256, 256, frames
    ds.PixelData = np.zeros(frames * 256 * 256, dtype=np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(out, enforce_file_format=True)
    return out


# A pynetdicom sender in its own process (so the test can kill it): streams the file as it is,
# prints the bytes it got onto the wire, then the status (or NONE if the node cut it off).
SENDER = r"""
import sys
from pydicom import dcmread
from pynetdicom import AE, _config, evt
_config.STORE_SEND_CHUNKED_DATASET = True
sent = [0]
def count(event):
    sent[0] += len(event.data)
ae = AE(ae_title="BIGSCU")
ae.add_requested_context(dcmread(sys.argv[2], stop_before_pixels=True).SOPClassUID, "1.2.840.10008.1.2.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="DICOMNODE", evt_handlers=[(evt.EVT_DATA_SENT, count)])
print("associated", assoc.is_established, flush=True)
status = assoc.send_c_store(sys.argv[2])
print("sent", sent[0], flush=True)
print("status", hex(status.Status) if status and "Status" in status else "NONE", flush=True)
if assoc.is_established:
    assoc.release()
"""


def start_sender(port: int, path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SENDER, str(port), str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "associated True"
    return proc


# ---- the tests ---------------------------------------------------------------------------------

def test_slow_loris_is_dropped_and_real_senders_keep_their_slots(node_factory) -> None:
    node = node_factory({**FAST, "DICOM_NODE_MAX_ASSOCIATIONS": "2"}, args=("--no-processing",)).start()
    loris = []
    for _ in range(6):  # three times the association limit
        sock = socket.create_connection(("127.0.0.1", node.port))
        sock.sendall(b"\x01\x00\x00")  # 3 bytes of a PDU header, then silence
        loris.append(sock)
    pushed = storescu(node.port, siemens_files()[:2], timeout=60)
    assert len(acknowledged_files(pushed.stderr + pushed.stdout)) == 2, pushed.stderr[-800:]
    assert all(closed_by_peer(sock, within=TIMEOUT_S + 10) for sock in loris)
    assert node.stop() == 0


def test_silent_tls_client_does_not_block_the_tls_listener(node_factory, tmp_path: Path) -> None:
    key, crt = tmp_path / "node.key", tmp_path / "node.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=node",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    node = node_factory({**FAST, "DICOM_NODE_TLS_CERT": str(crt), "DICOM_NODE_TLS_KEY": str(key)}, args=("--no-processing",)).start()
    silent = socket.create_connection(("127.0.0.1", node.port))  # connects, never says hello
    pushed = subprocess.run(["storescu", "-v", "-aec", "DICOMNODE", "+tla", "-ic", "127.0.0.1", str(node.port),
                             *map(str, siemens_files()[:2])], check=False, capture_output=True, text=True, timeout=60)
    assert len(acknowledged_files(pushed.stderr + pushed.stdout)) == 2, pushed.stderr[-800:]
    assert closed_by_peer(silent, within=TIMEOUT_S + 10)
    assert "without DICOM_NODE_TLS_CA" in node.log()  # a certificate but no CA: said at start-up
    assert node.stop() == 0


def test_idle_associations_cost_no_cpu_and_do_not_hold_back_a_push(node_factory) -> None:
    node = node_factory({"DICOM_NODE_NETWORK_TIMEOUT_S": "60"}, args=("--no-processing",)).start()
    assert node.proc is not None
    idle = [associate_raw(node.port) for _ in range(25)]
    time.sleep(1)
    before, start = cpu_seconds(node.proc.pid), time.monotonic()
    time.sleep(3)
    share = (cpu_seconds(node.proc.pid) - before) / (time.monotonic() - start)
    # Polling pynetdicom spends 2-4 % of a core per idle association (75 % or more for 25).
    assert share < 0.2, f"25 idle associations cost {share:.0%} of a core"
    pushed = storescu(node.port, siemens_files()[:4])
    assert len(acknowledged_files(pushed.stderr + pushed.stdout)) == 4
    for sock in idle:
        sock.close()
    assert node.stop() == 0


def test_sixty_associations_at_once_each_get_an_answer(node_factory) -> None:
    node = node_factory({**FAST, "DICOM_NODE_NETWORK_TIMEOUT_S": "60"}, args=("--no-processing",)).start()
    answers: list[bytes] = []
    socks: list[socket.socket] = []
    lock = threading.Lock()

    def one() -> None:
        sock = socket.create_connection(("127.0.0.1", node.port), timeout=30)
        sock.sendall(association_request())
        try:
            reply = sock.recv(1)
        except TimeoutError:
            reply = b"timeout"
        with lock:
            answers.append(reply)
            socks.append(sock)

    threads = [threading.Thread(target=one) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    accepted, rejected = answers.count(b"\x02"), answers.count(b"\x03")
    assert len(answers) == 60 and accepted + rejected == 60, f"answers: {sorted(set(answers))}"
    assert accepted == 32 and rejected == 28  # DICOM_NODE_MAX_ASSOCIATIONS defaults to 32
    for sock in socks:
        sock.close()
    assert node.stop() == 0


def test_a_pdu_over_the_maximum_closes_the_association(node_factory) -> None:
    node = node_factory({**FAST, "DICOM_NODE_MAX_PDU": "65536"}, args=("--no-processing",)).start()
    sock = associate_raw(node.port)
    sock.sendall(b"\x04\x00" + struct.pack(">I", 300 * 1024 * 1024) + b"\x00" * 4096)  # announces 300 MB
    assert closed_by_peer(sock, within=TIMEOUT_S + 5)
    assert "PDU" in node.log()
    pushed = storescu(node.port, siemens_files()[:1])
    assert len(acknowledged_files(pushed.stderr + pushed.stdout)) == 1
    assert node.stop() == 0


def test_a_sender_killed_mid_instance_leaves_no_partial_file(node_factory, tmp_path: Path) -> None:
    node = node_factory(FAST, args=("--no-processing",)).start()
    sender = start_sender(node.port, big_instance(tmp_path / "big.dcm", 60))
    wait_until(lambda: any(p.stat().st_size > 5_000_000 for p in tmp_files(node)), timeout=60, interval=0.05, what="5 MB received")
    sender.send_signal(signal.SIGKILL)
    sender.wait(timeout=30)
    wait_until(lambda: not tmp_files(node), timeout=TIMEOUT_S + 15, what="partial file removed")
    assert not list((node.data_dir / "incoming").rglob("*.dcm"))
    assert node.stop() == 0


def test_free_space_floor_cuts_a_large_instance_off_early(node_factory, tmp_path: Path) -> None:
    node = node_factory({**FAST, "DICOM_NODE_MIN_FREE_BYTES": str(10**18)}, args=("--no-processing",)).start()
    sender = start_sender(node.port, big_instance(tmp_path / "big.dcm", 60))
    output, _ = sender.communicate(timeout=60)
    lines = dict(line.split(" ", 1) for line in output.splitlines() if line.startswith(("sent ", "status ")))
    assert lines.get("status") == "NONE", output[-800:]
    assert int(lines["sent"]) < 30 * 1024 * 1024, "the node took most of the instance before refusing it"
    wait_until(lambda: not tmp_files(node), timeout=TIMEOUT_S + 15, what="partial file removed")
    assert not list((node.data_dir / "incoming").rglob("*.dcm"))
    assert node.stop() == 0


@pytest.mark.parametrize("where", ["pixel-data", "private-element"])
def test_a_length_beyond_the_end_of_the_instance_is_refused(node_factory, tmp_path: Path, where: str) -> None:
    node = node_factory(FAST, args=("--no-processing",)).start()
    source = siemens_files()[0].read_bytes()
    pixel = source.rfind(b"\xe0\x7f\x10\x00")
    huge = struct.pack("<I", 0xFFFFFFF0)
    if where == "pixel-data":  # PixelData declares 0xFFFFFFF0 bytes, 4 KiB follow
        data = source[:pixel] + source[pixel : pixel + 8] + huge + source[pixel + 12 : pixel + 12 + 4096]
    else:  # a whole instance, then a private element declaring 0xFFFFFFF0 bytes, 4 KiB follow
        creator = b"\xe1\x7f\x10\x00LO" + struct.pack("<H", 18) + b"SIEMENS CSA HEADER"
        data = source + creator + b"\xe1\x7f\x10\x10OB\x00\x00" + huge + b"\x01" * 4096
    path = tmp_path / f"{where}.dcm"
    path.write_bytes(data)
    assert _send_raw(node.port, path) in (0xC210, 0xA900)
    assert not list((node.data_dir / "incoming").rglob("*.dcm"))
    assert "malformed length" in node.log()
    assert node.stop() == 0
