"""Augmentation of network-ready slices: spatial, intensity and SynthStrip-style synthetic contrasts.

Every function works on one letterboxed slice in [0, 1] (``image`` float32 ``(S, S)``), its bool
``mask`` and the bool ``valid`` region (inside the letterbox; outside is zero padding, which the
segmenter also adds). Spatial transforms move image, mask and valid region with the same matrix,
so the mask stays on the anatomy. After the intensity changes the slice is re-normalised with the
segmenter's robust window (0.5/99.5 percentiles of its nonzero pixels), so training sees the same
value range as inference does.

Synthetic contrasts (after SynthStrip, Hoopes et al. 2022): with only a brain mask as label, the
head is split into intensity classes (quantiles of the slice's intensities), optionally separately
inside and outside the brain, and every class is given a random intensity with random texture. A
random non-monotonic intensity curve gives T2-, FLAIR- and PD-like contrasts from T1; the inversion
of the head's intensities gives dark-fat, bright-fluid images. Then bias field, gamma, blur,
resolution loss (64..512 matrices become a down-and-up sampling at the network size) and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dicom_node.imaging.normalize import HIGH_PERCENTILE, LOW_PERCENTILE


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; the defaults are those used for the shipped model."""

    p_spatial: float = 0.9
    rotate_deg: float = 25.0
    p_rot90: float = 0.2
    scale: tuple[float, float] = (0.65, 1.45)
    stretch: float = 0.15
    shift: float = 0.12
    p_flip_lr: float = 0.5
    p_flip_ud: float = 0.1
    p_cut: float = 0.15
    p_real: float = 0.3  # keep the real contrast (only the generic intensity changes below)
    p_curve: float = 0.35  # random intensity curve (inversions included)
    p_classes: float = 0.35  # class-wise synthetic contrast
    p_bias: float = 0.5
    bias_strength: float = 0.5
    p_gamma: float = 0.5
    gamma_sigma: float = 0.35
    p_blur: float = 0.25
    p_lowres: float = 0.4
    lowres_size: tuple[int, int] = (24, 140)
    p_noise: float = 0.5
    noise_max: float = 0.06
    p_window_jitter: float = 0.3
    p_rim: float = 0.0  # bright rim structures outside the brain (``rim_enhancement``; recipe 1.9.0)


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    valid: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation of a slice; returns ``(image float32 in [0, 1], mask bool)``.

    ``image`` is ``(S, S)`` or ``(C, S, S)``: a slice with its neighbours (``mask`` is the middle
    slice's) gets one transform and one contrast for all its channels, and comes back as given.
    """
    if image.ndim == 2:
        return _augment(image, mask, valid, rng, config)
    if image.shape[0] == 1:
        out, target = _augment(image[0], mask, valid, rng, config)
        return out[None], target
    out, target = _augment(np.ascontiguousarray(image.transpose(1, 2, 0)), mask, valid, rng, config)  # channels last, for cv2
    return np.ascontiguousarray(out.transpose(2, 0, 1)), target


def _augment(image: np.ndarray, mask: np.ndarray, valid: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """``augment`` of an ``(S, S)`` slice or an ``(S, S, C)`` one with its channels last."""
    image = image.astype(np.float32, copy=True)
    valid_f = valid.astype(np.float32)
    maskf = mask.astype(np.float32)
    if rng.random() < config.p_spatial:
        image, maskf, valid_f = spatial(image, maskf, valid_f, rng, config)
    region = valid_f > 0.5
    target = (maskf > 0.5) & region
    image = intensity(image, target, region, rng, config)
    image[~region] = 0.0
    return image, target


def _per_pixel(values: np.ndarray, image: np.ndarray) -> np.ndarray:
    """A ``(S, S)`` map shaped to broadcast over ``image``, which may carry channels last."""
    return values[..., None] if image.ndim == 3 else values


def affine_matrix(size: int, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A random 2x3 affine about the slice centre: rotation, scale, stretch, shift, flips."""
    c = (size - 1) / 2.0
    angle = math.radians(rng.uniform(-config.rotate_deg, config.rotate_deg))
    if rng.random() < config.p_rot90:
        angle += math.pi / 2 * rng.integers(1, 4)
    scale = math.exp(rng.uniform(math.log(config.scale[0]), math.log(config.scale[1])))
    stretch = math.exp(rng.uniform(-config.stretch, config.stretch))
    sx, sy = scale * stretch, scale / stretch
    if rng.random() < config.p_flip_lr:
        sx = -sx
    if rng.random() < config.p_flip_ud:
        sy = -sy
    cos, sin = math.cos(angle), math.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([sx, sy])
    shift = rng.uniform(-config.shift, config.shift, size=2) * size
    offset = np.array([c, c]) + shift - linear @ np.array([c, c])
    return np.hstack([linear, offset[:, None]]).astype(np.float64)


def spatial(image: np.ndarray, maskf: np.ndarray, valid_f: np.ndarray, rng: np.random.Generator, config: AugmentConfig):
    size = image.shape[0]
    matrix = affine_matrix(size, rng, config)
    flags = cv2.INTER_LINEAR
    constant = cv2.BORDER_CONSTANT
    image = np.asarray(cv2.warpAffine(image, matrix, (size, size), flags=flags, borderMode=constant, borderValue=0.0))
    maskf = np.asarray(cv2.warpAffine(maskf, matrix, (size, size), flags=flags, borderMode=constant, borderValue=0.0))
    valid_f = np.asarray(cv2.warpAffine(valid_f, matrix, (size, size), flags=cv2.INTER_NEAREST, borderMode=constant, borderValue=0.0))
    if rng.random() < config.p_cut:  # a field of view that does not cover the whole head
        side = rng.integers(0, 4)
        depth = int(rng.uniform(0.1, 0.35) * size)
        cut = [np.s_[:depth, :], np.s_[-depth:, :], np.s_[:, :depth], np.s_[:, -depth:]][side]
        valid_f[cut] = 0.0
    return image, maskf, valid_f


# -- intensity -------------------------------------------------------------------------------


def intensity(image: np.ndarray, target: np.ndarray, region: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Contrast synthesis and the generic MR intensity changes, then the inference window."""
    if config.p_rim and rng.random() < config.p_rim:  # no draw at 0: earlier recipes keep their random stream
        image = rim_enhancement(image, target, region, rng)
    roll = rng.random()
    if roll < config.p_curve:
        image = random_curve(image, rng)
    elif roll < config.p_curve + config.p_classes:
        image = class_contrast(image, target, region, rng)
    if rng.random() < config.p_bias:
        image = image * _per_pixel(bias_field(image.shape[0], rng, config.bias_strength), image)
    if rng.random() < config.p_gamma:
        image = np.power(np.clip(image, 0, None), math.exp(rng.normal(0, config.gamma_sigma))).astype(np.float32)
    if rng.random() < config.p_blur:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.6))
    if rng.random() < config.p_lowres:
        image = low_resolution(image, rng, config.lowres_size)
    if rng.random() < config.p_noise:
        image = add_noise(image, rng, config.noise_max)
    image = np.where(_per_pixel(region, image), image, 0.0).astype(np.float32)
    return window(image, region, rng, config.p_window_jitter)


def rim_enhancement(image: np.ndarray, target: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright thin structures in a band just outside the brain, as a T1 after a contrast agent shows
    its enhancing dura, sinuses and cortical veins: every network that held out the one
    contrast-enhanced training head took them for brain (MODEL_CARD.md, recipe 1.9.0). Curvilinear
    lines (where smooth noise crosses zero) or patches, sometimes a shell hugging the surface, at
    1-1.6 times the brain's 99th percentile; the mask is unchanged, so they are taught as non-brain."""
    brain = (target & region).astype(np.uint8)
    if brain.sum() < 50:
        return image
    width = int(rng.integers(2, 8))
    ring = (cv2.dilate(brain, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))) > 0) & (brain == 0) & region
    noise = cv2.GaussianBlur(rng.standard_normal(brain.shape).astype(np.float32), (0, 0), rng.uniform(1.0, 3.0))
    noise /= float(noise.std()) + 1e-6
    if rng.random() < 0.5:
        lit = np.abs(noise) < rng.uniform(0.15, 0.4)  # vessels: thin lines
    else:
        lit = noise > rng.uniform(0.0, 1.0)  # dura, sinuses: patches
    if rng.random() < 0.5:  # a shell on the brain's surface
        shell = (cv2.dilate(brain, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))) > 0) & (brain == 0)
        lit |= shell & (noise > rng.uniform(-1.0, 0.5))
    bright = cv2.GaussianBlur((ring & lit).astype(np.float32), (0, 0), 0.6)
    level = float(np.percentile(image[brain > 0] if image.ndim == 2 else image[brain > 0].ravel(), 99)) * rng.uniform(1.0, 1.6)
    return np.maximum(image, _per_pixel(bright * level, image)).astype(np.float32)


