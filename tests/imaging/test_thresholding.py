"""From probabilities to a raw mask: the threshold, another one at the ends of the brain, smoothing,
and the enhancing rim of a contrast-enhanced series."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dicom_node.imaging.loading import volume_directions
from dicom_node.imaging.model_info import ArchSpec, InferenceSpec
from dicom_node.imaging.network import build_network, load_weights, save_weights
from dicom_node.imaging.postprocess import clean_mask, trim_bright_rim
from dicom_node.imaging.segmenter import Segmenter, volume_slice_spacing
from dicom_node.imaging.thresholding import brain_voxels, cut_and_clean, end_zone, smooth_probabilities, valley_threshold

SPACING = (3.0, 2.0, 2.0)  # 0.012 ml a voxel; 40 slices make 120 mm, enough to fuse the views
FUSED = InferenceSpec(views=3, threshold=0.6)


def test_end_zone_is_the_outer_tenth_of_the_brain_along_every_axis() -> None:
    core = np.zeros((40, 50, 60), dtype=bool)
    core[10:30, 5:45, 20:40] = True  # extents 20, 40 and 20 voxels: ends 2, 4 and 2 deep
    zone = end_zone(core)
    assert not zone[12:28, 9:41, 22:38].any()  # the middle
    for index in ((11, 20, 30), (28, 20, 30), (20, 8, 30), (20, 41, 30), (20, 20, 21), (20, 20, 38), (0, 20, 30), (39, 49, 59)):
        assert zone[index], index  # each end, and beyond the brain's box
    assert not end_zone(np.zeros((4, 4, 4), dtype=bool)).any()


def test_smoothing_keeps_a_flat_field_and_centres_an_edge_on_a_half() -> None:
    flat = np.full((12, 20, 20), 0.7, dtype=np.float32)
    assert np.allclose(smooth_probabilities(flat, (2.0, 1.0, 1.0), 2.0), 0.7, atol=1e-5)
    edge = np.zeros((12, 20, 20), dtype=np.float32)
    edge[:, :, 10:] = 1.0  # an edge between columns 9 and 10, sigma 2 columns
    out = smooth_probabilities(edge, (2.0, 1.0, 1.0), 2.0)
    assert out[6, 10, 9] == pytest.approx(1 - out[6, 10, 10], abs=1e-4) and 0.3 < out[6, 10, 9] < 0.5
    step = np.zeros((12, 20, 20), dtype=np.float32)
    step[6:] = 1.0  # across slices, in slice spacings: sigma 1 slice
    across = smooth_probabilities(step, (2.0, 1.0, 1.0), 2.0)
    assert across[5, 10, 10] == pytest.approx(1 - across[6, 10, 10], abs=1e-4) and 0.2 < across[5, 10, 10] < 0.4


def test_smoothing_is_in_millimetres_along_rows_and_columns_apart() -> None:
    dot = np.zeros((1, 41, 41), dtype=np.float32)
    dot[0, 20, 20] = 1.0
    out = smooth_probabilities(dot, (5.0, 0.5, 2.0), 2.0)[0]  # rows 0.5 mm apart, columns 2 mm: sigma 4 rows, 1 column
    assert out.sum() == pytest.approx(1.0, abs=1e-3)
    down_rows, along_cols = out[:, 20] / out[20, 20], out[20, :] / out[20, 20]
    assert down_rows[24] == pytest.approx(np.exp(-0.5), rel=0.02)  # 4 rows = 2 mm = one sigma
    assert along_cols[21] == pytest.approx(np.exp(-0.5), rel=0.02)  # 1 column = 2 mm = one sigma


def _head() -> np.ndarray:
    """A 166 ml brain at 0.9, a doubtful (0.55) spot in its middle and a doubtful slab past its top."""
    probs = np.full((40, 40, 40), 0.05, dtype=np.float32)
    probs[8:32, 8:32, 8:32] = 0.9
    probs[18:22, 18:22, 18:22] = 0.55
    probs[32:34, 12:28, 12:28] = 0.55
    return probs


def test_the_end_threshold_applies_at_the_ends_of_the_brain_only() -> None:
    probs, spec = _head(), replace(FUSED, end_threshold=0.5)
    mask = brain_voxels(probs, spec, echo_planar=False, contrast_enhanced=False, spacing=SPACING)
    assert mask[33, 20, 20] and not mask[20, 20, 20]  # past the top: brain at 0.5; the middle still needs 0.6
    plain = brain_voxels(probs, FUSED, echo_planar=False, contrast_enhanced=False, spacing=SPACING)
    assert np.array_equal(plain, probs >= 0.6)
    assert np.array_equal(brain_voxels(probs, spec, echo_planar=True, contrast_enhanced=False, spacing=SPACING), probs >= 0.6)  # an EPI: its threshold alone
    assert np.array_equal(brain_voxels(probs, spec, echo_planar=False, contrast_enhanced=False, spacing=None), probs >= 0.6)  # no regular volume
    speck = np.full((40, 40, 40), 0.55, dtype=np.float32)
    speck[18:21, 18:21, 18:21] = 0.9  # 0.3 ml: too small to be a brain, so it has no ends
    assert np.array_equal(brain_voxels(speck, spec, echo_planar=False, contrast_enhanced=False, spacing=SPACING), speck >= 0.6)


def test_smoothing_runs_before_the_threshold() -> None:
    probs = _head()
    smoothed = brain_voxels(probs, replace(FUSED, smooth_mm=3.0), echo_planar=False, contrast_enhanced=False, spacing=SPACING)
    assert np.array_equal(smoothed, smooth_probabilities(probs, SPACING, 3.0) >= 0.6)
    assert smoothed[20, 20, 20]  # the doubtful spot in the middle is smoothed into the brain


def test_the_valley_threshold_sits_where_fewest_voxels_are_undecided() -> None:
    rng = np.random.default_rng(0)
    # Brain near 0.95, background near 0.03, and a shoulder of rim voxels at 0.55-0.62: a cut at
    # 0.55 takes the rim; the valley between the shoulder and the brain lies at 0.7-0.8.
    probs = np.concatenate([rng.uniform(0.9, 1.0, 50_000), rng.uniform(0.0, 0.06, 50_000), rng.uniform(0.55, 0.62, 5_000),
                            rng.uniform(0.0, 1.0, 2_000)]).astype(np.float32)
    cut = valley_threshold(probs, 0.45, 0.8, 0.1, fallback=0.55)
    assert 0.68 <= cut <= 0.8
    assert valley_threshold(probs, 0.45, 0.6, 0.1, fallback=0.55) == 0.45  # only in its range: below the shoulder
    even = np.repeat(np.arange(101, dtype=np.float32) / 100, 50)  # as many at every hundredth: no valley anywhere, the fallback
    assert valley_threshold(even, 0.45, 0.8, 0.05, fallback=0.55) == 0.55
    # Each series its own: the same rim at 0.75 moves the cut below it.
    shifted = np.where((probs >= 0.55) & (probs < 0.62), probs + 0.2, probs)
    assert 0.45 <= valley_threshold(shifted, 0.45, 0.8, 0.1, fallback=0.55) <= 0.68


def test_the_valley_threshold_cuts_fused_t1_only() -> None:
    probs = _head()  # brain at 0.9, doubtful voxels at 0.55, background 0.05: the valley is above 0.6
    spec = replace(FUSED, valley=(0.5, 0.8))
    cut = valley_threshold(probs, 0.5, 0.8, 0.1, fallback=0.6)
    assert cut == 0.61  # the nearest to 0.6 with no probability within 0.05 of it
    assert np.array_equal(brain_voxels(probs, spec, echo_planar=False, contrast_enhanced=False, spacing=SPACING), probs >= cut)
    assert not brain_voxels(probs, spec, echo_planar=False, contrast_enhanced=False, spacing=SPACING)[33, 20, 20]  # the doubtful slab is left out
    assert np.array_equal(brain_voxels(probs, spec, echo_planar=True, contrast_enhanced=False, spacing=SPACING), probs >= 0.6)  # an EPI: its threshold
    assert np.array_equal(brain_voxels(probs, spec, echo_planar=False, contrast_enhanced=False, spacing=None), probs >= 0.6)  # not one volume
    with pytest.raises(ValueError, match="valley must be two probabilities, low below high"):
        InferenceSpec(valley=(0.8, 0.5))


def test_the_steps_are_stored_with_the_weights_and_checked(tmp_path: Path) -> None:
    arch = ArchSpec(input_size=64)
    spec = InferenceSpec(threshold=0.6, epi_threshold=0.4, end_threshold=0.5, smooth_mm=1.0, valley=(0.45, 0.8), valley_window=0.05)
    _, info = load_weights(save_weights(tmp_path / "w.pt", build_network(arch), arch, name="n", version="1", inference=spec))
    assert info.inference == spec
    with pytest.raises(ValueError, match="end_threshold must lie between 0 and 1, not 0.0"):
        InferenceSpec(end_threshold=0.0)
    with pytest.raises(ValueError, match="smooth_mm must lie between 0 and 10, not -1"):
        InferenceSpec(smooth_mm=-1)


def test_the_segmenter_runs_the_steps_on_fused_views_only(shipped_segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    philips = load_named("sag-t1-philips-ingenia")
    pixel_spacing, slice_spacing = philips.slices[0].pixel_spacing, volume_slice_spacing(philips)
    assert pixel_spacing and slice_spacing
    fused = InferenceSpec(views=3, grid_size=160, step=3, threshold=0.6, end_threshold=0.4)
    for spec, steps in ((fused, True), (replace(fused, views=1), False)):  # one view: the threshold alone
        segmenter = Segmenter(shipped_segmenter.network, replace(shipped_segmenter.info, inference=spec), "cpu")
        mask = segmenter.segment(philips).mask
        probs = segmenter.predict_probabilities(philips.pixels, pixel_spacing, slice_spacing, volume_directions(philips))
        plain = clean_mask(probs >= 0.6, philips.voxel_volume_ml()).mask
        if steps:
            raw = brain_voxels(probs, spec, False, False, (slice_spacing, pixel_spacing[0], pixel_spacing[1]))
            assert np.array_equal(mask, clean_mask(raw, philips.voxel_volume_ml()).mask)
            assert mask.sum() > plain.sum() and not (plain & ~mask).any()  # the brain's ends kept at the lower threshold
        else:
            assert np.array_equal(mask, plain)


def test_the_segmenter_cuts_a_real_series_at_its_own_valley(shipped_segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    philips = load_named("sag-t1-philips-ingenia")
    pixel_spacing, slice_spacing = philips.slices[0].pixel_spacing, volume_slice_spacing(philips)
    assert pixel_spacing and slice_spacing
    spec = replace(shipped_segmenter.info.inference, valley=(0.45, 0.8), valley_window=0.1)
    assert spec.views == 3 and spec.end_threshold is None  # 1.4.2's steps: smoothing, then the cut
    segmenter = Segmenter(shipped_segmenter.network, replace(shipped_segmenter.info, inference=spec), "cpu")
    mask = segmenter.segment(philips).mask
    probs = segmenter.predict_probabilities(philips.pixels, pixel_spacing, slice_spacing, volume_directions(philips))
    smoothed = smooth_probabilities(probs, (slice_spacing, pixel_spacing[0], pixel_spacing[1]), spec.smooth_mm) if spec.smooth_mm else probs
    cut = valley_threshold(smoothed, 0.45, 0.8, 0.1, fallback=spec.threshold)
    assert 0.45 <= cut <= 0.8 and cut != spec.threshold  # 0.58 for 1.4.2 on this head: the mask tells the two apart
    assert np.array_equal(mask, clean_mask(smoothed >= cut, philips.voxel_volume_ml()).mask)


RIM = InferenceSpec(views=3, threshold=0.6, contrast_rim=1.3, contrast_rim_below=0.8)


def _enhanced_head() -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and intensities of a 24-voxel cube of brain (intensity 100) with a bright vessel
    on its surface, partly doubtful (0.7) and partly sure (0.95), and a bright spot deep inside."""
    probs = np.full((40, 40, 40), 0.05, dtype=np.float32)
    probs[8:32, 8:32, 8:32] = 0.9
    image = np.full(probs.shape, 10.0, dtype=np.float32)
    image[8:32, 8:32, 8:32] = 100.0
    image[10:30, 8, 12:16] = 160.0  # the vessel along the top face, 1.6 times the median
    probs[10:20, 8, 12:16] = 0.7  # the network doubts half of it
    probs[20:30, 8, 12:16] = 0.95
    image[18:22, 18:22, 18:22] = 200.0  # an enhancing lesion inside the brain, far from its surface
    return probs, image


