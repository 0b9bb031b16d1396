"""The paper's 49-bin pseudocolor: bin counts, black background, configuration."""

from __future__ import annotations

import numpy as np
import pytest

from dicom_node.imaging.pseudocolor import PseudocolorSettings, bin_colors, bin_indices, pseudocolor


def ramp(bins: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.tile(np.linspace(100.0, 900.0, 490, dtype=np.float32), (2, 10, 1))
    mask = np.ones(pixels.shape, dtype=bool)
    mask[:, 0, :] = False  # a background row
    return pixels, mask


@pytest.mark.parametrize("bins", [49, 7, 56, 255])
def test_ramp_uses_exactly_n_colours_and_black_background(bins):
    pixels, mask = ramp(bins)
    settings = PseudocolorSettings(bins=bins, low_percentile=0, high_percentile=100)
    rgb = pseudocolor(pixels, mask, settings)
    assert rgb.dtype == np.uint8 and rgb.shape == (*pixels.shape, 3)
    colours = {tuple(c) for c in rgb[mask]}
    assert len(colours) == bins
    assert colours == {tuple(c) for c in bin_colors(bins, "JET")}
    assert not rgb[~mask].any(), "pixels outside the mask must be exactly 0"


def test_bins_are_equal_intervals_of_the_range():
    values = np.array([0.0, 0.99, 1.0, 48.99, 49.0, 100.0, -5.0], dtype=np.float32)
    assert bin_indices(values, 0.0, 49.0, 49).tolist() == [0, 0, 1, 48, 48, 48, 0]


def test_default_is_49_bins_from_robust_percentiles():
    settings = PseudocolorSettings()
    assert (settings.bins, settings.colormap, settings.low_percentile, settings.high_percentile) == (49, "JET", 0.5, 99.5)


def test_colormap_is_configurable_and_checked():
    assert not np.array_equal(bin_colors(49, "JET"), bin_colors(49, "VIRIDIS"))
    with pytest.raises(ValueError, match="Unknown OpenCV colormap 'NOPE'"):
        PseudocolorSettings(colormap="NOPE")
    for bins in (1, 256):
        with pytest.raises(ValueError, match="bins must be between 2 and 255"):
            PseudocolorSettings(bins=bins)
    PseudocolorSettings(bins=255)


def test_empty_mask_is_all_black():
    pixels = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    assert not pseudocolor(pixels, np.zeros(pixels.shape, dtype=bool)).any()


def test_real_brain_uses_all_bins(load_named, siemens_reference_mask):
    series = load_named("sag-t1-siemens-skyra")
    rgb = pseudocolor(series.pixels, siemens_reference_mask)
    assert len(np.unique(rgb[siemens_reference_mask], axis=0)) == 49
    assert not rgb[~siemens_reference_mask].any()
