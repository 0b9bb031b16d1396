"""One series end to end, with no network and no database: select, load, segment, gate, then
pseudocolor and SEG + SC when the gate found a brain.

Every mode runs the same steps in the same order through :func:`process_series`: the node's
plain dispatcher and ``dicom-node segment`` call the steps directly, the Prefect flow passes a
``call`` that runs each one as a task. Output UIDs derive from ``uid_seed`` only, so re-running the
same job rewrites the same objects under the same names instead of making duplicates.
"""

from __future__ import annotations

import gc
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from dicom_node.imaging.loading import MRSeries, load_series, read_header
from dicom_node.imaging.plausibility import DEFAULT_LIMITS, GateLimits, Verdict, check_series
from dicom_node.imaging.postprocess import MIN_BRAIN_ML
from dicom_node.imaging.preview import preview_image
from dicom_node.imaging.pseudocolor import PseudocolorSettings, pseudocolor
from dicom_node.outputs.common import Equipment
from dicom_node.outputs.part10 import OutputFile, write_outputs
from dicom_node.outputs.sc import build_sc_series
from dicom_node.outputs.sc_multiframe import build_sc_multiframe
from dicom_node.outputs.seg import build_segs
from dicom_node.series.selection import RuleSet, Selection, select_series

if TYPE_CHECKING:  # the segmenter module imports torch: only its type is needed here
    from dicom_node.imaging.segmenter import BrainMask, Segmenter

T = TypeVar("T")
#: Runs one named step: ``call(name, fn, *args)`` returns ``fn(*args)`` (a flow runs it as a task).
StepCall = Callable[..., Any]


def call_directly(_name: str, fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


#: What became of a series: outputs made, left out by a selection rule, or no plausible brain.
SeriesState = Literal["segmented", "skipped", "no-brain"]


@dataclass
class SeriesResult:
    """What processing one series produced; safe to log (no patient data, no UIDs in ``reason`` or ``notes``)."""

    state: SeriesState
    reason: str
    seg: list[OutputFile]
    sc: list[OutputFile]
    n_slices: int
    brain_volume_ml: float | None
    seconds: dict[str, float]
    model_name: str
    model_version: str
    notes: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)  # what the plausibility gate measured
    preview: np.ndarray | None = None  # RGB montage of a few slices, when asked for

    @property
    def seg_paths(self) -> list[Path]:
        return [f.path for f in self.seg]

    @property
    def sc_paths(self) -> list[Path]:
        return [f.path for f in self.sc]

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def stats(self) -> dict[str, Any]:
        """The numbers kept on the job row and shown on the dashboard: no patient data."""
        return {
            "result": self.state,
            "reason": self.reason,
            "slices": self.n_slices,
            "brain_volume_ml": self.brain_volume_ml,
            "gate": {k: round(v, 3) for k, v in self.measures.items()},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "model": f"{self.model_name} {self.model_version}",
            "notes": self.notes,
        }


def warm_up() -> None:
    """Get a process that segments series ready for them, once, after it has loaded the model.

    Loads what the first series would otherwise wait for: highdicom's tables of the standard,
    read from JSON on first use (0.4 s of the first series' SEG). Then puts what start-up made
    (modules, the model, those tables: over 800,000 objects with torch) out of the garbage
    collector's reach for good (``gc.freeze``): a full collection walked all of it, 0.6 s at a
    random point of every second series or so, mostly while it was being loaded.
    """
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

    get_sop_class_iod_map(), get_iod_module_map(), get_module_attribute_map()
    gc.freeze()


def uid_seed_for(series_instance_uid: str, job_version: int | str, model_version: str) -> str:
    """The seed that makes a job's output UIDs reproducible: same job, same UIDs."""
    return f"{series_instance_uid}:{job_version}:{model_version}"


def host_equipment(segmenter: Segmenter) -> Equipment:
    """dicom-node on this host (its name as device serial number) running the segmenter's model."""
    return Equipment.for_model(segmenter.info, device_serial_number=platform.node()[:64] or "unknown")