def random_curve(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random piecewise-linear intensity map of [0, 1]: non-monotonic contrasts, inversions."""
    points = int(rng.integers(3, 9))
    xs = np.concatenate([[0.0], np.sort(rng.uniform(0.02, 1.0, points)), [1.0 + 1e-6]])
    ys = rng.uniform(0.0, 1.0, points + 2)
    if rng.random() < 0.3:  # inversion of the head (T2/FLAIR-like): dark background kept
        ys = 1.0 - xs
        ys = ys + rng.normal(0, 0.08, ys.shape)
    if rng.random() < 0.85:  # air stays dark in nearly every MR contrast
        ys[0] = rng.uniform(0.0, 0.05)
        xs[1] = max(xs[1], 0.04)
        ys[1] = max(ys[1], 0.15)
    out = np.interp(image.ravel(), xs, np.clip(ys, 0, 1)).reshape(image.shape)
    return out.astype(np.float32)


def class_contrast(image: np.ndarray, target: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SynthStrip-like: quantile intensity classes (split by brain/non-brain or not) get random
    intensities and textures; a class image stands in for a label map."""
    k = int(rng.integers(3, 9))
    head = _per_pixel(region, image) & (image > 0.03)
    values = image[head]
    if values.size < 50:
        return image
    edges = np.quantile(values, np.linspace(0, 1, k + 1)[1:-1])
    classes = np.digitize(image, edges) + 1  # 1..k
    classes[~head] = 0
    split = rng.random() < 0.5
    if split:
        classes = np.where(_per_pixel(target, image) & head, classes + k, classes)
    n = int(classes.max()) + 1
    means = rng.uniform(0.0, 1.0, n).astype(np.float32)
    means[0] = rng.uniform(0.0, 0.08) if rng.random() < 0.9 else rng.uniform(0.0, 0.5)
    stds = rng.uniform(0.0, 0.08, n).astype(np.float32)
    out = means[classes] + stds[classes] * rng.standard_normal(image.shape).astype(np.float32)
    blend = rng.uniform(0.0, 0.5)  # keep some of the real texture
    if rng.random() < 0.5:
        out = (1 - blend) * out + blend * image
    sigma = rng.uniform(0.3, 1.2)
    out = cv2.GaussianBlur(out.astype(np.float32), (0, 0), sigma)
    return np.clip(out, 0, None).astype(np.float32)


def bias_field(size: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    grid = int(rng.integers(2, 6))
    coarse = rng.normal(0, strength / 2, (grid, grid)).astype(np.float32)
    return np.exp(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)).astype(np.float32)


def low_resolution(image: np.ndarray, rng: np.random.Generator, sizes: tuple[int, int]) -> np.ndarray:
    size = image.shape[0]
    rows = int(rng.integers(sizes[0], sizes[1] + 1))
    cols = rows if rng.random() < 0.6 else int(rng.integers(sizes[0], sizes[1] + 1))
    small = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_LINEAR if rng.random() < 0.7 else cv2.INTER_NEAREST
    return cv2.resize(small, (size, size), interpolation=interp)


def add_noise(image: np.ndarray, rng: np.random.Generator, noise_max: float) -> np.ndarray:
    sigma = rng.uniform(0.0, noise_max)
    if rng.random() < 0.5:  # Rician: magnitude of a complex signal with Gaussian noise
        real = image + rng.normal(0, sigma, image.shape)
        imag = rng.normal(0, sigma, image.shape)
        return np.sqrt(real * real + imag * imag).astype(np.float32)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, None).astype(np.float32)


def window(image: np.ndarray, region: np.ndarray, rng: np.random.Generator | None = None, p_jitter: float = 0.0) -> np.ndarray:
    """The segmenter's robust window on this slice: nonzero 0.5/99.5 percentiles -> [0, 1]."""
    values = image[_per_pixel(region, image) & (image != 0)]
    if values.size < 10:
        return np.zeros_like(image)
    low, high = LOW_PERCENTILE, HIGH_PERCENTILE
    if rng is not None and rng.random() < p_jitter:  # a series' window differs from a slice's
        low, high = rng.uniform(0.0, 5.0), rng.uniform(97.0, 100.0)
    lo, hi = np.percentile(values, [low, high])
    if not hi > lo:
        hi = lo + 1e-3
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
