"""The plausibility gate with the shipped model: every real head passes, every non-brain is stopped.

Measured with the shipped model (``dicom_node/models/weights/brain-deeplabv3plus.pt``) on the CPU (volume ml; brain slices / span mm;
largest extent mm; fraction inside the head; fraction of brain voxels on the 2-pixel image border,
measured but not a check, see the module; mean probability):

| case | verdict | ml | slices / mm | extent | in head | border | confidence |
|---|---|---|---|---|---|---|---|
| sag-t1-siemens-skyra | pass | 1471 | 152 / 137 | 170 | 0.99 | 0.000 | 0.967 |
| sag-t1-philips-ingenia | pass | 1575 | 139 / 139 | 172 | 0.97 | 0.000 | 0.958 |
| enhanced-t1-siemens-xa30 | pass | 1628 | 71 / 142 | 170 | 0.83 | 0.000 | 0.943 |
| epi-ge-discovery (volume 1) | pass | 761 | 13 / 65 | 158 | 0.98 | 0.000 | 0.931 |
| mni152-2mm (sagittal / axial) | pass | 1920 / 1903 | 70 / 140 | 182 | 1.00 | 0.000 | 0.972 |
| robex-atlas (sagittal / axial) | pass | 1266 / 1240 | 83 / 124 | 158 | 0.99 | 0.000 | 0.958 |
| ds000031-siemens-3t (sagittal / axial) | pass | 1821 / 1835 | 161 / 145 | 195 | 0.97 | 0.000 | 0.962 |
| seg3d-epilepsy (sagittal / axial) | pass | 1636 / 1595 | 146 / 146 | 179 | 0.99 | 0.001 | 0.959 |
| TrioTim BOLD mosaic (heudiconv) | pass | 974 | 25 / 90 | 156 | 1.00 | 0.000 | 0.941 |
| Prisma b0 mosaic (heudiconv, volume 1) | pass | 1250 | 78 / 117 | 164 | 0.96 | 0.000 | 0.932 |
| t1-phantom-ge-signa (grid phantom) | no-brain | 0 | - | - | - | - | - |
| examples_overlay.dcm (abdomen) | no-brain | 139 | 1 / 4 | 259 | 0.94 | 0.000 | 0.928 |
| MR_small.dcm | no-brain | 0 | - | - | - | - | - |
| heudiconv fmap phase map (1 slice) | no-brain | 95 | 1 / 4 | 195 | 0.03 | 0.000 | 0.935 |
| Skyra localizer plane (3 slices, 18 mm apart) | no-brain | 776 | 3 / 54 | 168 | 1.00 | 0.000 | 0.968 |

The network's confidence does not separate the abdomen (0.93) from heads (0.93-0.97): the gate
rests on anatomy first, and the tests below show each check stopping a real negative by itself.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from dicom_node.imaging.loading import MRSeries, load_series
from dicom_node.imaging.plausibility import DEFAULT_LIMITS, GateLimits, Verdict, check_brain, check_series
from dicom_node.imaging.postprocess import clean_mask
from dicom_node.imaging.segmenter import Segmenter, mean_probability
from dicom_node.training.data import load_nifti_case
from tests.conftest import SHARED_DATA

RELAXED_VOLUME = GateLimits(min_slices=1, min_span_mm=0.0, max_slice_spacing_mm=1e9, min_ml=0.0)


@pytest.fixture(scope="module")
def segmenter(shipped_segmenter: Segmenter) -> Segmenter:
    return shipped_segmenter


def gate(segmenter: Segmenter, series: MRSeries, limits: GateLimits = DEFAULT_LIMITS) -> Verdict:
    brain = segmenter.segment(series)
    return check_series(series, brain.mask, brain.mean_probability, limits)


@pytest.mark.parametrize("folder", ["sag-t1-siemens-skyra", "sag-t1-philips-ingenia", "enhanced-t1-siemens-xa30", "epi-ge-discovery"])
def test_shared_dicom_heads_pass(segmenter: Segmenter, load_named, folder: str) -> None:  # type: ignore[no-untyped-def]
    verdict = gate(segmenter, load_named(folder))
    assert verdict.ok, verdict.reason
    assert verdict.reason.startswith("plausible brain: ")
    assert 700 < verdict.measures["volume_ml"] < 1700 and verdict.measures["confidence"] > 0.9


@pytest.mark.parametrize("name", ["mni152-2mm", "robex-atlas", "ds000031-siemens-3t", "seg3d-epilepsy"])
def test_shared_nifti_heads_pass(segmenter: Segmenter, name: str) -> None:
    folder = SHARED_DATA / "volumes" / name
    case = load_nifti_case(folder / "t1.nii.gz", folder / "brainmask_deepbet.nii.gz")
    spacing = case.spacing
    probs = segmenter.predict_probabilities(case.volume, (spacing[1], spacing[2]), spacing[0])
    mask = clean_mask(probs >= segmenter.info.inference.threshold, spacing[0] * spacing[1] * spacing[2] / 1000).mask
    verdict = check_brain(case.volume, mask, spacing, mean_probability(probs, mask))
    assert verdict.ok, verdict.reason


def test_mosaic_heads_pass(segmenter: Segmenter, heudiconv) -> None:  # type: ignore[no-untyped-def]
    for paths in ([heudiconv / "axasc35.dcm"], sorted((heudiconv / "b0dwiForFmap").glob("*.dcm"))):
        verdict = gate(segmenter, load_series(paths))
        assert verdict.ok, verdict.reason


def test_phantom_and_small_mr_have_no_brain_voxels(segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    for series in (load_named("t1-phantom-ge-signa"), load_series([get_testdata_file("MR_small.dcm")])):
        verdict = gate(segmenter, series)
        assert verdict == Verdict(False, "no brain: the network marked no brain voxels")


def test_the_abdomen_is_stopped_by_its_coverage_and_by_its_extent(segmenter: Segmenter) -> None:
    abdomen = load_series([get_testdata_file("examples_overlay.dcm")])
    verdict = gate(segmenter, abdomen)
    assert not verdict.ok and "spans 1 slice(s) (4 mm)" in verdict.reason
    assert 100 < verdict.measures["volume_ml"] < 200  # the network's "brain" on it
    relaxed = gate(segmenter, abdomen, RELAXED_VOLUME)  # were it a volume, its size alone stops it
    assert not relaxed.ok and re.match(r"no brain: the mask extends 2[5-6]\d mm", relaxed.reason)


def test_a_phase_map_is_stopped_because_its_mask_is_not_on_the_head(segmenter: Segmenter, heudiconv) -> None:  # type: ignore[no-untyped-def]
    phase = load_series(sorted((heudiconv / "01-fmap_acq-3mm").glob("*.dcm")))
    verdict = gate(segmenter, phase)
    assert not verdict.ok and "spans 1 slice(s)" in verdict.reason
    relaxed = gate(segmenter, phase, RELAXED_VOLUME)
    assert not relaxed.ok and "of the mask lies on the head" in relaxed.reason, relaxed.reason


def test_a_localizer_plane_of_a_real_head_is_not_a_volume(segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    skyra = load_named("sag-t1-siemens-skyra")
    plane = load_series([skyra.slices[i].path for i in (76, 96, 116)])
    verdict = gate(segmenter, plane)
    assert not verdict.ok and "spans 3 slice(s)" in verdict.reason
    sparse = gate(segmenter, plane, replace(GateLimits(), min_slices=1, min_span_mm=0.0))
    assert not sparse.ok and "too sparse to be a volume" in sparse.reason


def test_confidence_check_applies(load_named) -> None:  # type: ignore[no-untyped-def]
    skyra = load_named("sag-t1-siemens-skyra")
    mask = np.zeros(skyra.pixels.shape, dtype=bool)
    mask[40:150, 60:200, 50:230] = True  # a brain-sized box, to reach the later checks
    spacing = (skyra.slice_spacing_mm, *skyra.slices[0].pixel_spacing)
    assert check_brain(skyra.pixels, mask, spacing, 0.97, GateLimits(min_inside_head=0.0)).ok
    unsure = check_brain(skyra.pixels, mask, spacing, 0.6, GateLimits(min_inside_head=0.0))
    assert unsure.reason == "no brain: the network's mean confidence in the mask is 0.60 (at least 0.85)"
    assert check_brain(skyra.pixels, mask, spacing, None, GateLimits(min_inside_head=0.0)).ok  # an expert's mask


def test_series_without_geometry_or_with_repeats_is_not_judged(load_named, shared_data) -> None:  # type: ignore[no-untyped-def]
    from dicom_node.imaging.loading import scan_folder

    paths = scan_folder(shared_data / "dicom" / "epi-ge-discovery").series.popitem()[1]
    whole = load_series(paths, all_volumes=True)
    verdict = check_series(whole, np.ones(whole.pixels.shape, dtype=bool), 0.99)
    assert verdict.reason == "no brain: the series holds repeated slice positions; gate one volume"


def test_a_series_without_slice_positions_is_not_judged(load_named) -> None:  # type: ignore[no-untyped-def]
    skyra = load_named("sag-t1-siemens-skyra")
    blind = replace(skyra, slices=[replace(s, position=None) for s in skyra.slices])
    verdict = check_series(blind, np.ones(skyra.pixels.shape, dtype=bool), 0.99)
    assert verdict.reason == "no brain: the series lacks pixel spacing or slice positions, so its size cannot be judged"