def test_the_enhancing_rim_is_trimmed_only_where_doubtful_bright_and_at_the_surface(tmp_path: Path) -> None:
    probs, image = _enhanced_head()
    voxel_ml = float(np.prod(SPACING)) / 1000
    cleaned = cut_and_clean(probs, image, RIM, echo_planar=False, contrast_enhanced=True, spacing=SPACING, voxel_ml=voxel_ml)
    plain = clean_mask(brain_voxels(probs, RIM, False, True, SPACING), voxel_ml).mask
    assert np.array_equal(plain & ~cleaned.mask, np.pad(np.ones((10, 1, 4), dtype=bool), ((10, 20), (8, 31), (12, 24))))  # the doubtful vessel only
    assert cleaned.mask[20:30, 8, 12:16].all() and cleaned.mask[18:22, 18:22, 18:22].all()  # the sure vessel, the lesion
    assert cleaned.removed_voxels == 40
    without_limit = cut_and_clean(probs, image, replace(RIM, contrast_rim_below=None), False, True, SPACING, voxel_ml).mask
    assert not without_limit[10:30, 8, 12:16].any() and without_limit[18:22, 18:22, 18:22].all()
    for echo_planar, contrast_enhanced, spacing in ((False, False, SPACING), (True, True, SPACING), (False, True, None)):
        untouched = cut_and_clean(probs, image, RIM, echo_planar, contrast_enhanced, spacing, voxel_ml).mask  # no agent, an EPI, no regular volume
        assert np.array_equal(untouched, clean_mask(brain_voxels(probs, RIM, echo_planar, contrast_enhanced, spacing), voxel_ml).mask)
    shifted = cut_and_clean(probs, image - 1000.0, RIM, False, True, SPACING, voxel_ml).mask  # a junk rescale: the median is negative
    assert np.array_equal(shifted, plain)
    _, info = load_weights(save_weights(tmp_path / "w.pt", build_network(ArchSpec(input_size=64)), ArchSpec(input_size=64), name="n", version="1", inference=replace(RIM, grid_size=64)))
    assert (info.inference.contrast_rim, info.inference.contrast_rim_below) == (1.3, 0.8)
    with pytest.raises(ValueError, match="contrast_rim must lie above 1"):
        InferenceSpec(contrast_rim=0.9)


