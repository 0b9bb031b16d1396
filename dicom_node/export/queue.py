"""Durable export state: one ``exports`` row per (output, destination), sent by the export loop.

A connection failure leaves a row pending with a later ``next_attempt_at`` (doubling back-off,
capped) until ``DICOM_NODE_EXPORT_MAX_ATTEMPTS`` tries have failed; the results wait on disk
however long the PACS is away. A failure status from the peer for an object is final: resending
the same bytes would get the same answer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from dicom_node.config import Destination, Settings
from dicom_node.db.models import Export, ExportState, Job, JobState, Output, utcnow
from dicom_node.db.session import Database
from dicom_node.export.retry import attempts_left, backoff
from dicom_node.export.sender import SendResult, send_in_parallel
from dicom_node.receive.tls import client_context

log = logging.getLogger(__name__)


def queue_exports(session: Session, output_ids: list[int], destinations: list[Destination]) -> None:
    """One pending export per (output, destination), unless it exists already (idempotent)."""
    existing = {
        (o, d) for o, d in session.execute(select(Export.output_id, Export.destination).where(Export.output_id.in_(output_ids)))
    }
    for output_id in output_ids:
        for destination in destinations:
            if (output_id, str(destination)) not in existing:
                session.add(Export(output_id=output_id, destination=str(destination)))


def supersede_older_versions(session: Session) -> int:
    """Withdraw pending exports of a job when a newer version of its series has succeeded: the PACS
    gets only the complete version (a resent series processes every instance again)."""
    newer = aliased(Job)
    job = aliased(Job)
    older = (
        select(Export.id)
        .join(Output, Export.output_id == Output.id)
        .join(job, Output.job_id == job.id)
        .where(
            Export.state == ExportState.PENDING,
            select(newer.id)
            .where(newer.series_id == job.series_id, newer.version > job.version, newer.state == JobState.SUCCEEDED)
            .exists(),
        )
    )
    ids = list(session.scalars(older))
    if ids:
        session.execute(
            update(Export).where(Export.id.in_(ids)).values(state=ExportState.SUPERSEDED, last_error="a newer version of the series replaced it")
        )
    return len(ids)


def export_due(db: Database, settings: Settings) -> dict[str, int]:
    """Send every pending export that is due, over ``DICOM_NODE_EXPORT_ASSOCIATIONS`` associations
    per destination; return counts by state."""
    by_destination = {str(d): d for d in settings.destinations}
    with db.session() as session:
        supersede_older_versions(session)
        due = session.execute(
            select(Export.id, Export.destination, Output.path)
            .join(Output, Export.output_id == Output.id)
            .where(Export.state == ExportState.PENDING, Export.next_attempt_at <= utcnow())
            .order_by(Export.id)
        ).all()
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
            tls = client_context(settings)
            results = send_in_parallel(peer, [p for _, p in items], settings.ae_title, settings.export_associations, tls=tls)
        except Exception as exc:  # a TLS context that cannot be built
            results = [SendResult(p, None, f"{type(exc).__name__}: {exc}") for _, p in items]
        with db.session() as session:
            for (export_id, _), result in zip(items, results):
                counts[_record_result(session, settings, export_id, result)] += 1
    return counts


def _record_result(session: Session, settings: Settings, export_id: int, result: SendResult) -> str:
    export = session.get(Export, export_id)
    assert export is not None
    attempts = export.attempts + 1
    values: dict[str, Any]
    if result.ok:
        values = {"state": ExportState.SENT, "sent_at": utcnow(), "last_error": None}
    elif result.status is not None:
        values = {"state": ExportState.FAILED, "last_error": f"peer answered status 0x{result.status:04X}"}
    elif not attempts_left(settings, attempts):
        values = {"state": ExportState.FAILED, "last_error": f"gave up after {attempts} attempts: {result.error}"}
    else:
        values = {"next_attempt_at": utcnow() + backoff(settings, attempts), "last_error": result.error}
    session.execute(update(Export).where(Export.id == export_id).values(attempts=attempts, **values))
    return str(values.get("state", ExportState.PENDING).value)


def pending_count(db: Database, job_id: int | None = None) -> int:
    with db.session() as session:
        query = select(func.count()).select_from(Export).join(Output).where(Export.state == ExportState.PENDING)
        if job_id is not None:
            query = query.where(Output.job_id == job_id)
        return session.scalar(query) or 0
