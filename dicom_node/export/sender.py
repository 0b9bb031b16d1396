"""C-STORE of files to one destination, over one association or several at once.

Files go out as stored (pynetdicom sends a file's bytes without decoding them), and a job's
objects are spread over ``associations`` parallel associations: a PACS indexes each instance in
its own transaction, so the objects of one series reach Orthanc with its default SQLite index
3.5 times faster over four associations than over one (bench/e2e.py measures it).
"""

from __future__ import annotations

import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.association import Association

from dicom_node.config import Destination

# pynetdicom's documented switch: a C-STORE of a file path streams the file's encoded dataset.
_config.STORE_SEND_CHUNKED_DATASET = True


@dataclass(frozen=True)
class SendResult:
    path: Path
    status: int | None  # None: not sent (association failed or broke)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0 or (self.status & 0xF000) == 0xB000)


def _context(path: Path) -> tuple[str, str]:
    meta = read_file_meta_info(path)  # group 2 only: the file goes out as it is
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def _no_delay(assoc: Association) -> None:
    """Each C-STORE's command and dataset go out at once: without TCP_NODELAY, Nagle's algorithm
    holds the small PDUs back until the peer's delayed ACK (tens of ms per object)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def send_files(
    destination: Destination, paths: list[Path], calling_ae: str, timeout: float = 30, tls: ssl.SSLContext | None = None
) -> list[SendResult]:
    """C-STORE ``paths`` to ``destination`` over one association, each in its own transfer syntax.

    Never raises: a file that cannot be read or a network failure is a result without a status.
    """
    unreadable: dict[Path, SendResult] = {}
    contexts: dict[Path, tuple[str, str]] = {}
    for path in paths:
        try:
            contexts[path] = _context(path)
        except Exception as exc:  # gone or damaged since it was written: it alone fails
            unreadable[path] = SendResult(path, None, f"cannot read output file: {type(exc).__name__}")
    if not contexts:
        return [unreadable[p] for p in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntax in sorted(set(contexts.values())):
        ae.add_requested_context(sop_class, [syntax])
    tls_args = (tls, destination.host) if tls is not None else None
    try:
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    except Exception as exc:
        return [SendResult(p, None, f"association with {destination} failed: {type(exc).__name__}") for p in paths]
    if not assoc.is_established:
        return [SendResult(p, None, f"association with {destination} failed") for p in paths]
    _no_delay(assoc)
    results = []
    try:
        for path in paths:
            if path in unreadable:
                results.append(unreadable[path])
                continue
            if not assoc.is_established:
                results.append(SendResult(path, None, "association ended early"))
                continue
            try:
                status = assoc.send_c_store(path)
            except Exception as exc:  # a file gone or unreadable since: the others still go
                results.append(SendResult(path, None, f"cannot send output file: {type(exc).__name__}"))
                continue
            if status and "Status" in status:
                results.append(SendResult(path, int(status.Status)))
            else:
                results.append(SendResult(path, None, "no response to C-STORE"))
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def send_in_parallel(
    destination: Destination,
    paths: list[Path],
    calling_ae: str,
    associations: int,
    timeout: float = 30,
    tls: ssl.SSLContext | None = None,
) -> list[SendResult]:
    """:func:`send_files` over up to ``associations`` associations at once; results in ``paths``' order."""
    count = max(1, min(associations, len(paths)))
    if count == 1:
        return send_files(destination, paths, calling_ae, timeout, tls)
    shares = [paths[i::count] for i in range(count)]
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="export") as pool:
        sent = list(pool.map(lambda share: send_files(destination, share, calling_ae, timeout, tls), shares))
    by_path = {result.path: result for share in sent for result in share}
    return [by_path[p] for p in paths]
