"""Scoring a network on whole cases, through the same pre- and post-processing as the node."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dicom_node.imaging.model_info import ArchSpec, InferenceSpec, ModelInfo
from dicom_node.imaging.postprocess import clean_mask
from dicom_node.imaging.segmenter import brain_probabilities
from dicom_node.imaging.thresholding import cut_and_clean
from dicom_node.imaging.triplanar import Direction
from dicom_node.training.data import Case, oriented_stack, stack_directions
from dicom_node.training.metrics import series_metrics

AXIS_NAMES = {0: "native", 1: "reformat-1", 2: "reformat-2"}
NIFTI_AXIS_NAMES = {0: "sagittal", 1: "axial", 2: "coronal"}


def predict_probabilities(
    network: nn.Module, info: ModelInfo, pixels: np.ndarray, spacing: tuple[float, float, float], directions: Sequence[Direction] | None = None, batch_size: int = 16
) -> np.ndarray:
    """Brain probability per pixel, ``(n, rows, cols)`` float32: the segmenter's path (its views
    and grid), with ``network`` in fp32 on its own device. ``spacing`` is (slice, row, column)."""
    network.eval()
    device = next(network.parameters()).device
    with torch.no_grad():
        return brain_probabilities(network, pixels, (spacing[1], spacing[2]), spacing[0], info, batch_size, device, directions)


def evaluate_case(
    network: nn.Module,
    model: ArchSpec | ModelInfo,
    case: Case,
    axes: Sequence[int] | str = "native",
    thresholds: Sequence[float] = (),
    min_reference_fraction: float = 0.0,
    variants: Mapping[str, InferenceSpec] | None = None,
    kept: MutableMapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Table-2 metrics of ``case`` per orientation, after the node's inference and post-processing
    (``model``'s views, threshold for the case's contrast and 3D steps; an ``ArchSpec`` alone means
    one view at 0.5).

    ``axes="native"`` scores a DICOM series as acquired (NIfTI volumes in all three orientations).
    Each of ``thresholds`` adds rows ``NAME@T`` scored at that threshold alone instead, and each
    of ``variants`` rows ``NAME@KEY`` cut its way (``brain_voxels``), from the same probabilities
    (which the variants' views must not change): held-out folds then tell which to ship. ``min_reference_fraction`` > 0
    scores only the slices whose reference mask is at least that fraction of its largest slice: the
    ends of a slab, where a 3D reference tool fails, are left out (inference still sees them all).
    ``kept`` receives each orientation's probabilities (by its name, as ``score_kept`` takes them).
    """
    info = model if isinstance(model, ModelInfo) else ModelInfo("evaluated", "-", model)
    results = {}
    for axis in _axes(case, axes):
        stack, in_plane = oriented_stack(case.volume, case.spacing, axis)
        spacing = (float(case.spacing[axis]), *in_plane)
        prob = predict_probabilities(network, info, stack, spacing, stack_directions(case, axis))
        if kept is not None:
            kept[_axis_names(case)[axis]] = prob
        results.update(_score(prob, case, axis, info.inference, thresholds, min_reference_fraction, variants))
    return results


def score_kept(
    kept: Mapping[str, np.ndarray],
    inference: InferenceSpec,
    case: Case,
    thresholds: Sequence[float] = (),
    min_reference_fraction: float = 0.0,
    variants: Mapping[str, InferenceSpec] | None = None,
) -> dict[str, dict[str, float]]:
    """``evaluate_case``'s rows from probabilities it kept (``load_probabilities``), cut as
    ``inference`` says: post-processing scored on a fold's held-out head without its network."""
    by_name = {name: axis for axis, name in _axis_names(case).items()}
    results = {}
    for name, prob in kept.items():
        results.update(_score(prob, case, by_name[name], inference, thresholds, min_reference_fraction, variants))
    return results


def save_probabilities(path: Path, kept: Mapping[str, np.ndarray]) -> Path:
    """``kept`` in 1/255 steps, compressed (0.4-2 MB an orientation of a held-out head):
    a fold's probabilities outlive its network, so a post-processing rule is calibrated on every
    fold without training them again."""
    np.savez_compressed(path, **{name: np.rint(np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8) for name, prob in kept.items()})
    return path


def load_probabilities(path: Path) -> dict[str, np.ndarray]:
    """The probabilities ``save_probabilities`` wrote, float32 again."""
    with np.load(path) as saved:
        return {name: saved[name].astype(np.float32) / 255.0 for name in saved.files}


def _axes(case: Case, axes: Sequence[int] | str) -> Sequence[int]:
    if axes == "native":
        return (0,) if case.kind == "dicom" else (0, 1, 2)
    if axes == "all":
        return (0, 1, 2)
    return [int(a) for a in axes]


def _axis_names(case: Case) -> dict[int, str]:
    return NIFTI_AXIS_NAMES if case.kind == "nifti" else AXIS_NAMES


def _score(prob: np.ndarray, case: Case, axis: int, inference: InferenceSpec, thresholds: Sequence[float],
           min_reference_fraction: float, variants: Mapping[str, InferenceSpec] | None) -> dict[str, dict[str, float]]:
    """The rows of one orientation of ``case`` from its probabilities ``prob``."""
    ref, in_plane = oriented_stack(case.mask, case.spacing, axis)
    spacing = (float(case.spacing[axis]), *in_plane)
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    name = f"{case.name}/{_axis_names(case)[axis]}"
    areas = ref.reshape(len(ref), -1).sum(axis=1)
    scored = areas >= min_reference_fraction * areas.max()  # every slice at 0
    image, _ = oriented_stack(case.volume, case.spacing, axis)

    def node(spec: InferenceSpec) -> np.ndarray:
        return cut_and_clean(prob, image, spec, case.echo_planar, case.contrast_enhanced, spacing, voxel_ml).mask

    rows = ((node(inference), name), *((clean_mask(prob >= t, voxel_ml).mask, f"{name}@{t:g}") for t in thresholds),
            *((node(spec), f"{name}@{key}") for key, spec in (variants or {}).items()))
    results = {}
    for pred, key in rows:
        results[key] = series_metrics(pred[scored], ref[scored], prob[scored])
    return results
