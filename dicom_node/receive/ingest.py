"""Receive one instance: check its header, store its bytes durably, record its row.

Called by the C-STORE handler (and usable without a network). Raises ``IngestError`` with the
DICOM status the sender should see; never leaves a partial file or row behind.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, CursorResult, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dicom_node.db.models import Base, Instance, Series, Study, utcnow
from dicom_node.db.session import Database
from dicom_node.receive.storage import commit_file, free_bytes, instance_path
from dicom_node.uids import InvalidUID, require_uid, short_hash

log = logging.getLogger(__name__)

# DICOM C-STORE statuses (PS3.4 B.2.3 and pynetdicom's table).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_PROCESSING_FAILURE = 0xC211

DEFER_BYTES = 1024 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = 0x7FE00010

_HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
]


class IngestError(Exception):
    """An instance the node will not keep, with the status to answer and a log-safe reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Header:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    transfer_syntax_uid: str
    images_in_acquisition: int | None = None


def read_header(path: Path, expected_sop_instance: str | None = None, expected_sop_class: str | None = None) -> Header:
    """Read and check the identifying attributes of a Part 10 file, without its pixel data.

    Raises ``IngestError`` when the file cannot be parsed, is truncated, or has missing, invalid
    or mismatching UIDs.
    """
    try:
        # Values over DEFER_BYTES (pixel data) stay on disk: a 300 MB instance costs no 300 MB here.
        ds = dcmread(path, force=False, defer_size=DEFER_BYTES)
        lengths = _check_lengths(ds, path)
        _check_complete(ds, lengths)
    except InvalidDicomError as exc:
        raise IngestError(STATUS_CANNOT_UNDERSTAND, f"not a DICOM dataset: {exc}") from exc
    except IngestError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed input
        raise IngestError(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be parsed: {type(exc).__name__}") from exc

    try:
        sop_class = require_uid(ds.get("SOPClassUID"), "SOP Class UID")
        sop_instance = require_uid(ds.get("SOPInstanceUID"), "SOP Instance UID")
        study = require_uid(ds.get("StudyInstanceUID"), "Study Instance UID")
        series = require_uid(ds.get("SeriesInstanceUID"), "Series Instance UID")
    except InvalidUID as exc:
        raise IngestError(STATUS_CANNOT_UNDERSTAND, str(exc)) from exc
    if expected_sop_instance is not None and sop_instance != expected_sop_instance:
        raise IngestError(STATUS_DATASET_MISMATCH, "SOP Instance UID differs from the C-STORE request's")
    if expected_sop_class is not None and sop_class != expected_sop_class:
        raise IngestError(STATUS_DATASET_MISMATCH, "SOP Class UID differs from the C-STORE request's")
    modality = ds.get("Modality")
    return Header(
        images_in_acquisition=_positive_int(ds.get("ImagesInAcquisition")),
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study,
        series_instance_uid=series,
        modality=str(modality)[:16] if modality else None,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
    )


def _positive_int(value: object) -> int | None:
    """An IS value as a count, or None when it is missing or junk (it is only a hint)."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 < number < 2**31 else None


def _check_lengths(ds, path: Path) -> dict[int, int]:
    """Refuse an element whose declared length runs past the end of the file.

    pydicom reads such a value short without a word (a private element or PixelData declaring
    0xFFFFFFF0 bytes with a few KiB present), so the file would be kept as if it were whole. The
    top-level elements are still raw just after ``dcmread`` (large values deferred, not read):
    each one's declared length is compared with what the file holds. Returns the declared length
    of each top-level element.
    """
    lengths: dict[int, int] = {}
    if ds.file_meta.TransferSyntaxUID.is_deflated:
        return lengths  # positions are in the inflated stream; pydicom's inflate fails on truncation
    size = os.path.getsize(path)
    for tag, elem in ds.items():
        length, tell = getattr(elem, "length", None), getattr(elem, "value_tell", None)
        if length is None or tell is None or length == UNDEFINED_LENGTH:
            continue
        if tell + length > size:
            raise IngestError(
                STATUS_CANNOT_UNDERSTAND,
                f"element {tag} declares {length} bytes but only {max(size - tell, 0)} follow (malformed length)",
            )
        lengths[int(tag)] = int(length)
    return lengths


def _check_complete(ds, lengths: dict[int, int]) -> None:
    """Refuse native pixel data whose size differs from what the header declares (truncation).

    Encapsulated (compressed) pixel data is parsed to its delimiter by pydicom, which fails on a
    truncated stream; native data carries no delimiter, so its size is checked here.
    """
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples, bits = int(ds.get("SamplesPerPixel", 1)), int(ds.BitsAllocated)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise IngestError(STATUS_CANNOT_UNDERSTAND, "pixel data without a usable Rows/Columns/BitsAllocated") from exc
    pixels = rows * cols * samples * frames
    expected = (pixels + 7) // 8 if bits == 1 else pixels * ((bits + 7) // 8)
    actual = lengths[PIXEL_DATA] if PIXEL_DATA in lengths else len(ds.PixelData)
    if actual not in (expected, expected + 1):  # one pad byte keeps the value even
        raise IngestError(
            STATUS_CANNOT_UNDERSTAND,
            f"pixel data holds {actual} bytes but the header declares {expected} (truncated or inconsistent)",
        )


def _insert_ignore(conn: Connection | Session, model: type[Base], values: dict[str, Any], key: str) -> int:
    """INSERT ... ON CONFLICT DO NOTHING on either database; returns the rows inserted."""
    dialect = conn.dialect if isinstance(conn, Connection) else conn.get_bind().dialect
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    result: CursorResult[Any] = conn.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=[key]))  # type: ignore[assignment]
    return result.rowcount


def series_id_for(conn: Connection | Session, header: Header) -> int:
    """The series row's id, adding the study and series rows when missing."""
    series_id = conn.scalar(select(Series.id).where(Series.series_instance_uid == header.series_instance_uid))
    if series_id is not None:
        return series_id
    _insert_ignore(conn, Study, {"study_instance_uid": header.study_instance_uid}, "study_instance_uid")
    study_id = conn.scalar(select(Study.id).where(Study.study_instance_uid == header.study_instance_uid))
    _insert_ignore(
        conn,
        Series,
        {"series_instance_uid": header.series_instance_uid, "study_id": study_id, "modality": header.modality},
        "series_instance_uid",
    )
    series_id = conn.scalar(select(Series.id).where(Series.series_instance_uid == header.series_instance_uid))
    if series_id is None:  # the insert above or a concurrent one made it: it cannot be missing
        raise RuntimeError("the series row vanished while it was being added")
    return series_id


def insert_instance(
    conn: Connection | Session, header: Header, series_id: int, path: Path, size: int, calling_ae: str | None
) -> bool:
    """Add the instance row unless its SOP Instance UID is already held; True when added."""
    values = {
        "sop_instance_uid": header.sop_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        "series_id": series_id,
        "transfer_syntax_uid": header.transfer_syntax_uid,
        "path": str(path),
        "size_bytes": size,
        "calling_ae": calling_ae,
        "images_in_acquisition": header.images_in_acquisition,
    }
    return bool(_insert_ignore(conn, Instance, values, "sop_instance_uid"))


def instance_exists(conn: Connection | Session, sop_instance_uid: str) -> bool:
    return conn.scalar(select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)) is not None


