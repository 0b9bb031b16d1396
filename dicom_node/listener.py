"""The DICOM listener: C-ECHO and C-STORE SCP. It saves, records and answers; nothing else.

Series completion, processing and export run elsewhere, so an association never waits on them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.config import Settings
from dicom_node.db.session import Database
from dicom_node.ingest import STATUS_PROCESSING_FAILURE, IngestError, ingest_file
from dicom_node.storage import tmp_dir
from dicom_node.uids import short_hash

log = logging.getLogger(__name__)

# pynetdicom's DUL thread sleeps 1 ms whenever no PDU is waiting, and a sender such as storescu
# waits for each C-STORE response before it sends the next instance: that sleep was a third of
# pynetdicom's per-instance time on one association (bench/ingest.py). Polling every 0.2 ms costs
# a little CPU per open association and none once it is released.
DUL_POLL_S = 0.0002


def handle_open(event: Event) -> None:
    event.assoc.dul._run_loop_delay = DUL_POLL_S  # pynetdicom has no public setting for it


def handle_echo(event: Event) -> int:
    return 0x0000


def handle_store(event: Event, db: Database, settings: Settings) -> int:
    """Keep the received instance and answer its status. Never raises."""
    request = event.request
    calling_ae = event.assoc.requestor.ae_title.strip() or None
    try:
        ingest_file(
            db,
            Path(event.dataset_path),
            settings.incoming_dir,
            calling_ae=calling_ae,
            expected_sop_instance=str(request.AffectedSOPInstanceUID or "") or None,
            expected_sop_class=str(request.AffectedSOPClassUID or "") or None,
            min_free_bytes=settings.min_free_bytes,
        )
    except IngestError as exc:
        uid = str(request.AffectedSOPInstanceUID or "")
        log.warning("refused instance %s from %s: %s", short_hash(uid) if uid else "?", calling_ae, exc.reason)
        return exc.status
    except Exception:
        log.exception("unexpected failure storing an instance")
        return STATUS_PROCESSING_FAILURE
    return 0x0000


def build_ae(settings: Settings) -> AE:
    """An AE that accepts every storage SOP class in every transfer syntax, stored as received."""
    ae = AE(ae_title=settings.ae_title)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = settings.max_pdu
    ae.maximum_associations = 32
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    if settings.allowed_callers:
        ae.require_calling_aet = list(settings.allowed_callers)
    return ae


def start_listener(settings: Settings, db: Database, ssl_context: Any = None) -> ThreadedAssociationServer:
    """Start the SCP in background threads and return its server (``shutdown()`` stops it)."""
    # Received datasets go straight to a file in our own tmp folder, so committing one is a
    # rename on the same filesystem rather than a decode and re-encode.
    _config.STORE_RECV_CHUNKED_DATASET = True
    scratch = tmp_dir(settings.data_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    settings.incoming_dir.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(scratch)

    ae = build_ae(settings)
    handlers = [
        (evt.EVT_CONN_OPEN, handle_open),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [db, settings]),
    ]
    server = ae.start_server(
        (settings.host, settings.port), block=False, evt_handlers=handlers, ssl_context=ssl_context
    )
    if settings.allowed_hosts:
        allowed = set(settings.allowed_hosts)

        def verify_request(_request: Any, client_address: tuple[str, int]) -> bool:
            if client_address[0] in allowed:
                return True
            log.warning("refused connection from a host not on the allow-list")
            return False

        server.verify_request = verify_request  # type: ignore[method-assign]
    log.info("listening as %s on %s:%d", settings.ae_title, settings.host, settings.port)
    return server
