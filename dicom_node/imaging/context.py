"""Through-plane context: a slice shown to the network between its two neighbours.

A network that sees one slice cannot tell the last slice of the brain from the one before it. With
``ArchSpec.in_channels`` 3 its input is the slice ``context_mm`` below, the slice, and the slice
``context_mm`` above, along the stack the slice belongs to (the acquired stack or one of the three
views). The offset is in whole slices, at least one, so a thick-slice stack shows its next slices;
at the stack's ends the nearest slice stands in for the missing neighbour. Training builds its
inputs with the same functions (``dicom_node.training.data``).
"""

from __future__ import annotations

import numpy as np
import torch

from dicom_node.imaging.normalize import Letterbox


def context_offset(spacing_mm: float | None, context_mm: float) -> int:
    """Slices between a slice and each neighbour: ``context_mm`` away, at least one; 0 when the
    stack has no known spacing (a time series, scattered slices) or there is no context."""
    if context_mm <= 0 or not spacing_mm or spacing_mm <= 0:
        return 0
    return max(1, round(context_mm / spacing_mm))


def context_indices(indices: np.ndarray, n: int, offset: int, channels: int) -> np.ndarray:
    """``(len(indices), channels)`` slice indices: each slice alone (1 channel), or below, itself,
    above (3 channels), clipped to the stack of ``n`` slices."""
    if channels == 1:
        return indices[:, None]
    return np.clip(indices[:, None] + np.array([-offset, 0, offset]), 0, n - 1)


def network_input(stack: torch.Tensor, indices: np.ndarray, box: Letterbox, channels: int, offset: int) -> torch.Tensor:
    """``(len(indices), channels, size, size)``: the slices ``indices`` of the ``(n, rows, cols)``
    ``stack`` with their neighbours, letterboxed."""
    picked = torch.from_numpy(context_indices(np.asarray(indices), stack.shape[0], offset, channels).reshape(-1)).to(stack.device)
    x = box.to_network(stack[picked])
    return x.reshape(len(indices), channels, box.size, box.size)
