"""Siemens mosaics: one image holding a grid of slices (EPI fMRI and diffusion, VB to VE).

A mosaic is one single-frame MR image whose pixel matrix is a ``k x k`` grid of tiles,
``k = ceil(sqrt(n))`` for ``n`` slices; tiles fill the grid row by row, slice 1 first. The
number of slices is NumberOfImagesInMosaic, in the private tag (0019,100A) or in the CSA image
header (0029,1010), which nibabel reads.

The header's Image Position (Patient) is that of the top-left corner of the whole mosaic, not of
the first slice. The standard correction (nibabel ``MosaicWrapper.image_position``, dcm2niix)
moves it by half the difference between mosaic and tile matrix, along rows and columns::

    p1 = ipp + col_cosine * row_spacing * (mosaic_rows - rows) / 2
             + row_cosine * col_spacing * (mosaic_cols - cols) / 2

and slice ``i`` lies at ``p1 + i * spacing * normal``, where ``normal`` is the CSA
SliceNormalVector (the order Siemens stores the tiles in; the cross product of the cosines when
the CSA header lacks it) and ``spacing`` is Spacing Between Slices (else Slice Thickness).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

_MOSAIC_TAG = 0x0019100A  # Siemens private: NumberOfImagesInMosaic (creator SIEMENS MR HEADER)


@dataclass(frozen=True)
class MosaicTile:
    """One slice cut from a mosaic: its pixels and where it lies."""

    index: int  # 0-based slice index within the mosaic
    pixels: np.ndarray  # (rows, cols)
    position: tuple[float, float, float] | None


def is_mosaic(ds: Dataset) -> bool:
    """True when ImageType says MOSAIC (Siemens writes it on every mosaic)."""
    try:
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    except Exception:
        return False
    return "MOSAIC" in image_type


def mosaic_tile_count(ds: Dataset) -> int | None:
    """NumberOfImagesInMosaic of a mosaic image, None when ``ds`` is not a (usable) mosaic."""
    if not is_mosaic(ds):
        return None
    if _MOSAIC_TAG in ds:
        try:
            count = _unsigned(ds[_MOSAIC_TAG].value)
        except (TypeError, ValueError, IndexError):
            count = 0
        if count > 0:
            return count
    tags = _csa_tags(ds)
    items = tags.get("NumberOfImagesInMosaic", {}).get("items") or []
    return int(items[0]) if items and int(items[0]) > 0 else None


def split_mosaic(ds: Dataset, pixels: np.ndarray) -> list[MosaicTile]:
    """The slices of mosaic ``ds`` (``pixels`` is its decoded ``(rows, cols)`` matrix).

    Raises:
        ValueError: not a mosaic, or a matrix that is not a whole grid of tiles.
    """
    count = mosaic_tile_count(ds)
    if count is None:
        raise ValueError("the image is not a Siemens mosaic with a known NumberOfImagesInMosaic")
    grid = math.ceil(math.sqrt(count))
    mosaic_rows, mosaic_cols = pixels.shape
    if mosaic_rows % grid or mosaic_cols % grid:
        raise ValueError(f"a {mosaic_rows}x{mosaic_cols} mosaic is not a {grid}x{grid} grid of tiles")
    rows, cols = mosaic_rows // grid, mosaic_cols // grid
    positions = _tile_positions(ds, count, (mosaic_rows, mosaic_cols), (rows, cols))
    tiles = []
    for index in range(count):
        r, c = divmod(index, grid)
        tile = pixels[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols]
        tiles.append(MosaicTile(index, tile, positions[index] if positions else None))
    return tiles


def _tile_positions(ds: Dataset, count: int, mosaic: tuple[int, int], tile: tuple[int, int]) -> list[tuple[float, float, float]] | None:
    try:
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return None
    if ipp.shape != (3,) or iop.shape != (6,):
        return None
    row_cosine, col_cosine = iop[:3], iop[3:]
    first = (
        ipp
        + col_cosine * row_spacing * (mosaic[0] - tile[0]) / 2
        + row_cosine * col_spacing * (mosaic[1] - tile[1]) / 2
    )
    normal = slice_normal(ds)
    spacing = _spacing(ds)
    if spacing is None:
        return None
    return [tuple(float(v) for v in first + i * spacing * normal) for i in range(count)]  # type: ignore[misc]


def slice_normal(ds: Dataset) -> np.ndarray:
    """The CSA SliceNormalVector (tile order), else row cosine x column cosine."""
    items = _csa_tags(ds).get("SliceNormalVector", {}).get("items") or []
    if len(items) == 3:
        vector = np.array([float(v) for v in items])
        if np.linalg.norm(vector) > 0.5:
            return vector / np.linalg.norm(vector)
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    return np.cross(iop[:3], iop[3:])


def _spacing(ds: Dataset) -> float | None:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        try:
            number = float(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            number = None
        if number is not None and math.isfinite(number) and number > 0:
            return number
    return None


def _csa_tags(ds: Dataset) -> dict:
    """The CSA image header's tags (nibabel's reader), {} when absent or unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel warns that its DICOM readers are experimental
            from nibabel.nicom import csareader

            header = csareader.get_csa_header(ds, "image")
    except Exception:
        return {}
    return header.get("tags", {}) if header else {}


def _unsigned(value: object) -> int:
    """The first value of (0019,100A), decoded (US) or raw bytes as implicit VR files keep it."""
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little")
    if isinstance(value, str):
        return int(value)
    try:
        return int(value[0])  # type: ignore[index]
    except TypeError:
        return int(value)  # type: ignore[call-overload]


def assemble_mosaic(tiles: np.ndarray, tile_numbers: list[int], mosaic_shape: tuple[int, int]) -> np.ndarray:
    """Tiles (``(n, rows, cols, ...)``, 1-based ``tile_numbers``) put back into their mosaic grid.

    The outputs of a mosaic are made in the mosaic's own layout: a SEG frame or an SC image must
    match its source image pixel for pixel, and the source image is the mosaic. Tiles not given
    stay zero (background).
    """
    rows, cols = tiles.shape[1:3]
    grid_rows, grid_cols = mosaic_shape[0] // rows, mosaic_shape[1] // cols
    out = np.zeros((*mosaic_shape, *tiles.shape[3:]), dtype=tiles.dtype)
    for tile, number in zip(tiles, tile_numbers):
        r, c = divmod(number - 1, grid_cols)
        if r >= grid_rows:
            raise ValueError(f"tile {number} lies outside a {grid_rows}x{grid_cols} mosaic grid")
        out[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] = tile
    return out
