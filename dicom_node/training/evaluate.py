"""Scoring a network on whole cases, through the same pre- and post-processing as the node."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dicom_node.imaging.model_info import ArchSpec
from dicom_node.imaging.normalize import Letterbox, intensity_window, normalize
from dicom_node.imaging.postprocess import clean_mask
from dicom_node.training.data import Case, oriented_stack
from dicom_node.training.metrics import series_metrics

AXIS_NAMES = {0: "native", 1: "reformat-1", 2: "reformat-2"}
NIFTI_AXIS_NAMES = {0: "sagittal", 1: "axial", 2: "coronal"}


@torch.no_grad()
def predict_probabilities(network: nn.Module, arch: ArchSpec, pixels: np.ndarray, pixel_spacing: tuple[float, float] | None, batch_size: int = 16) -> np.ndarray:
    """Brain probability per pixel, ``(n, rows, cols)`` float32: the segmenter's path, with sigmoid,
    in fp32 on the network's device."""
    network.eval()
    device = next(network.parameters()).device
    volume = normalize(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(device), intensity_window(pixels))
    box = Letterbox.fit(pixels.shape[1], pixels.shape[2], arch.input_size, pixel_spacing)
    out = np.empty(pixels.shape, dtype=np.float32)
    for start in range(0, pixels.shape[0], batch_size):
        logits = network(box.to_network(volume[start : start + batch_size]))
        logit = logits[:, :1] if logits.shape[1] == 1 else logits[:, 1:2] - logits[:, :1]
        out[start : start + batch_size] = torch.sigmoid(box.from_network(logit.float())).cpu().numpy()
    return out


def evaluate_case(network: nn.Module, arch: ArchSpec, case: Case, axes: Sequence[int] | str = "native") -> dict[str, dict[str, float]]:
    """Table-2 metrics of ``case`` per orientation, after the node's post-processing.

    ``axes="native"`` scores a DICOM series as acquired (NIfTI volumes in all three orientations).
    """
    chosen: Sequence[int]
    if axes == "native":
        chosen = (0,) if case.kind == "dicom" else (0, 1, 2)
    elif axes == "all":
        chosen = (0, 1, 2)
    else:
        chosen = [int(a) for a in axes]
    names = NIFTI_AXIS_NAMES if case.kind == "nifti" else AXIS_NAMES
    results = {}
    for axis in chosen:
        stack, spacing = oriented_stack(case.volume, case.spacing, axis)
        ref, _ = oriented_stack(case.mask, case.spacing, axis)
        prob = predict_probabilities(network, arch, stack, spacing)
        voxel_ml = float(np.prod(case.spacing)) / 1000.0
        pred = clean_mask(prob > 0.5, voxel_ml).mask
        results[f"{case.name}/{names[axis]}"] = series_metrics(pred, ref, prob)
    return results