def test_a_series_whose_header_names_a_contrast_agent_has_its_bright_rim_trimmed(shipped_segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    philips = load_named("sag-t1-philips-ingenia")
    enhanced = copy.copy(philips)
    enhanced.datasets = [copy.deepcopy(philips.datasets[0]), *philips.datasets[1:]]  # a header, no pixel data
    enhanced.datasets[0].ContrastBolusAgent = "GADOVIST 1.0"
    assert enhanced.contrast_enhanced and not philips.contrast_enhanced
    spec = replace(shipped_segmenter.info.inference, contrast_rim=1.3, contrast_rim_below=0.8)
    segmenter = Segmenter(shipped_segmenter.network, replace(shipped_segmenter.info, inference=spec), "cpu")
    plain, trimmed = segmenter.segment(philips).mask, segmenter.segment(enhanced).mask
    assert np.array_equal(plain, shipped_segmenter.segment(philips).mask)  # no agent: as if the step did not exist
    assert 0 < (plain & ~trimmed).sum() < 0.02 * plain.sum() and not (trimmed & ~plain).any()
    pixel_spacing, slice_spacing = philips.slices[0].pixel_spacing, volume_slice_spacing(philips)
    probs = segmenter.predict_probabilities(philips.pixels, pixel_spacing, slice_spacing, volume_directions(philips))
    spacing = (slice_spacing, pixel_spacing[0], pixel_spacing[1])
    smoothed = smooth_probabilities(probs, spacing, spec.smooth_mm)
    bright_rim = trim_bright_rim(plain, philips.pixels, spacing, 1.3, keep=smoothed >= 0.8)  # the series' own intensities, the smoothed probabilities
    assert np.array_equal(trimmed, clean_mask(bright_rim, philips.voxel_volume_ml()).mask)
    dropped = plain & ~bright_rim
    assert (philips.pixels[dropped] >= 1.3 * np.median(philips.pixels[plain])).all() and (smoothed[dropped] < 0.8).all()
