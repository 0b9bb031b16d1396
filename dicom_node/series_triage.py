"""One call from a series' files to what the node should do with it: skip, no-brain, or export.

The job seam calls this once per complete series and maps ``Triage.state`` to its job states:
``skipped`` (the selection rules said no; nothing loaded, nothing segmented), ``no-brain`` (the
plausibility gate stopped it; nothing is exported) or ``segmented`` (build SEG and SC from
``series`` and ``brain.mask``). Loading and output errors are not caught here: they are the
job's to classify (a ``SeriesLoadError`` is deterministic, an ``OSError`` may be transient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dicom_node.imaging.loading import MRSeries, load_series, read_header
from dicom_node.imaging.plausibility import DEFAULT_LIMITS, GateLimits, Verdict, check_series
from dicom_node.series_selection import RuleSet, Selection, select_series

if TYPE_CHECKING:  # the segmenter pulls in torch; callers that only select need not
    from dicom_node.imaging.segmenter import BrainMask, Segmenter

State = Literal["skipped", "no-brain", "segmented"]


@dataclass
class Triage:
    """What happened to one series, the reason to record, and what to build outputs from."""

    state: State
    reason: str
    selection: Selection
    series: MRSeries | None = None
    brain: BrainMask | None = None
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)  # the loader's and segmenter's notes, for the job


def triage(paths: Sequence[Path | str], rules: RuleSet, segmenter: Segmenter, limits: GateLimits = DEFAULT_LIMITS) -> Triage:
    """Select, load (one volume), segment and gate the series made of ``paths``.

    Raises:
        SeriesLoadError: a header or the series cannot be read (no usable instance).
    """
    files = [Path(p) for p in paths]
    selection = select_series([read_header(p) for p in files], rules)
    if not selection.selected:
        return Triage("skipped", selection.reason, selection)
    series = load_series(files)
    brain = segmenter.segment(series)
    verdict = check_series(series, brain.mask, brain.mean_probability, limits)
    notes = [*series.notes, *brain.notes]
    state: State = "segmented" if verdict.ok else "no-brain"
    return Triage(state, verdict.reason, selection, series, brain, verdict, notes)