def _select(paths: list[Path], rules: RuleSet) -> Selection:
    return select_series([read_header(p) for p in paths], rules)


def _segment(segmenter: Segmenter, series: MRSeries, min_brain_ml: float) -> BrainMask:
    return segmenter.segment(series, min_brain_ml)


def _gate(series: MRSeries, brain: BrainMask, limits: GateLimits) -> Verdict:
    return check_series(series, brain.mask, brain.mean_probability, limits)


def _write_seg(series: MRSeries, brain: BrainMask, segmenter: Segmenter, made_by: Equipment, seed: str, out: Path) -> list[OutputFile]:
    return write_outputs(build_segs(series, brain.mask, segmenter.info, made_by, seed), out)


def _write_sc(
    series: MRSeries, rgb: np.ndarray, made_by: Equipment, seed: str, colors: PseudocolorSettings, multiframe: bool, out: Path
) -> list[OutputFile]:
    build = build_sc_multiframe if multiframe else build_sc_series
    return write_outputs(build(series, rgb, made_by, seed, colors), out)


def process_series(
    source: MRSeries | Sequence[Path | str],
    out_dir: Path | str,
    segmenter: Segmenter,
    uid_seed: str,
    *,
    equipment: Equipment | None = None,
    pseudocolor_settings: PseudocolorSettings | None = None,
    rules: RuleSet | None = None,
    gate: GateLimits | None = DEFAULT_LIMITS,
    min_brain_ml: float = MIN_BRAIN_ML,
    multiframe_sc: bool = False,
    with_preview: bool = False,
    call: StepCall = call_directly,
) -> SeriesResult:
    """Segment one series and write its SEG under ``out_dir/seg`` and SC images under ``out_dir/sc``.

    With ``rules``, a series they do not select is ``skipped`` before anything is loaded. With
    ``gate``, a mask that is not a plausible brain gives ``no-brain`` and no outputs. With
    ``multiframe_sc``, the pseudocolor series is one multi-frame SC object instead of one per slice.

    Raises:
        SeriesLoadError: the files cannot be segmented (not MR, colour, no pixel data, ...).
        OutputBuildError: highdicom refused to build the SEG or SC.
        OSError: the outputs could not be written.
    """
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        result: T = call(name, fn, *args)
        seconds[name] = time.perf_counter() - started
        return result

    def result(state: SeriesState, reason: str, **found: Any) -> SeriesResult:
        base: dict[str, Any] = {"seg": [], "sc": [], "n_slices": 0, "brain_volume_ml": None}
        return SeriesResult(state=state, reason=reason, seconds=seconds, model_name=segmenter.info.name,
                            model_version=segmenter.info.version, **{**base, **found})

    if rules is not None and not isinstance(source, MRSeries):
        selection = timed("select", _select, [Path(p) for p in source], rules)
        if not selection.selected:
            return result("skipped", selection.reason)
    series = source if isinstance(source, MRSeries) else timed("load", load_series, list(source))
    brain = timed("segment", _segment, segmenter, series, min_brain_ml)
    found: dict[str, Any] = {"n_slices": series.n_slices, "brain_volume_ml": brain.volume_ml, "notes": [*series.notes, *brain.notes]}
    reason = "segmented"
    if gate is not None:
        verdict = timed("gate", _gate, series, brain, gate)
        found["measures"], reason = verdict.measures, verdict.reason
        if not verdict.ok:
            return result("no-brain", verdict.reason, **found)
    colors = pseudocolor_settings or PseudocolorSettings()
    made_by = equipment or host_equipment(segmenter)
    root = Path(out_dir)
    rgb = timed("pseudocolor", pseudocolor, series.pixels, brain.mask, colors)
    seg = timed("build-seg", _write_seg, series, brain, segmenter, made_by, uid_seed, root / "seg")
    sc = timed("build-sc", _write_sc, series, rgb, made_by, uid_seed, colors, multiframe_sc, root / "sc")
    preview = preview_image(series.pixels, brain.mask, rgb) if with_preview else None
    return result("segmented", reason, seg=seg, sc=sc, preview=preview, **found)
