"""When an export that did not get through is tried again, and when it is given up."""

from __future__ import annotations

from datetime import timedelta

from dicom_node.config import Settings


def backoff(settings: Settings, attempts: int) -> timedelta:
    """The wait after ``attempts`` failed tries: the first delay, doubling, capped."""
    return timedelta(seconds=min(settings.export_backoff_s * 2 ** max(attempts - 1, 0), settings.export_backoff_max_s))


def attempts_left(settings: Settings, attempts: int) -> bool:
    """True while another try is allowed after ``attempts`` failed ones (``DICOM_NODE_EXPORT_MAX_ATTEMPTS``)."""
    return attempts < settings.export_max_attempts
