"""Export: C-STORE the node's outputs to the configured destinations, with durable retry state.

Each (output, destination) pair has an ``exports`` row. A connection failure leaves it pending
with a later ``next_attempt_at`` (doubling back-off, capped); the results wait on disk however long
the PACS is away. A failure status from the peer for an object is recorded as failed: resending
the same bytes would get the same answer.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.config import Destination, Settings
from dicom_node.db.models import Export, ExportState, Output, utcnow
from dicom_node.db.session import Database
from dicom_node.tls import client_context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    path: Path
    status: int | None  # None: not sent (association failed or broke)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0 or (self.status & 0xF000) == 0xB000)


def send_files(
    destination: Destination, paths: list[Path], calling_ae: str, timeout: float = 30, tls: "ssl.SSLContext | None" = None
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


def queue_exports(session: Session, output_ids: list[int], destinations: list[Destination]) -> None:
    """One pending export per (output, destination), unless it exists already (idempotent)."""
    existing = {
        (o, d)
        for o, d in session.execute(select(Export.output_id, Export.destination).where(Export.output_id.in_(output_ids)))
    }
    for output_id in output_ids:
        for destination in destinations:
            if (output_id, str(destination)) not in existing:
                session.add(Export(output_id=output_id, destination=str(destination)))


def backoff(settings: Settings, attempts: int) -> timedelta:
    return timedelta(seconds=min(settings.export_backoff_s * 2 ** max(attempts - 1, 0), settings.export_backoff_max_s))


def export_due(db: Database, settings: Settings, job_id: int | None = None, ignore_schedule: bool = False) -> dict[str, int]:
    """Send every pending export that is due (optionally only one job's); return counts by state."""
    by_destination = {str(d): d for d in settings.destinations}
    with db.session() as session:
        query = (
            select(Export.id, Export.destination, Output.path)
            .join(Output, Export.output_id == Output.id)
            .where(Export.state == ExportState.PENDING)
            .order_by(Export.id)
        )
        if not ignore_schedule:
            query = query.where(Export.next_attempt_at <= utcnow())
        if job_id is not None:
            query = query.where(Output.job_id == job_id)
        due = session.execute(query).all()
    counts = {"sent": 0, "pending": 0, "failed": 0}
    groups: dict[str, list[tuple[int, Path]]] = {}
    for export_id, destination, path in due:
        groups.setdefault(destination, []).append((export_id, Path(path)))
    for destination, items in groups.items():
        peer = by_destination.get(destination)
        if peer is None:
            log.warning("export destination %s is no longer configured; leaving %d pending", destination, len(items))
            counts["pending"] += len(items)
            continue
        try:
            results = send_files(peer, [p for _, p in items], settings.ae_title, tls=client_context(settings))
        except Exception as exc:  # unreadable output file, network error while building the association
            results = [SendResult(p, None, f"{type(exc).__name__}: {exc}") for _, p in items]
        with db.session() as session:
            for (export_id, _), result in zip(items, results):
                counts[_record_result(session, settings, export_id, result)] += 1
    return counts


def _record_result(session: Session, settings: Settings, export_id: int, result: SendResult) -> str:
    export = session.get(Export, export_id)
    assert export is not None
    attempts = export.attempts + 1
    if result.ok:
        values = {"state": ExportState.SENT, "sent_at": utcnow(), "last_error": None}
    elif result.status is not None:
        values = {"state": ExportState.FAILED, "last_error": f"peer answered status 0x{result.status:04X}"}
    else:
        values = {"next_attempt_at": utcnow() + backoff(settings, attempts), "last_error": result.error}
    session.execute(update(Export).where(Export.id == export_id).values(attempts=attempts, **values))
    return values.get("state", ExportState.PENDING).value  # type: ignore[union-attr]


def pending_count(db: Database, job_id: int | None = None) -> int:
    with db.session() as session:
        query = select(Export.id).join(Output).where(Export.state == ExportState.PENDING)
        if job_id is not None:
            query = query.where(Output.job_id == job_id)
        return len(session.scalars(query).all())
