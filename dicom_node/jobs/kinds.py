"""The kinds of job. Values are what the ``jobs.kind`` column stores: keep them stable."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    PROCESS_SERIES = "process_series"  # an MR series: segment, SEG + SC, export
    REGISTER_SEG = "register_seg"  # SEG objects received: expert masks for retraining
    STORE_ONLY = "store_only"  # anything else: kept, nothing to do
    RETRAIN = "retrain"  # a retraining round over all expert masks


def kind_for_modality(modality: str | None) -> JobKind:
    """The job a completed series becomes, by its Modality."""
    if modality == "MR":
        return JobKind.PROCESS_SERIES
    if modality == "SEG":
        return JobKind.REGISTER_SEG
    return JobKind.STORE_ONLY
