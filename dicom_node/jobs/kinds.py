"""The kinds of job. Values are what the ``jobs.kind`` column stores: keep them stable."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    PROCESS_SERIES = "process_series"  # a series: selected by the rules, segmented, SEG + SC exported; or skipped
    REGISTER_SEG = "register_seg"  # SEG objects received: expert masks for retraining
    RETRAIN = "retrain"  # a retraining round over all expert masks


def kind_for_modality(modality: str | None) -> JobKind:
    """The job a completed series becomes: SEG objects are expert masks; every other series goes
    to the series selection rules, which skip (with a reason) what the node does not segment."""
    return JobKind.REGISTER_SEG if modality == "SEG" else JobKind.PROCESS_SERIES
