"""UID checks and the short hashes that stand for UIDs in logs and flow-run names."""

from __future__ import annotations

import hashlib
import re

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# A UID-looking token in free text, not part of a longer number or word: four or more dotted
# numeric components, or three with a long last one (2.25.<UUID as an integer>). Version strings
# such as 1.2.0 (model versions in job messages) stay readable.
_UID_IN_TEXT = re.compile(r"(?<![0-9A-Za-z.])(?:[0-9]+(?:\.[0-9]+){3,}|[0-9]+\.[0-9]+\.[0-9]{6,})(?![0-9A-Za-z])")


class InvalidUID(ValueError):
    """A value that is not a DICOM UID (digits and dots, at most 64 characters)."""


def is_valid_uid(value: object) -> bool:
    """True for a DICOM UID: digits and dots, no empty or zero-padded component, <= 64 chars."""
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.match(value) is not None


def is_safe_uid(value: object) -> bool:
    """True for strings safe to use as a path component: digits and dots, <= 64 chars.

    Laxer than :func:`is_valid_uid` (real scanners emit leading zeros in components) but never
    lets ``/``, ``..`` on its own, or anything but digits and dots through.
    """
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and re.fullmatch(r"[0-9]+(\.[0-9]+)*", value) is not None
    )


def require_uid(value: object, name: str) -> str:
    """Return ``value`` if it is safe to use as a path component, else raise ``InvalidUID``."""
    if not is_safe_uid(value):
        shown = "missing" if value in (None, "") else f"not a UID ({len(str(value))} chars)"
        raise InvalidUID(f"{name} is {shown}")
    return str(value)


def short_hash(uid: str, length: int = 10) -> str:
    """A stable, non-reversible stand-in for a UID in logs and names."""
    return hashlib.sha256(uid.encode()).hexdigest()[:length]


def redact_exception(exc: BaseException) -> BaseException:
    """``exc`` with the UIDs in its message replaced (in place, type kept), before a message about
    it is stored elsewhere, e.g. as a Prefect run's state message. File paths under ``incoming/``
    are UIDs."""
    if isinstance(exc, OSError):
        if exc.filename is not None:
            exc.filename = redact_uids(str(exc.filename))
        if exc.filename2 is not None:
            exc.filename2 = redact_uids(str(exc.filename2))
    if exc.args and not isinstance(exc, OSError):
        exc.args = tuple(redact_uids(a) if isinstance(a, str) else a for a in exc.args)
    return exc


def redact_uids(text: str) -> str:
    """``text`` with every UID-looking token (dotted numbers, >= 3 parts, also inside file paths)
    replaced by its :func:`short_hash`: UIDs embed dates and site identifiers."""
    return _UID_IN_TEXT.sub(lambda m: short_hash(m.group(0)), text)
