"""Associations that wait instead of polling, and whose reads are bounded.

pynetdicom runs two threads per association and both poll: the DUL checks its socket and queues
and sleeps 1 ms, the association reactor sleeps 1 ms and checks its message queue. 25 idle
associations cost most of a core (bench/ingest.py), and pynetdicom has no setting for either loop.
Before an accepted association starts (``EVT_CONN_OPEN``), :func:`install` swaps four attributes
pynetdicom documents as its parts (``dul.socket``, ``dul.to_provider_queue``, ``dul.to_user_queue``,
``dimse.msg_queue``) for drop-in versions that wait on a per-association doorbell:

- the socket's ``ready`` waits in ``select`` for data or the bell, at most ``select_timeout`` (the
  attribute pynetdicom documents for this wait), instead of answering at once;
- the message queue's non-blocking ``get`` waits for the bell up to the same bound;
- every ``put`` on those queues rings the bell, so nothing waits for a timeout to be noticed.

The socket's ``recv`` also refuses PDUs longer than the configured maximum (memory per association
stays bounded whatever the sender announces) and gives up once free disk space crosses the floor,
so a large instance is cut off while it arrives instead of after it filled the disk.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_node.receive.storage import free_bytes

log = logging.getLogger(__name__)

# Upper bound of one wait: how late a timer (ARTIM, network idle) or a stop request is noticed.
WAIT_S = 0.5
# Association requests carry every presentation context; they may exceed a small PDU maximum.
MIN_PDU_LIMIT = 64 * 1024
# Free space is checked again after this many bytes received on an association.
FREE_SPACE_CHECK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one association may cost; 0 means no limit."""

    max_pdu: int = 0
    min_free_bytes: int = 0
    scratch: Path | None = None

    @property
    def pdu_limit(self) -> int:
        return max(self.max_pdu, MIN_PDU_LIMIT) if self.max_pdu else 0


class Doorbell:
    """Wakes both of an association's threads: a socket pair for ``select``, a condition for the rest."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._cond = threading.Condition()
        self._rung = False
        self._closed = False

    def fileno(self) -> int:
        return self._read.fileno()

    def ring(self) -> None:
        with self._cond:
            self._rung = True
            self._cond.notify_all()
            if not self._closed:
                try:
                    self._write.send(b"\0")
                except OSError:  # full: a wake-up is already pending
                    pass

    def wait(self, timeout: float) -> None:
        """Return when rung (since the last wait) or after ``timeout``."""
        with self._cond:
            if not self._rung:
                self._cond.wait(timeout)
            self._rung = False

    def drain(self) -> None:
        try:
            while self._read.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._read.close()
            self._write.close()


class RingingQueue(queue.Queue):
    """A queue that rings the doorbell on every put."""

    def __init__(self, bell: Doorbell) -> None:
        super().__init__()
        self._bell = bell

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._bell.ring()


class WaitingQueue(RingingQueue):
    """The DIMSE message queue: a non-blocking get on an empty queue waits for the bell first."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block and self.empty():
            self._bell.wait(WAIT_S)
        return super().get(block, timeout)


class GuardedSocket:
    """pynetdicom's ``AssociationSocket`` with a waiting ``ready`` and a bounded ``recv``."""

    def __init__(self, inner: Any, bell: Doorbell, limits: Limits) -> None:
        self.__dict__.update(_inner=inner, _bell=bell, _limits=limits, _since_check=0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    @property
    def ready(self) -> bool:
        if self._inner.ready:
            return True
        raw = self._inner.socket
        if raw is None:
            return False
        try:
            select.select([raw, self._bell], [], [], getattr(self._inner, "select_timeout", WAIT_S) or WAIT_S)
        except (OSError, ValueError):
            pass
        self._bell.drain()
        return bool(self._inner.ready)

    def recv(self, nr_bytes: int) -> bytearray:
        limit = self._limits.pdu_limit
        if limit and nr_bytes > limit:
            log.warning("closed an association: its peer sent a %d-byte PDU (maximum %d)", nr_bytes, limit)
            raise OSError(f"PDU of {nr_bytes} bytes exceeds the maximum of {limit}")
        data = self._inner.recv(nr_bytes)
        self._check_free_space(len(data))
        return data

    def _check_free_space(self, received: int) -> None:
        limits = self._limits
        if not limits.min_free_bytes or limits.scratch is None:
            return
        self.__dict__["_since_check"] += received
        if self._since_check < FREE_SPACE_CHECK_BYTES:
            return
        self.__dict__["_since_check"] = 0
        if free_bytes(limits.scratch) < limits.min_free_bytes:
            log.warning("closed an association mid-transfer: free disk space is below the configured floor")
            raise OSError("free disk space is below the configured floor")

    def close(self) -> None:
        self._inner.close()
        self._bell.ring()  # the association thread notices at once
        self._bell.close()


def install(assoc: Any, limits: Limits) -> None:
    """Swap an accepted association's polling parts for waiting ones; call before it starts."""
    bell = Doorbell()
    dul = assoc.dul
    dul.socket = GuardedSocket(dul.socket, bell, limits)
    dul.socket.select_timeout = WAIT_S
    dul.to_provider_queue = RingingQueue(bell)
    dul.to_user_queue = RingingQueue(bell)
    assoc.dimse.msg_queue = WaitingQueue(bell)
