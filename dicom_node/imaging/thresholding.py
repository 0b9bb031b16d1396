"""From the network's brain probabilities to a raw brain mask, as the model's inference says.

The threshold (``InferenceSpec.threshold_for``) decides every voxel. Three optional steps, each
calibrated on the held-out folds like the threshold (``models/train_default.py calibrate``):

- ``end_threshold``: another threshold in the first and last tenth of the brain's extent along
  each axis (skull base, vertex, the lateral, frontal and occipital poles). Fusing three views
  lowers the probabilities of the thin brain there, so one threshold for the whole head trims the
  ends while it is right for the middle.
- ``smooth_mm``: the probabilities are blurred by a 3D Gaussian first, for a smoother surface.
- ``valley``: each series takes its own threshold in a range, where the fewest voxels' probabilities
  lie (``valley_threshold``). The folds' networks rank the voxels well (average precision 0.993-0.995)
  but the probability at the brain's edge shifts from head to head; a cut where few voxels are
  undecided moves with the edge, where a fixed cut falls inside a shoulder of rim voxels.

After the cut, ``cut_and_clean`` keeps the brain (``clean_mask``) and, on a contrast-enhanced
series, trims the enhancing rim (``contrast_rim``, ``trim_bright_rim``).

All three are calibrated on fused probabilities, so they run only where the three views were fused
(``InferenceSpec.fuses``) and on a T1-like contrast: an EPI, or a stack run slice by
slice, is cut at its threshold alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeGuard

import cv2
import numpy as np

from dicom_node.imaging.model_info import InferenceSpec
from dicom_node.imaging.postprocess import MIN_BRAIN_ML, CleanedMask, clean_mask, largest_component, trim_bright_rim

END_FRACTION = 0.1
Spacing = tuple[float, float, float]  # (slice, row, column) in mm


def smooth_probabilities(probs: np.ndarray, spacing: Spacing, sigma_mm: float) -> np.ndarray:
    """``probs`` blurred by a 3D Gaussian of ``sigma_mm``: in-plane per slice, then across slices
    (skipped when the slices are much thicker than the Gaussian)."""
    sigma_z, sigma_row, sigma_col = (sigma_mm / s for s in spacing)
    in_plane = (_kernel(sigma_col), _kernel(sigma_row))
    out = np.stack([
        cv2.GaussianBlur(p, in_plane, sigmaX=sigma_col, sigmaY=sigma_row, borderType=cv2.BORDER_REPLICATE)
        for p in np.asarray(probs, dtype=np.float32)
    ])
    if sigma_z >= 0.2 and len(out) > 1:
        flat = cv2.GaussianBlur(out.reshape(len(out), -1), (1, _kernel(sigma_z)), sigmaX=0, sigmaY=sigma_z, borderType=cv2.BORDER_REPLICATE)
        out = flat.reshape(out.shape)
    return out


def _kernel(sigma: float) -> int:
    """An odd Gaussian kernel size reaching 3 sigma each side."""
    return 2 * int(np.ceil(3 * sigma)) + 1


def end_zone(core: np.ndarray, fraction: float = END_FRACTION) -> np.ndarray:
    """Voxels in the first or last ``fraction`` of ``core``'s extent along any of its three axes,
    and beyond that extent; all False when ``core`` is empty."""
    zone = np.zeros(core.shape, dtype=bool)
    for axis in range(3):
        present = np.flatnonzero(core.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return zone
        first, last = int(present[0]), int(present[-1])
        width = max(1, int(round((last - first + 1) * fraction)))
        index = np.arange(core.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
        zone |= (index < first + width) | (index > last - width)
    return zone


def valley_threshold(probs: np.ndarray, low: float, high: float, window: float, fallback: float) -> float:
    """The threshold in [``low``, ``high``] (0.01 steps) with the fewest of ``probs`` within
    ``window``/2 of it; of equal counts the one nearest ``fallback``."""
    flat = np.ascontiguousarray(probs, dtype=np.float32).reshape(-1, probs.shape[-1])
    counts = cv2.calcHist([flat], [0], None, [101], [-0.005, 1.005]).ravel().astype(np.int64)  # bin i: i/100 +- 0.005; a third of numpy's time
    below = np.concatenate([[0], np.cumsum(counts)])  # below[i]: probabilities in bins < i
    half = int(round(window * 50))
    cuts = np.arange(int(round(low * 100)), int(round(high * 100)) + 1)
    near = below[np.minimum(cuts + half, 100) + 1] - below[np.maximum(cuts - half, 0)]
    best = min(range(len(cuts)), key=lambda i: (near[i], abs(cuts[i] / 100 - fallback)))
    return float(cuts[best]) / 100


def takes_3d_steps(spacing: Spacing | None, probs: np.ndarray, inference: InferenceSpec, echo_planar: bool) -> TypeGuard[Spacing]:
    """Whether a stack gets the steps after the threshold: its views were fused (one regular
    volume, ``InferenceSpec.fuses``) and it is not an EPI."""
    return not echo_planar and spacing is not None and inference.fuses(len(probs), spacing[0])


def brain_voxels(probs: np.ndarray, inference: InferenceSpec, echo_planar: bool, contrast_enhanced: bool, spacing: Spacing | None,
                 min_brain_ml: float = MIN_BRAIN_ML) -> np.ndarray:
    """The raw brain mask (bool, ``probs``' shape) before ``clean_mask``.

    ``spacing`` is the stack's (slice, row, column) spacing when it is one regular volume, else
    None. Unless its three views were fused (``InferenceSpec.fuses``), and for an EPI, only the
    threshold applies. The ends are taken from the largest
    component at the main threshold, and only when that is large enough to be a brain.
    """
    threshold = inference.threshold_for(echo_planar, contrast_enhanced)
    if not takes_3d_steps(spacing, probs, inference, echo_planar):
        return probs >= threshold
    if inference.smooth_mm > 0:
        probs = smooth_probabilities(probs, spacing, inference.smooth_mm)
    if inference.valley is not None:
        threshold = valley_threshold(probs, *inference.valley, inference.valley_window, threshold)
    mask = probs >= threshold
    if inference.end_threshold is None:
        return mask
    core = largest_component(mask)
    if core.sum() * float(np.prod(spacing)) / 1000.0 < min_brain_ml:
        return mask
    return np.where(end_zone(core), probs >= inference.end_threshold, mask)


def cut_and_clean(probs: np.ndarray, image: np.ndarray, inference: InferenceSpec, echo_planar: bool, contrast_enhanced: bool,
                  spacing: Spacing | None, voxel_ml: float | None, min_brain_ml: float = MIN_BRAIN_ML) -> CleanedMask:
    """The node's brain mask from the probabilities: ``brain_voxels``, then ``clean_mask``; on a
    fused series acquired after a contrast agent (not an EPI) with ``contrast_rim`` set, the bright
    rim trimmed from that mask (``image``: the intensities, ``probs``' shape) and cleaned again."""
    factor = inference.contrast_rim
    if factor is None or not contrast_enhanced or not takes_3d_steps(spacing, probs, inference, echo_planar):
        return clean_mask(brain_voxels(probs, inference, echo_planar, contrast_enhanced, spacing, min_brain_ml), voxel_ml, min_brain_ml)
    if inference.smooth_mm > 0:  # smoothed once, for the cut and for the rim
        probs, inference = smooth_probabilities(probs, spacing, inference.smooth_mm), replace(inference, smooth_mm=0.0)
    cleaned = clean_mask(brain_voxels(probs, inference, echo_planar, contrast_enhanced, spacing, min_brain_ml), voxel_ml, min_brain_ml)
    if not cleaned.mask.any():
        return cleaned
    keep = probs >= inference.contrast_rim_below if inference.contrast_rim_below is not None else None
    trimmed = clean_mask(trim_bright_rim(cleaned.mask, image, spacing, factor, keep), voxel_ml, min_brain_ml)
    return CleanedMask(trimmed.mask, cleaned.notes + trimmed.notes, cleaned.removed_voxels + int(cleaned.mask.sum() - trimmed.mask.sum()))
