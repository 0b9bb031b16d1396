"""Augmentation keeps image and mask on the same anatomy and yields varied contrasts."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from dicom_node.training.augment import AugmentConfig, augment, class_contrast, random_curve, rim_enhancement

SIZE = 96


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 'head': a dim ellipse (skull/scalp) around a bright off-centre 'brain' blob; mask = brain."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    head = ((yy - 48) / 40) ** 2 + ((xx - 48) / 34) ** 2 < 1
    brain = ((yy - 42) / 26) ** 2 + ((xx - 52) / 20) ** 2 < 1
    image = np.where(brain, 0.9, np.where(head, 0.35, 0.0)).astype(np.float32)
    image[(yy < 30) & (xx < 30) & head] = 0.6  # an asymmetric landmark outside the brain
    valid = np.zeros((SIZE, SIZE), dtype=bool)
    valid[4:92, 8:88] = True
    return image * valid, brain & valid, valid


def test_spatial_augmentation_keeps_mask_on_the_brain() -> None:
    image, mask, valid = _phantom()
    spatial_only = AugmentConfig(p_spatial=1.0, p_curve=0.0, p_classes=0.0, p_bias=0.0, p_gamma=0.0, p_blur=0.0,
                                 p_lowres=0.0, p_noise=0.0, p_window_jitter=0.0, p_cut=0.0)
    rng = np.random.default_rng(1)
    moved = 0
    for _ in range(40):
        out, out_mask = augment(image, mask, valid, rng, spatial_only)
        assert out.dtype == np.float32 and out_mask.dtype == bool and out.shape == out_mask.shape == (SIZE, SIZE)
        assert out.min() >= 0.0 and out.max() <= 1.0
        bright = out > 0.85  # after the window the brain is the brightest class
        inter = (bright & out_mask).sum()
        union = (bright | out_mask).sum()
        assert union > 0 and inter / union > 0.85
        moved += not np.array_equal(out_mask, mask)
    assert moved >= 35  # the transforms really move things


def test_full_augmentation_mask_stays_inside_the_image() -> None:
    image, mask, valid = _phantom()
    rng = np.random.default_rng(2)
    for _ in range(60):
        out, out_mask = augment(image, mask, valid, rng)
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        assert not (out_mask & ~(out > -1)).any()
        # the mask never lies where the image is padding outside the (moved) field of view
        if out_mask.any():
            assert (out[out_mask] > 0).mean() > 0.5


def test_synthetic_contrasts_vary_and_invert() -> None:
    image, mask, valid = _phantom()
    rng = np.random.default_rng(3)
    head = image > 0.03
    contrasts = []
    for _ in range(60):
        synth = random_curve(image, rng) if rng.random() < 0.5 else class_contrast(image, mask, head, rng)
        brain_mean, other_mean = synth[mask].mean(), synth[head & ~mask].mean()
        contrasts.append(brain_mean - other_mean)
    contrasts = np.array(contrasts)
    assert (contrasts > 0.1).any() and (contrasts < -0.1).any()  # brain brighter and darker than its surroundings
    assert contrasts.std() > 0.15
    config = replace(AugmentConfig(), p_spatial=0.0)
    outs = [augment(image, mask, valid, rng, config)[0] for _ in range(20)]
    assert np.std([o[mask].mean() for o in outs]) > 0.05


def test_a_slice_and_its_neighbours_move_together_and_one_channel_is_unchanged() -> None:
    """Channels of a slice with its neighbours get one spatial transform; a 1-channel slice is
    augmented exactly as a plain slice (the 1.4.0 recipe's draws are unchanged)."""
    image, mask, valid = _phantom()
    spatial_only = AugmentConfig(p_spatial=1.0, p_curve=0.0, p_classes=0.0, p_bias=0.0, p_gamma=0.0, p_blur=0.0,
                                 p_lowres=0.0, p_noise=0.0, p_window_jitter=0.0, p_cut=0.0)
    rng = np.random.default_rng(4)
    stacked = np.stack([image, image, image])
    for _ in range(10):
        out, out_mask = augment(stacked, mask, valid, rng, spatial_only)
        assert out.shape == (3, SIZE, SIZE) and out_mask.shape == (SIZE, SIZE)
        assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
    for _ in range(10):  # every transform: the channels keep their shape and range
        out, _ = augment(stacked, mask, valid, rng)
        assert out.shape == (3, SIZE, SIZE) and out.min() >= 0.0 and out.max() <= 1.0
    one, plain = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        a, a_mask = augment(image[None], mask, valid, one)
        b, b_mask = augment(image, mask, valid, plain)
        assert a.shape == (1, SIZE, SIZE) and np.array_equal(a[0], b) and np.array_equal(a_mask, b_mask)


def test_rim_enhancement_brightens_only_a_band_outside_the_brain() -> None:
    """Recipe 1.9.0's contrast-agent look: bright structures outside the brain, within a few
    pixels of it, never inside it; and at p_rim 0 the augmentation draws exactly as before."""
    image, mask, valid = _phantom()
    image = np.where(mask, 0.5, image).astype(np.float32)  # a brain darker than nothing around it
    rng = np.random.default_rng(3)
    lit_any = 0
    for _ in range(20):
        out = rim_enhancement(image, mask, valid, rng)
        changed = out != image
        assert not changed[mask].any()
        assert (out >= image).all()
        near = cv2.dilate(mask.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
        assert not changed[~near].any()
        lit_any += int((out[changed] > 0.5).sum())
    assert lit_any > 100
    plain = AugmentConfig()
    a = augment(image, mask, valid, np.random.default_rng(7), plain)
    b = augment(image, mask, valid, np.random.default_rng(7), replace(plain, p_rim=0.0))
    c = augment(image, mask, valid, np.random.default_rng(7), replace(plain, p_rim=1.0))
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
