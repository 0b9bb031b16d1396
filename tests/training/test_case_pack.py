"""Cases packed into one file (for a GPU machine without the data folders) come back unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dicom_node.training.data import discover_cases, load_cases, save_cases

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_real_cases_round_trip_through_a_pack(tmp_path: Path) -> None:
    siemens = [SHARED / "dicom" / "sag-t1-siemens-skyra", SHARED / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm"]
    cases = discover_cases([*siemens, SHARED / "volumes" / "mni152-2mm"], negatives=[SHARED / "dicom" / "epi-ge-discovery"])
    assert sorted(c.kind + str(c.negative) for c in cases) == ["dicomFalse", "dicomTrue", "niftiFalse"]
    cases[0].volume[0, 0, 0] = 0.25  # one non-integer voxel: this volume must be kept as float32
    back = load_cases(save_cases(tmp_path / "cases.npz", cases))
    assert [c.name for c in back] == [c.name for c in cases]
    for before, after in zip(cases, back):
        assert after.volume.dtype == np.float32 and np.array_equal(after.volume, before.volume)
        assert after.mask.dtype == bool and np.array_equal(after.mask, before.mask)
        assert after.mask.any() != before.negative
        assert (after.spacing, after.kind, after.negative, after.native_axis) == (tuple(before.spacing), before.kind, before.negative, before.native_axis)
        assert after.series is None  # the pack holds arrays, not the DICOM series
