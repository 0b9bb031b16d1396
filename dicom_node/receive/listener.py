"""The DICOM listener: C-ECHO and C-STORE SCP. It saves, records and answers; nothing else.

Series completion, processing and export run elsewhere, so an association never waits on them;
the listener only notes, when a sender releases an association, which series it brought.
No client can hold the listener: each connection gets its own thread at once (the TLS handshake
runs there, with a deadline), every read has the network timeout, only associations that
negotiated count against the association limit, and reads are bounded (association_io.py).
"""

from __future__ import annotations

import functools
import logging
import socket
import socketserver
import ssl
import tempfile
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, dimse_messages, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.config import Settings
from dicom_node.db.session import Database
from dicom_node.receive.association_io import Limits, install
from dicom_node.receive.ingest import STATUS_PROCESSING_FAILURE, IngestError, ingest_file, record_release
from dicom_node.receive.storage import remove_orphans, tmp_dir
from dicom_node.uids import redact_uids, short_hash

log = logging.getLogger(__name__)

# Connections (negotiating or not) beyond this multiple of the association limit are closed at
# accept: each costs a thread until its timeout.
CONNECTIONS_PER_ASSOCIATION = 4
LISTEN_BACKLOG = 128


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a listen backlog for a department's worth of senders."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (the AE never listed this server)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()


class NodeRequestHandler(RequestHandler):
    """Runs in the connection's own thread: socket deadline and TLS handshake, then pynetdicom."""

    def __init__(self, request: Any, client_address: Any, server: Any, *, tls: ssl.SSLContext | None, timeout_s: float) -> None:
        self.tls = tls
        self.timeout_s = timeout_s
        super().__init__(request, client_address, server)

    def handle(self) -> None:
        # Every recv and send now fails after the network timeout: a peer that stops mid-PDU
        # (or never finishes a TLS handshake) loses its connection instead of a thread forever.
        self.request.settimeout(self.timeout_s)
        if self.tls is not None:
            try:
                self.request = self.tls.wrap_socket(self.request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS handshake with a client failed: %s", type(exc).__name__)
                _close_quietly(self.request)
                return
        super().handle()


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def handle_echo(event: Event) -> int:
    return 0x0000


class SeriesBrought:
    """How many instances of each series every open association has brought (kept or already held)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: weakref.WeakKeyDictionary[Any, Counter[str]] = weakref.WeakKeyDictionary()

    def add(self, assoc: Any, series_uid: str) -> None:
        with self._lock:
            self._counts.setdefault(assoc, Counter())[series_uid] += 1

    def take(self, assoc: Any) -> Counter[str]:
        with self._lock:
            return self._counts.pop(assoc, Counter())


def handle_store(event: Event, db: Database, settings: Settings, brought: SeriesBrought) -> int:
    """Keep the received instance and answer its status. Never raises."""
    request = cast(C_STORE, event.request)
    calling_ae = event.assoc.requestor.ae_title.strip() or None
    try:
        header = ingest_file(
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
        log.warning("refused instance %s from %s: %s", short_hash(uid) if uid else "?", calling_ae, redact_uids(exc.reason))
        return exc.status
    except Exception as exc:
        log.error("unexpected failure storing an instance: %s", redact_uids(f"{type(exc).__name__}: {exc}"))
        return STATUS_PROCESSING_FAILURE
    brought.add(event.assoc, header.series_instance_uid)
    return 0x0000


def handle_released(event: Event, db: Database, brought: SeriesBrought, on_release: Callable[[], None]) -> None:
    """The sender released the association (the release is already answered): note on each series
    it brought that the sender is done with it. An aborted association tells nothing."""
    counts = brought.take(event.assoc)
    if not counts:
        return
    try:
        record_release(db, counts)
    except Exception as exc:  # the quiet period still completes the series
        log.warning("could not record an association's release: %s", type(exc).__name__)
        return
    on_release()


def build_ae(settings: Settings) -> AE:
    """An AE that accepts every storage SOP class in every transfer syntax, stored as received."""
    ae = AE(ae_title=settings.ae_title)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = settings.max_pdu
    # pynetdicom counts every connection, negotiated or not; handle_requested enforces the real
    # limit on negotiated ones, so half-open connections cannot lock senders out.
    ae.maximum_associations = settings.max_associations * CONNECTIONS_PER_ASSOCIATION
    ae.network_timeout = settings.network_timeout_s
    ae.acse_timeout = settings.network_timeout_s
    ae.dimse_timeout = 60
    if settings.allowed_callers:
        ae.require_calling_aet = list(settings.allowed_callers)
    return ae


def handle_open(event: Event, limits: Limits) -> None:
    install(event.assoc, limits)


class AssociationGate:
    """Counts associations that negotiated; half-open connections never take a slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._admitted: weakref.WeakSet[Any] = weakref.WeakSet()

    def admit(self, assoc: Any) -> bool:
        with self._lock:
            live = sum(1 for a in self._admitted if a.is_alive())
            if live >= self.limit:
                return False
            self._admitted.add(assoc)
            return True


def handle_requested(event: Event, gate: AssociationGate) -> None:
    """Reject (transient, local limit exceeded) once the gate's limit of associations is reached."""
    if not gate.admit(event.assoc):
        log.warning("rejected an association: %d already open (DICOM_NODE_MAX_ASSOCIATIONS)", gate.limit)
        event.assoc.acse.send_reject(0x02, 0x03, 0x02)
        event.assoc.kill()  # waits until the reject is sent, as pynetdicom does for its own rejects


class OrphanSweeper:
    """Removes partial files of associations that ended, once they are surely abandoned.

    One timer at most: armed when a connection closes, it sweeps ``scratch`` after the network
    timeout and re-arms while files remain (they may belong to later aborts, or be in progress).
    """

    def __init__(self, scratch: Path, idle_s: float) -> None:
        self.scratch = scratch
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.idle_s + 1.0, self._sweep)
                self._timer.daemon = True
                self._timer.start()

    def _sweep(self) -> None:
        removed = remove_orphans(self.scratch, self.idle_s)
        if removed:
            log.info("removed %d partial files of associations that ended", removed)
        with self._lock:
            self._timer = None
        try:
            leftovers = any(self.scratch.iterdir())
        except OSError:
            leftovers = False
        if leftovers:
            self.arm()


