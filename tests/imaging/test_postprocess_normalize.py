"""Mask clean-up (largest 3D component, holes, no-brain) and the network-size letterbox."""

from __future__ import annotations

import numpy as np
import torch

from dicom_node.imaging.normalize import Letterbox, intensity_window
from dicom_node.imaging.postprocess import _morph3d, bounding_box, clean_mask, fill_holes_2d, label_3d, largest_component


def test_largest_component_drops_islands_and_links_slices():
    mask = np.zeros((4, 20, 20), dtype=bool)
    mask[0:3, 5:15, 5:15] = True  # one 3D blob over three slices
    mask[3, 0:2, 0:2] = True  # an island on the last slice, not touching the blob
    mask[1, 18:20, 18:20] = True  # an island in the middle slice
    labels, count = label_3d(mask)
    assert count == 3
    kept = largest_component(mask)
    assert kept.sum() == 300 and not kept[3].any() and not kept[1, 18:, 18:].any()


def test_holes_are_filled_per_slice_but_open_bays_are_not():
    mask = np.zeros((1, 20, 20), dtype=bool)
    mask[0, 2:18, 2:18] = True
    mask[0, 8:12, 8:12] = False  # a hole
    mask[0, 0:18, 15:17] = False  # a bay open to the border... reaches row 0
    filled = fill_holes_2d(mask)
    assert filled[0, 8:12, 8:12].all()
    assert not filled[0, 5, 15]


def test_too_small_is_cleared_with_a_note():
    mask = np.zeros((3, 10, 10), dtype=bool)
    mask[1, 4:6, 4:6] = True
    cleaned = clean_mask(mask, voxel_ml=0.001, min_brain_ml=10)
    assert not cleaned.mask.any()
    assert cleaned.notes and cleaned.notes[0].startswith("No brain found")
    assert not clean_mask(np.zeros((2, 4, 4), dtype=bool), voxel_ml=1.0).mask.any()


def test_cleaning_the_brains_box_alone_gives_what_cleaning_the_whole_stack_gives():
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = np.zeros((12, 30, 30), dtype=bool)
        region = (slice(rng.integers(0, 3), rng.integers(9, 12)), slice(rng.integers(1, 8), rng.integers(20, 29)), slice(rng.integers(1, 8), rng.integers(20, 29)))
        mask[region] = rng.random(mask[region].shape) < 0.7  # holes inside, islands and bays at the box's edge
        box = bounding_box(mask)
        assert box is not None and mask[box].sum() == mask.sum() and mask[box].size < mask.size
        assert np.array_equal(clean_mask(mask, voxel_ml=1.0, min_brain_ml=0).mask, fill_holes_2d(largest_component(mask)))
    assert bounding_box(np.zeros((2, 3, 3), dtype=bool)) is None


def test_a_junk_pixel_spacing_gives_a_kernel_no_larger_than_the_stack():
    dot = np.zeros((5, 40, 40), dtype=bool)
    dot[2, 20, 20] = True
    assert _morph3d(dot, (1e-4, 1e-4, 1e-4), 3.0, erode=False).all()  # 3 mm is 30,000 pixels: the whole stack, at once
    assert not _morph3d(~dot, (1e-4, 1e-4, 1e-4), 3.0, erode=True).any()


def test_intensity_window_ignores_zero_background():
    volume = np.zeros((2, 10, 10), dtype=np.float32)
    volume[:, :5] = np.linspace(10, 20, 100, dtype=np.float32).reshape(2, 5, 10)
    lo, hi = intensity_window(volume)
    assert 10 <= lo < 11 and 19 < hi <= 20
    assert intensity_window(np.zeros((1, 4, 4), dtype=np.float32)) == (0.0, 1.0)


def test_letterbox_keeps_aspect_and_round_trips():
    box = Letterbox.fit(64, 128, 160, (1.0, 1.0))
    assert (box.inner_rows, box.inner_cols) == (80, 160) and box.top == 40
    slices = torch.zeros((2, 64, 128))
    slices[:, 16:48, 32:96] = 1.0
    network = box.to_network(slices)
    assert network.shape == (2, 1, 160, 160) and network[:, :, :40].abs().sum() == 0
    back = box.from_network(network)
    assert back.shape == (2, 64, 128)
    assert ((back > 0.5) == (slices > 0.5)).float().mean() > 0.99


def test_letterbox_uses_physical_aspect():
    box = Letterbox.fit(128, 128, 160, (2.0, 1.0))  # rows twice as far apart
    assert (box.inner_rows, box.inner_cols) == (160, 80)
