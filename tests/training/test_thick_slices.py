"""Thick-slice copies of real heads (recipe 1.7.0): a thin head as a 2D axial acquisition."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dicom_node.training.data import axial_axis, discover_cases, load_nifti_case, thick_slice_copy

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MNI = SHARED / "volumes" / "mni152-2mm"


def test_a_2mm_head_becomes_6mm_axial_slabs_with_their_partial_volume() -> None:
    head = load_nifti_case(MNI / "t1.nii.gz", MNI / "brainmask_deepbet.nii.gz")
    assert axial_axis(head) == 1  # the canonical NIfTI layout: rows run from head to foot
    copy = thick_slice_copy(head, 6.0, draw_weight=0.5)
    assert copy is not None
    n = head.volume.shape[1] // 3
    assert copy.volume.shape == (head.volume.shape[0], n, head.volume.shape[2]) == copy.mask.shape
    assert copy.spacing == pytest.approx((head.spacing[0], 6.0, head.spacing[2]))
    assert (copy.name, copy.draw_weight, copy.native_axis) == ("mni152-2mm-axial6mm", 0.5, 1)
    middle = n // 2
    assert np.allclose(copy.volume[:, middle], head.volume[:, 3 * middle : 3 * middle + 3].mean(axis=1))
    # brain where at least two of the slab's three slices are
    assert np.array_equal(copy.mask[:, middle], head.mask[:, 3 * middle : 3 * middle + 3].sum(axis=1) >= 2)
    brain_ml = head.mask.sum() * np.prod(head.spacing) / 1000
    assert copy.mask.sum() * np.prod(copy.spacing) / 1000 == pytest.approx(brain_ml, rel=0.03)
    assert thick_slice_copy(copy, 6.0) is None  # already that thick: no copy


def test_a_sagittal_dicom_head_is_cut_across_its_rows() -> None:
    """A sagittal scanner series stores head-foot along its rows: the axial slabs run across them."""
    (head,) = discover_cases([SHARED / "dicom" / "sag-t1-siemens-skyra", SHARED / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm"])
    assert axial_axis(head) == 1
    copy = thick_slice_copy(head, 6.0)
    assert copy is not None and copy.series is None
    assert copy.volume.shape[0] == head.volume.shape[0] and copy.volume.shape[2] == head.volume.shape[2]
    assert copy.spacing[1] == pytest.approx(6.0, abs=0.1) and copy.mask.any()


def test_a_head_without_directions_is_refused_by_name() -> None:
    head = load_nifti_case(MNI / "t1.nii.gz", MNI / "brainmask_deepbet.nii.gz")
    with pytest.raises(ValueError, match="mni152-2mm: the patient directions"):
        thick_slice_copy(replace(head, directions=None), 6.0)
