"""Tri-planar inference: the 2D network run in the three orthogonal views of a volume, fused.

A network that sees one slice at a time cannot tell the skull base from the temporal lobes in an
axial slice; in a sagittal or coronal slice through the same voxels it can. Averaging the brain
probabilities of the three views cut the errors at the ends of the brain (models/MODEL_CARD.md).

Cost is kept near one pass over the series: every view is fitted to the network with one common
scale (so the views share one grid of ``size`` voxels along the volume's longest physical side),
only every ``step``-th grid slice of each view goes through the network, and the views' coarse
probabilities are averaged on that grid and brought to the series' matrix by one trilinear
upsampling. Slices between sampled ones are interpolated linearly.

Each view is shown to the network head up, as it learnt: when the patient's head-foot axis lies in
a view's plane, it runs down the rows with the head at the top (an axial series' reformats would
otherwise be sagittal and coronal slices lying on their side). This needs the direction of each
volume axis in patient coordinates (DICOM LPS: +z is the head); without them the views are run
as they fall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dicom_node.imaging.context import context_offset, network_input
from dicom_node.imaging.network import brain_logit
from dicom_node.imaging.normalize import Letterbox

Direction = Sequence[float]  # a unit vector in patient coordinates (LPS)
Runner = Callable[[torch.Tensor], torch.Tensor]  # (n, channels, size, size) -> logits (n, classes, size, size)

VIEW_AXES = {0: (0, 1, 2), 1: (1, 2, 0), 2: (2, 1, 0)}  # volume axes -> view axes, here and in training's oriented_stack


def common_grid(shape: Sequence[int], spacing: Sequence[float], size: int) -> tuple[float, tuple[int, int, int]]:
    """(mm per grid voxel, grid shape): the volume's longest physical side spans ``size`` voxels and
    the others their physical share, so each view keeps its aspect (a stack of 24 thick slices gets
    more grid slices than it has; only distinct source slices go through the network)."""
    extents = [n * s for n, s in zip(shape, spacing)]
    mm = max(extents) / size
    grid = tuple(max(1, min(size, round(e / mm))) for e in extents)
    return mm, grid  # type: ignore[return-value]


def _box(view_shape: Sequence[int], view_grid: Sequence[int], input_size: int) -> Letterbox:
    rows, cols = view_grid[1], view_grid[2]
    return Letterbox(view_shape[1], view_shape[2], input_size, rows, cols, (input_size - rows) // 2, (input_size - cols) // 2)


def head_up(rows: Direction | None, cols: Direction | None) -> tuple[bool, bool]:
    """(swap rows and columns, then flip the rows) so that a slice whose index directions are
    ``rows`` and ``cols`` shows the head at the top; (False, False) when the head-foot axis is
    not in its plane or the directions are unknown."""
    if rows is None or cols is None:
        return False, False
    swap = abs(cols[2]) > abs(rows[2])
    down = cols if swap else rows
    if abs(down[2]) < 0.5:  # an axial plane: no head to put up
        return False, False
    return swap, down[2] > 0  # rows running toward the head: flip them


def view_probabilities(
    run: Runner, volume: torch.Tensor, axis: int, grid: Sequence[int], input_size: int, step: int, batch_size: int,
    directions: Sequence[Direction] | None = None, channels: int = 1, offset: int = 0,
) -> torch.Tensor:
    """Brain probability on the common ``grid`` (volume axes) from the slices of one view.

    ``volume`` is the normalised ``(n, rows, cols)`` series. The view's grid slices are mapped to
    source slices (nearest), every ``step``-th one (and the last) is run, and the rest are
    interpolated linearly between them. With 3 ``channels`` each runs between its neighbours
    ``offset`` source slices away (``dicom_node.imaging.context``).
    """
    order = VIEW_AXES[axis]
    swap, flip = head_up(*(directions[a] for a in order[1:])) if directions is not None else (False, False)
    if swap:
        order = (order[0], order[2], order[1])
    view = volume.permute(*order)
    if flip:
        view = view.flip(1)
    view_grid = [grid[a] for a in order]
    n, depth = view.shape[0], view_grid[0]
    centres = (np.arange(depth) + 0.5) * n / depth - 0.5  # grid slices in source-slice coordinates
    wanted = np.unique(np.concatenate([np.arange(0, depth, max(1, step)), [depth - 1]]))
    sources = np.unique(np.clip(np.round(centres[wanted]), 0, n - 1).astype(np.int64))
    box = _box(view.shape, view_grid, input_size)
    probs = []
    for start in range(0, sources.size, batch_size):
        out = run(network_input(view, sources[start : start + batch_size], box, channels, offset))
        probs.append(torch.sigmoid(brain_logit(out.to(view.device)).float())[:, 0, box.top : box.top + box.inner_rows, box.left : box.left + box.inner_cols])
    sampled = torch.cat(probs)  # (len(sources), grid rows, grid cols) of the view
    # linear interpolation from the sampled source slices to every grid slice
    position = np.clip(centres, sources[0], sources[-1])
    upper = np.clip(np.searchsorted(sources, position), 1, max(1, sources.size - 1))
    lower = upper - 1 if sources.size > 1 else np.zeros_like(upper)
    upper = np.minimum(upper, sources.size - 1)
    span = np.maximum(sources[upper] - sources[lower], 1)
    weight = torch.from_numpy(((position - sources[lower]) / span).astype(np.float32)).to(sampled.device)[:, None, None]
    lo, hi = torch.from_numpy(lower).to(sampled.device), torch.from_numpy(upper).to(sampled.device)
    on_grid = sampled[lo] * (1 - weight) + sampled[hi] * weight
    if flip:
        on_grid = on_grid.flip(1)
    return on_grid.permute(*np.argsort(order).tolist())


def triplanar_probabilities(
    run: Runner, volume: torch.Tensor, spacing: Sequence[float], grid_size: int, input_size: int | None = None, step: int = 2, batch_size: int = 16,
    directions: Sequence[Direction] | None = None, channels: int = 1, context_mm: float = 0.0,
) -> torch.Tensor:
    """Mean brain probability of the three views, ``(n, rows, cols)`` like ``volume``.

    ``spacing`` is (slice spacing, row spacing, column spacing) in mm; ``volume`` is normalised.
    The head spans ``grid_size`` pixels of the network's ``input_size`` (default: the same).
    ``directions`` are the patient directions of increasing index along the volume's three axes.
    A network of 3 ``channels`` sees each slice between its neighbours ``context_mm`` away.
    """
    input_size = input_size or grid_size
    if grid_size > input_size:
        raise ValueError(f"the grid ({grid_size}) cannot be larger than the network input ({input_size}).")
    _, grid = common_grid(volume.shape, spacing, grid_size)
    fused = sum(
        view_probabilities(run, volume, axis, grid, input_size, step, batch_size, directions, channels, context_offset(spacing[axis], context_mm))
        for axis in (0, 1, 2)
    ) / 3.0
    assert isinstance(fused, torch.Tensor)
    return F.interpolate(fused[None, None], size=tuple(volume.shape), mode="trilinear", align_corners=False)[0, 0]
