"""No brain, no output: is a segmented mask a plausible brain before anything reaches the PACS?

The network marks *something* on most images it is shown: 139 ml of "brain" on pydicom's
abdominal slice, a few voxels on a scout. Each check below is anatomy, not a fit to one case,
and each limit sits well outside what the real heads give (measured on the shared DICOM series,
the shared NIfTI heads along two axes and the Siemens mosaics of the heudiconv wheel; the table
is in ``tests/imaging/test_plausibility.py``):

- the network found brain voxels at all;
- the brain spans a volume: at least ``min_slices`` slices, ``min_span_mm`` along the slice axis
  and slices at most ``max_slice_spacing_mm`` apart (heads: 13 slices and more, 65-155 mm,
  spacing up to 5 mm here and 6.5 mm in the model card's axial heads; a single slice is not a
  volume, nor is a localizer plane of 3 slices 18 mm apart);
- its size is a brain's: ``min_ml``-``max_ml`` (heads: 760 ml for a 65 mm EPI slab to 1920 ml
  for the MNI template; adult brains are 1000-1600 ml);
- its extent along every axis is at most ``max_extent_mm`` (heads: at most 195 mm; the abdomen
  slice gives 259 mm) and in-plane at least ``min_inplane_mm`` (heads: 132 mm and more);
- it lies inside the head: at least ``min_inside_head`` of it on bright (non-air) pixels (heads:
  0.83-1.00; a phase map's "brain" sits on noise). Whether it reaches the image border is no
  check: a head cropped to its skull (seg3d-epilepsy) has its brain on the border in half of its
  sagittal slices, and so would a tight clinical field of view;
- the network is sure of it: mean probability inside the mask at least ``min_confidence``
  (heads: 0.93-0.97; stray blobs sit near 0.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from dicom_node.imaging.loading import MRSeries
from dicom_node.imaging.normalize import strided_sample


@dataclass(frozen=True)
class GateLimits:
    """The plausibility limits (see the module docstring for where each comes from)."""

    min_slices: int = 8
    min_span_mm: float = 40.0
    max_slice_spacing_mm: float = 10.0
    min_ml: float = 300.0
    max_ml: float = 2500.0
    max_extent_mm: float = 220.0
    min_inplane_mm: float = 80.0
    min_inside_head: float = 0.7
    min_confidence: float = 0.85


DEFAULT_LIMITS = GateLimits()


@dataclass(frozen=True)
class Verdict:
    """Whether the mask is a plausible brain; ``reason`` names the failed check and its value."""

    ok: bool
    reason: str
    measures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BrainMeasures:
    """What the gate measures on a mask (volumes in ml, lengths in mm)."""

    volume_ml: float
    slices: int
    span_mm: float  # along the slice axis
    slice_spacing_mm: float
    extent_mm: tuple[float, float]  # in-plane: along rows (column direction), along columns
    inside_head: float
    confidence: float | None


def measure(
    pixels: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    confidence: float | None,
) -> BrainMeasures | None:
    """The gate's measures of ``mask`` over ``pixels`` ``(n, rows, cols)``; None when it is empty.

    ``spacing`` is (slice spacing, row spacing, column spacing) in mm. "Head" is every pixel
    brighter than a tenth of the image's 99.5th percentile: air and noise fall below it.
    """
    if mask.shape != pixels.shape or mask.ndim != 3:
        raise ValueError(f"mask {mask.shape} and pixels {pixels.shape} must be the same (slices, rows, cols) shape.")
    if not mask.any():
        return None
    depth, row_mm, col_mm = spacing
    slices, rows, cols = np.nonzero(mask.any(axis=(1, 2)))[0], np.nonzero(mask.any(axis=(0, 2)))[0], np.nonzero(mask.any(axis=(0, 1)))[0]
    head = pixels > 0.1 * float(np.percentile(strided_sample(pixels), 99.5))
    voxels = int(mask.sum())
    return BrainMeasures(
        volume_ml=voxels * depth * row_mm * col_mm / 1000.0,
        slices=int(len(slices)),
        span_mm=float((slices[-1] - slices[0] + 1) * depth),
        slice_spacing_mm=float(depth),
        extent_mm=(float((rows[-1] - rows[0] + 1) * row_mm), float((cols[-1] - cols[0] + 1) * col_mm)),
        inside_head=float((mask & head).sum() / voxels),
        confidence=confidence,
    )


def check_brain(
    pixels: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    confidence: float | None,
    limits: GateLimits = DEFAULT_LIMITS,
) -> Verdict:
    """Whether ``mask`` over ``pixels`` is a plausible brain (see the module docstring).

    ``confidence`` is the network's mean probability inside the mask (``BrainMask.mean_probability``);
    None skips that check (a mask that did not come from the network, e.g. an expert's).
    """
    found = measure(pixels, mask, spacing, confidence)
    if found is None:
        return Verdict(False, "no brain: the network marked no brain voxels")
    values = {k: v for k, v in asdict(found).items() if v is not None}
    values["extent_mm"] = max(found.extent_mm)
    failure = _failure(found, limits)
    if failure:
        return Verdict(False, f"no brain: {failure}", values)
    return Verdict(
        True,
        f"plausible brain: {found.volume_ml:.0f} ml over {found.span_mm:.0f} mm, "
        f"confidence {found.confidence if found.confidence is not None else float('nan'):.2f}",
        values,
    )


def check_series(series: MRSeries, brain_mask: np.ndarray, confidence: float | None, limits: GateLimits = DEFAULT_LIMITS) -> Verdict:
    """:func:`check_brain` for a loaded series (one volume, as ``load_series`` gives by default).

    A series without pixel spacing or slice positions cannot be measured, so it is not passed.
    """
    spacing = series.slices[0].pixel_spacing
    depth = series.slice_spacing_mm or series.slices[0].slice_thickness
    if spacing is None or depth is None or any(s.position is None or s.orientation is None for s in series.slices):
        return Verdict(False, "no brain: the series lacks pixel spacing or slice positions, so its size cannot be judged")
    if series.n_positions != series.n_slices:
        return Verdict(False, "no brain: the series holds repeated slice positions; gate one volume")
    return check_brain(series.pixels, brain_mask, (float(depth), float(spacing[0]), float(spacing[1])), confidence, limits)


def _failure(found: BrainMeasures, limits: GateLimits) -> str | None:
    if found.slices < limits.min_slices or found.span_mm < limits.min_span_mm:
        return (
            f"the mask spans {found.slices} slice(s) ({found.span_mm:.0f} mm); a brain volume needs at least "
            f"{limits.min_slices} slices and {limits.min_span_mm:g} mm"
        )
    if found.slice_spacing_mm > limits.max_slice_spacing_mm:
        return (
            f"its slices are {found.slice_spacing_mm:.1f} mm apart, more than {limits.max_slice_spacing_mm:g} mm: "
            "too sparse to be a volume (a localizer?)"
        )
    if not limits.min_ml <= found.volume_ml <= limits.max_ml:
        return f"the mask holds {found.volume_ml:.0f} ml, outside {limits.min_ml:g}-{limits.max_ml:g} ml"
    largest = max(found.span_mm, *found.extent_mm)
    if largest > limits.max_extent_mm:
        return f"the mask extends {largest:.0f} mm, more than a brain's {limits.max_extent_mm:g} mm"
    if min(found.extent_mm) < limits.min_inplane_mm:
        return f"the mask is {min(found.extent_mm):.0f} mm across in-plane, less than {limits.min_inplane_mm:g} mm"
    if found.inside_head < limits.min_inside_head:
        return f"only {found.inside_head:.2f} of the mask lies on the head (at least {limits.min_inside_head:g} expected)"
    if found.confidence is not None and found.confidence < limits.min_confidence:
        return f"the network's mean confidence in the mask is {found.confidence:.2f} (at least {limits.min_confidence:g})"
    return None
