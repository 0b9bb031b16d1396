"""Remove what is anatomically implausible from a raw brain mask.

The brain is one connected object: keep the largest 3D connected component (8-connected in the
slice, face-connected between neighbouring slices) and fill holes slice by slice. A hole enclosed
in 3D is enclosed in every slice that cuts it, so per-slice filling covers 3D holes too. When
what is left is smaller than ``min_brain_ml`` the series has no brain (a phantom, a localizer):
the mask is cleared and a note says so.

Built on OpenCV's 2D labelling plus a union-find across slices, so it needs no SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

MIN_BRAIN_ML = 10.0
MIN_BRAIN_VOXELS = 1000  # used when the voxel size is unknown


@dataclass
class CleanedMask:
    mask: np.ndarray  # bool (n, rows, cols)
    notes: list[str] = field(default_factory=list)
    removed_voxels: int = 0


def label_3d(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 3D connected components of a bool ``(n, rows, cols)`` mask; 0 is background."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for z in range(mask.shape[0]):
        count, slice_labels = cv2.connectedComponents(mask[z].astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        if count > 1:
            slice_labels[slice_labels > 0] += offset
            labels[z] = slice_labels
            offset += count - 1
    if offset == 0:
        return labels, 0
    parent = np.arange(offset + 1, dtype=np.int64)

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = int(parent[node])
        return node

    for z in range(mask.shape[0] - 1):
        both = (labels[z] > 0) & (labels[z + 1] > 0)
        if not both.any():
            continue
        codes = np.unique(labels[z][both].astype(np.int64) * (offset + 1) + labels[z + 1][both])
        for a, b in zip(codes // (offset + 1), codes % (offset + 1)):
            root_a, root_b = find(int(a)), find(int(b))
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    while True:  # flatten the forest so every label points at its root
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent = grand
    unique_roots, dense_of_label = np.unique(parent, return_inverse=True)  # root 0 is background
    return dense_of_label.astype(np.int32)[labels], int(len(unique_roots) - 1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component of ``mask`` (empty in, empty out)."""
    labels, count = label_3d(mask)
    if count <= 1:
        return mask.copy()
    sizes = np.bincount(labels.reshape(-1))
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not reach the slice border, slice by slice."""
    filled = mask.copy()
    for z in range(mask.shape[0]):
        if not mask[z].any():
            continue
        background = np.pad(~mask[z], 1, constant_values=True).astype(np.uint8)
        _, labels = cv2.connectedComponents(background, connectivity=4, ltype=cv2.CV_32S)
        outside = labels[0, 0]
        holes = (labels[1:-1, 1:-1] != outside) & (labels[1:-1, 1:-1] > 0)
        filled[z] |= holes
    return filled


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box (one slice per axis) holding every voxel of ``mask``; None when empty.
    Outside it all is background, so components and 2D holes inside it are those of the whole."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(present):
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def clean_mask(mask: np.ndarray, voxel_ml: float | None, min_brain_ml: float = MIN_BRAIN_ML) -> CleanedMask:
    """Largest 3D component, holes filled, and cleared with a note when too small to be a brain."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be (slices, rows, cols), not shape {mask.shape}.")
    raw = mask.astype(bool, copy=False)
    kept = np.zeros_like(raw)
    box = bounding_box(raw)
    if box is not None:  # the same result on the brain's box alone, in a fraction of the time
        kept[box] = fill_holes_2d(largest_component(raw[box]))
    removed = int(raw.sum() - (raw & kept).sum())
    notes: list[str] = []
    voxels = int(kept.sum())
    if voxel_ml is not None:
        too_small, size_text = voxels * voxel_ml < min_brain_ml, f"{voxels * voxel_ml:.1f} ml"
        limit_text = f"{min_brain_ml:g} ml"
    else:
        too_small, size_text, limit_text = voxels < MIN_BRAIN_VOXELS, f"{voxels} voxels", f"{MIN_BRAIN_VOXELS} voxels"
    if voxels == 0:
        notes.append("No brain found: the network marked no brain voxels.")
    elif too_small:
        notes.append(f"No brain found: the largest component ({size_text}) is below {limit_text}; mask cleared.")
        kept = np.zeros_like(kept)
    return CleanedMask(mask=kept, notes=notes, removed_voxels=removed)


def _disk(radius_px: tuple[int, int]) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px[1] + 1, 2 * radius_px[0] + 1))


def _morph3d(mask: np.ndarray, spacing: tuple[float, float, float], radius_mm: float, erode: bool) -> np.ndarray:
    """Erode or dilate a bool ``(n, rows, cols)`` mask by a ``radius_mm`` cylinder (disk in-plane,
    slab through-plane), so the radius is the same in millimetres whatever the voxel size."""
    # radii capped at the stack's size: beyond it they change nothing, and a junk spacing (0.001 mm) would build a huge kernel
    rz = min(int(radius_mm // max(spacing[0], 1e-3)), mask.shape[0])
    kernel = _disk((min(int(radius_mm // max(spacing[1], 1e-3)), mask.shape[1]), min(int(radius_mm // max(spacing[2], 1e-3)), mask.shape[2])))
    op = cv2.erode if erode else cv2.dilate
    planar = np.stack([op(s.astype(np.uint8), kernel, borderValue=0) for s in mask]).astype(bool)
    if rz == 0:
        return planar
    out = planar.copy()
    for shift in range(1, rz + 1):
        if erode:
            out[shift:] &= planar[:-shift]
            out[:-shift] &= planar[shift:]
            out[:shift] = False
            out[-shift:] = False
        else:
            out[shift:] |= planar[:-shift]
            out[:-shift] |= planar[shift:]
    return out


ENHANCING_RIM_MM = 3.0


def trim_bright_rim(mask: np.ndarray, image: np.ndarray, spacing: tuple[float, float, float], factor: float,
                    keep: np.ndarray | None = None) -> np.ndarray:
    """``mask`` without the voxels within ``ENHANCING_RIM_MM`` of its surface whose ``image``
    intensity is at least ``factor`` times the median intensity inside it, except those in ``keep``.
    Unchanged when that median is not positive, where "times as bright" means nothing.

    After a contrast agent the dura, the sinuses and the cortical veins at the brain's surface are
    bright, and the network takes them for brain (MODEL_CARD.md, "Trimming the enhancing rim").
    """
    box = bounding_box(mask)
    median = float(np.median(image[mask])) if box is not None else 0.0
    if box is None or not median > 0:  # no brain, or intensities that are not an MR magnitude (a junk rescale, NaN): nothing is "bright"
        return mask
    inside = mask[box]  # outside the box all is background, so the rim is the same found within it
    drop = inside & ~_morph3d(inside, spacing, ENHANCING_RIM_MM, erode=True) & (image[box] >= factor * median)
    if keep is not None:
        drop &= ~keep[box]
    trimmed = mask.copy()
    trimmed[box] &= ~drop
    return trimmed


def erode_connect(mask: np.ndarray, spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Cut what hangs on the brain by bridges thinner than ``2 * radius_mm`` (optic nerves, skull,
    neck): erode, keep the largest component, grow it back within the original mask."""
    core = largest_component(_morph3d(mask, spacing, radius_mm, erode=True))
    if not core.any():
        return mask.copy()
    return _morph3d(core, spacing, radius_mm, erode=False) & mask
