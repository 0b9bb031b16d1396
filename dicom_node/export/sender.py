"""C-STORE of files to one destination over one association."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

from dicom_node.config import Destination


@dataclass(frozen=True)
class SendResult:
    path: Path
    status: int | None  # None: not sent (association failed or broke)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0 or (self.status & 0xF000) == 0xB000)


def send_files(
    destination: Destination, paths: list[Path], calling_ae: str, timeout: float = 30, tls: ssl.SSLContext | None = None
) -> list[SendResult]:
    """C-STORE ``paths`` to ``destination`` over one association, each in its own transfer syntax."""
    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    tls_args = (tls, destination.host) if tls is not None else None
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        return [SendResult(p, None, f"association with {destination} failed") for p in paths]
    results = []
    try:
        for path, ds in zip(paths, datasets):
            if not assoc.is_established:
                results.append(SendResult(path, None, "association ended early"))
                continue
            status = assoc.send_c_store(ds)
            if status and "Status" in status:
                results.append(SendResult(path, int(status.Status)))
            else:
                results.append(SendResult(path, None, "no response to C-STORE"))
    finally:
        if assoc.is_established:
            assoc.release()
    return results