def handle_closed(event: Event, sweeper: OrphanSweeper, brought: SeriesBrought) -> None:
    brought.take(event.assoc)  # aborted or dropped: forget what it brought
    sweeper.arm()


def start_listener(
    settings: Settings, db: Database, ssl_context: Any = None, on_release: Callable[[], None] = lambda: None
) -> NodeServer:
    """Start the SCP in background threads and return its server (``shutdown()`` stops it).

    ``on_release`` is called after a released association's series were noted (the node wakes
    its series tracker).
    """
    # pynetdicom's documented configuration (pynetdicom._config): received datasets go straight
    # to a file, a PDU at a time. Those files (and only those: the process's tempfile.tempdir
    # stays as it is) are made in our own tmp folder, so that committing one is a rename on the
    # same filesystem and the free-space checks see them.
    _config.STORE_RECV_CHUNKED_DATASET = True
    scratch = tmp_dir(settings.data_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    settings.incoming_dir.mkdir(parents=True, exist_ok=True)
    dimse_messages.NamedTemporaryFile = functools.partial(tempfile.NamedTemporaryFile, dir=scratch)  # type: ignore[assignment]

    ae = build_ae(settings)
    limits = Limits(max_pdu=settings.max_pdu, min_free_bytes=settings.min_free_bytes, scratch=scratch)
    brought = SeriesBrought()
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, handle_open, [limits]),
        (evt.EVT_CONN_CLOSE, handle_closed, [OrphanSweeper(scratch, settings.network_timeout_s), brought]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [db, settings, brought]),
        (evt.EVT_RELEASED, handle_released, [db, brought, on_release]),
    ]
    handler_class = functools.partial(NodeRequestHandler, tls=ssl_context, timeout_s=settings.network_timeout_s)
    server = cast(NodeServer, ae.make_server(
        (settings.host, settings.port), evt_handlers=handlers, server_class=NodeServer, request_handler=handler_class
    ))
    server.bind(evt.EVT_REQUESTED, handle_requested, [AssociationGate(settings.max_associations)])
    connection_cap = settings.max_associations * CONNECTIONS_PER_ASSOCIATION
    allowed = set(settings.allowed_hosts)

    def verify_request(_request: Any, client_address: tuple[str, int]) -> bool:
        if allowed and client_address[0] not in allowed:
            log.warning("refused connection from a host not on the allow-list")
            return False
        if len(server.active_associations) >= connection_cap:
            log.warning("refused a connection: %d connections open", connection_cap)
            return False
        return True

    server.verify_request = verify_request  # type: ignore[method-assign,assignment]
    thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
    thread.start()
    log.info("listening as %s on %s:%d", settings.ae_title, settings.host, settings.port)
    return server
