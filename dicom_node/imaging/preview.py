"""An overlay picture a person can check at a glance: slices with the mask outline, and the pseudocolor."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dicom_node.imaging.normalize import intensity_window

TILE = 192
OUTLINE_RGB = (255, 40, 40)


def preview_image(pixels: np.ndarray, mask: np.ndarray, rgb: np.ndarray, columns: int = 6) -> np.ndarray:
    """RGB uint8 montage: top row grayscale with the mask outlined, bottom row the pseudocolor.

    Slices are spread evenly over the mask's extent (over the whole series when it is empty).
    """
    extent = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    first, last = (int(extent[0]), int(extent[-1])) if extent.size else (0, mask.shape[0] - 1)
    picks = np.unique(np.linspace(first, last, columns + 2).round().astype(int)[1:-1]) if last > first else np.array([first])
    lo, hi = intensity_window(pixels)
    gray = (np.clip((pixels[picks] - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    top, bottom = [], []
    for k, index in enumerate(picks):
        tile = cv2.cvtColor(gray[k], cv2.COLOR_GRAY2RGB)
        contours, _ = cv2.findContours(mask[index].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, OUTLINE_RGB, 1)
        top.append(cv2.resize(tile, (TILE, TILE), interpolation=cv2.INTER_AREA))
        bottom.append(cv2.resize(rgb[index], (TILE, TILE), interpolation=cv2.INTER_NEAREST))
    return np.vstack([np.hstack(top), np.hstack(bottom)])


def write_preview(path: Path | str, image: np.ndarray) -> Path:
    """Write a :func:`preview_image` as PNG; raise ``OSError`` naming the path when it cannot."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), image[:, :, ::-1]):
        raise OSError(f"Preview {target} could not be written (is the extension .png?).")
    return target
