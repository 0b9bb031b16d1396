"""One series end to end, with no network and no Prefect: load, segment, pseudocolor, SEG + SC, write.

Flows and the ``segment`` command both call :func:`process_series`. Output UIDs derive from
``uid_seed`` only, so re-running the same job (same seed) rewrites the same objects under the same
names instead of making duplicates; files are written to a temporary name and renamed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dicom_node.imaging.loading import MRSeries, load_series
from dicom_node.imaging.postprocess import MIN_BRAIN_ML
from dicom_node.imaging.preview import write_preview
from dicom_node.imaging.pseudocolor import PseudocolorSettings, pseudocolor
from dicom_node.imaging.segmenter import Segmenter
from dicom_node.outputs.common import Equipment
from dicom_node.outputs.part10 import write_datasets
from dicom_node.outputs.sc import build_sc_series
from dicom_node.outputs.seg import build_segs


@dataclass
class SeriesResult:
    """What processing one series produced; safe to log (no patient data, UIDs only hashed in ``log_name``)."""

    series_instance_uid: str
    log_name: str
    seg_paths: list[Path]
    sc_paths: list[Path]
    n_slices: int
    brain_volume_ml: float | None
    seconds: dict[str, float]
    model_name: str
    model_version: str
    notes: list[str] = field(default_factory=list)
    preview_path: Path | None = None

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def no_brain(self) -> bool:
        return not self.brain_volume_ml


def uid_seed_for(series_instance_uid: str, job_version: int | str, model_version: str) -> str:
    """The seed that makes a job's output UIDs reproducible: same job, same UIDs."""
    return f"{series_instance_uid}:{job_version}:{model_version}"


def process_series(
    source: MRSeries | Sequence[Path | str],
    out_dir: Path | str,
    segmenter: Segmenter,
    uid_seed: str,
    equipment: Equipment | None = None,
    pseudocolor_settings: PseudocolorSettings | None = None,
    preview_path: Path | str | None = None,
    min_brain_ml: float = MIN_BRAIN_ML,
) -> SeriesResult:
    """Segment one series and write its SEG under ``out_dir/seg`` and SC images under ``out_dir/sc``.

    ``source`` is a loaded series or the file paths of one series. ``equipment`` defaults to
    dicom-node with this host's name as device serial number.

    Raises:
        SeriesLoadError: the files cannot be segmented (not MR, colour, no pixel data, ...).
        OutputBuildError: highdicom refused to build the SEG or SC.
        OSError: the outputs could not be written.
    """
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    series = source if isinstance(source, MRSeries) else load_series(source)
    seconds["load"] = time.perf_counter() - clock

    brain = segmenter.segment(series, min_brain_ml)
    seconds["segment"] = brain.seconds

    clock = time.perf_counter()
    settings = pseudocolor_settings or PseudocolorSettings()
    rgb = pseudocolor(series.pixels, brain.mask, settings)
    seconds["pseudocolor"] = time.perf_counter() - clock

    info = segmenter.info
    made_by = equipment or Equipment.for_model(info, device_serial_number=platform.node()[:64] or "unknown")
    clock = time.perf_counter()
    segs = build_segs(series, brain.mask, info, made_by, uid_seed)
    seconds["seg"] = time.perf_counter() - clock
    clock = time.perf_counter()
    scs = build_sc_series(series, rgb, made_by, uid_seed, settings)
    seconds["sc"] = time.perf_counter() - clock

    clock = time.perf_counter()
    root = Path(out_dir)
    seg_paths = write_datasets(segs, root / "seg")
    sc_paths = write_datasets(scs, root / "sc")
    preview = write_preview(preview_path, series.pixels, brain.mask, rgb) if preview_path else None
    seconds["write"] = time.perf_counter() - clock

    return SeriesResult(
        series_instance_uid=series.series_instance_uid,
        log_name=series.log_name,
        seg_paths=seg_paths,
        sc_paths=sc_paths,
        n_slices=series.n_slices,
        brain_volume_ml=brain.volume_ml,
        seconds=seconds,
        model_name=info.name,
        model_version=info.version,
        notes=[*series.notes, *brain.notes],
        preview_path=preview,
    )