# Series ids by Series Instance UID, per database: rows are never deleted, so after the first
# instance of a series each further one costs a single INSERT (bench/ingest.py's profile).
_series_ids: weakref.WeakKeyDictionary[Database, dict[str, int]] = weakref.WeakKeyDictionary()
_SERIES_CACHE_SIZE = 4096


def _cached_series_id(db: Database, conn: Connection, header: Header) -> int:
    cache = _series_ids.setdefault(db, {})
    series_id = cache.get(header.series_instance_uid)
    if series_id is None:
        series_id = series_id_for(conn, header)
        if len(cache) >= _SERIES_CACHE_SIZE:
            cache.clear()
        cache[header.series_instance_uid] = series_id
    return series_id


def ingest_file(
    db: Database,
    received: Path,
    incoming_root: Path,
    *,
    calling_ae: str | None = None,
    expected_sop_instance: str | None = None,
    expected_sop_class: str | None = None,
    min_free_bytes: int = 0,
) -> Header:
    """Keep the Part 10 file ``received``: durable on disk under its UIDs, and its row committed.

    One transaction: the instance row is inserted first (a SOP Instance UID the node already holds
    is acknowledged again without rewriting anything, even when two associations send it at
    once), then the file is made durable under its final name, then the row is committed.
    Raises ``IngestError`` (nothing kept) on any failure.
    """
    size = os.path.getsize(received)
    if min_free_bytes and free_bytes(incoming_root) < min_free_bytes + size:
        raise IngestError(STATUS_OUT_OF_RESOURCES, "free disk space is below the configured floor")
    header = read_header(received, expected_sop_instance, expected_sop_class)
    final = instance_path(incoming_root, header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid)
    file_committed = False
    try:
        with db.engine.begin() as conn:
            if not insert_instance(conn, header, _cached_series_id(db, conn, header), final, size, calling_ae):
                return header
            commit_file(received, final, incoming_root)
            file_committed = True
    except Exception as exc:
        _series_ids.pop(db, None)  # a rolled-back series row must not stay cached
        if file_committed:
            _forget_file(db, header, final)
        elif isinstance(exc, OSError):
            raise IngestError(STATUS_OUT_OF_RESOURCES, f"cannot write instance: {exc.strerror}") from exc
        raise IngestError(STATUS_OUT_OF_RESOURCES, f"cannot record instance: {type(exc).__name__}") from exc
    log.debug("stored instance %s of series %s", short_hash(header.sop_instance_uid), short_hash(header.series_instance_uid))
    return header


def record_release(db: Database, brought: Mapping[str, int]) -> None:
    """Note on each series that an association which brought ``brought[series UID]`` of its
    instances was released: the sender's sign that it has sent what it had (jobs.tracker)."""
    if not brought:
        return
    now = utcnow()
    with db.engine.begin() as conn:
        for series_uid, count in brought.items():
            conn.execute(
                update(Series).where(Series.series_instance_uid == series_uid).values(released_at=now, released_instances=count)
            )


def _forget_file(db: Database, header: Header, final: Path) -> None:
    """The row is the acknowledgement's other half: without it the file goes too, unless a
    concurrent store of the same instance committed the row meanwhile."""
    try:
        with db.engine.connect() as conn:
            keep = instance_exists(conn, header.sop_instance_uid)
    except Exception:
        keep = False
    if not keep:
        final.unlink(missing_ok=True)
