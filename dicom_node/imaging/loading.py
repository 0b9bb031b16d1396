"""Read MR series from DICOM files as real exports look: unsorted, mixed with other files.

Two steps, so the node (which already knows which files form a series) can skip the first:

1. :func:`scan_folder` reads headers only, groups files by Series Instance UID and lists the
   files that are not DICOM.
2. :func:`load_series` decodes one series (classic single-frame or Enhanced multi-frame, any
   transfer syntax pydicom has a decoder for), applies the modality rescale, and sorts the
   slices along the slice normal.

A load gives one volume: slices that share a position (time series such as fMRI, diffusion) are
split into volumes and the first is kept, Siemens mosaics are cut into slices, and unusable
instances are left out; each of these adds a note to :attr:`MRSeries.notes`. With
``all_volumes=True`` every image is kept, ordered by position, then acquisition number, instance
number and frame number (position-major order keeps the anatomy contiguous along the stack).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.imaging.mosaic import assemble_mosaic, mosaic_tile_count, split_mosaic
from dicom_node.uids import short_hash

ENHANCED_MR_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage (refused as colour)
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    }
)
_ORIENTATION_TOLERANCE = 1e-3  # max |difference| of direction cosines within one series


class SeriesLoadError(ValueError):
    """A file or series that cannot be segmented; the message names it and says why."""


@dataclass(frozen=True)
class SkippedFile:
    """A file found in a folder that is not part of any series, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class SliceInfo:
    """Where one 2D image of a series comes from and where it lies in the patient."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    frame_number: int | None  # 1-based frame in a multi-frame file, None for single-frame files
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) in mm
    slice_thickness: float | None
    mosaic_tile: int | None = None  # 1-based tile of a Siemens mosaic, None for other images


@dataclass
class MRSeries:
    """One MR series, decoded and sorted.

    ``pixels`` is float32 ``(n, rows, cols)`` after Rescale Slope/Intercept, in the order of
    ``slices``. ``datasets`` are the source headers (pixel data removed), one per file, in the
    order the files first appear in ``slices``; the SEG and SC builders reference them.
    """

    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str | None
    series_number: int | None
    pixels: np.ndarray
    slices: list[SliceInfo]
    datasets: list[Dataset]
    slice_spacing_mm: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def matrix(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])

    @property
    def is_multiframe(self) -> bool:
        return any(s.frame_number is not None for s in self.slices)

    @property
    def is_mosaic(self) -> bool:
        return any(s.mosaic_tile is not None for s in self.slices)

    @property
    def n_positions(self) -> int:
        """Number of distinct slice positions (less than ``n_slices`` for time series)."""
        keys = {position_key(s) for s in self.slices}
        return len(keys)

    @property
    def echo_planar(self) -> bool:
        """Whether the series was acquired with echo-planar readout (fMRI, diffusion, SE-EPI)."""
        return bool(self.datasets) and is_echo_planar(self.datasets[0])

    @property
    def contrast_enhanced(self) -> bool:
        """Whether the series was acquired after a contrast agent, by its header."""
        return bool(self.datasets) and is_contrast_enhanced(self.datasets[0])

    @property
    def log_name(self) -> str:
        """A stand-in for the series in logs and messages: a hash, never the UID or patient data."""
        return f"series {short_hash(self.series_instance_uid)}"

    def voxel_volume_ml(self) -> float | None:
        """Volume of one voxel in ml, or None when the geometry is unknown."""
        spacing = self.slices[0].pixel_spacing
        depth = self.slice_spacing_mm or self.slices[0].slice_thickness
        if spacing is None or depth is None:
            return None
        return spacing[0] * spacing[1] * depth / 1000.0


@dataclass
class FolderScan:
    """Result of :func:`scan_folder`: files per series, and files that were left out."""

    series: dict[str, list[Path]]
    skipped: list[SkippedFile]


def header_values(ds: Dataset, keyword: str) -> list[str]:
    """The attribute's values as stripped strings; [] when absent, empty or unreadable."""
    try:
        value = ds.get(keyword)
    except Exception:
        return []
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def is_echo_planar(ds: Dataset) -> bool:
    """An echo-planar acquisition by its header: Scanning Sequence holds EP (MR Image), or Echo
    Planar Pulse Sequence is YES (Enhanced MR). Vendors write one or the other; junk reads as no."""
    return "EP" in (v.upper() for v in header_values(ds, "ScanningSequence")) or [
        v.upper() for v in header_values(ds, "EchoPlanarPulseSequence")] == ["YES"]


# What technologists type into Contrast/Bolus Agent when no agent was given.
_NO_AGENT = re.compile(r"^(NONE|NIL|NULL|NA|N/A|NOT APPLICABLE|UNKNOWN|NATIVE?|KEIN\w*|SANS\b.*|WITHOUT\b.*|NO\b.*|NON CONTRAST\b.*)$")


def names_an_agent(values: list[str]) -> bool:
    """Whether Contrast/Bolus Agent text names an agent: some letters, not a "none" in one of the
    ways a console or a technologist writes it ("NONE", "NO", "N/A", "-", "0", "NATIV")."""
    words = [" ".join(re.sub(r"[^A-Z0-9/]+", " ", v.upper()).split()) for v in values]
    return any(re.search(r"[A-Z]{2}", w) and not _NO_AGENT.match(w) for w in words)


def is_contrast_enhanced(ds: Dataset) -> bool:
    """Acquired after a contrast agent, by the header: Contrast/Bolus Agent names one (MR Image),
    or the Enhanced Contrast/Bolus module lists an agent and no frame says it was not given
    (Enhanced MR). Most scanners leave the attribute empty without contrast; junk reads as no."""
    if names_an_agent(header_values(ds, "ContrastBolusAgent")):
        return True
    try:
        agents = list(ds.get("ContrastBolusAgentSequence") or [])
        groups = [*(ds.get("SharedFunctionalGroupsSequence") or [])[:1], *(ds.get("PerFrameFunctionalGroupsSequence") or [])[:1]]
        given = [v.upper() for g in groups for u in (g.get("ContrastBolusUsageSequence") or []) for v in header_values(u, "ContrastBolusAgentAdministered")]
    except Exception:
        return False
    return bool(agents) and "NO" not in given


def read_header(path: Path) -> Dataset:
    """Read a DICOM file's header (no pixel data); raise ``SeriesLoadError`` if it is not DICOM.

    Files without the 128-byte preamble are accepted when they parse as a dataset with a
    SOP Instance UID, as some older exports write them that way.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except (OSError, ValueError, EOFError) as exc:
        raise SeriesLoadError(f"File {path} could not be read as DICOM: {exc}.") from exc
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        ok = "SOPInstanceUID" in ds and "SeriesInstanceUID" in ds
    except Exception as exc:
        raise SeriesLoadError(f"File {path} is not a DICOM file ({type(exc).__name__}).") from exc
    if not ok:
        raise SeriesLoadError(f"File {path} is not a DICOM file (no DICM preamble, no UIDs).")
    return ds


def scan_folder(folder: Path | str) -> FolderScan:
    """Group every DICOM file under ``folder`` (recursively) by Series Instance UID."""
    root = Path(folder)
    if not root.is_dir():
        raise SeriesLoadError(f"Input folder {root} does not exist or is not a folder.")
    series: dict[str, list[Path]] = {}
    skipped: list[SkippedFile] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = read_header(path)
        except SeriesLoadError as exc:
            skipped.append(SkippedFile(path, str(exc)))
            continue
        uid = ds.get("SeriesInstanceUID")
        if not uid:
            skipped.append(SkippedFile(path, f"File {path} has no Series Instance UID."))
            continue
        series.setdefault(str(uid), []).append(path)
    return FolderScan(series=series, skipped=skipped)


def load_folder(folder: Path | str) -> tuple[list[MRSeries], list[SkippedFile]]:
    """Load every series in ``folder``; series that cannot be segmented are listed as skipped."""
    scan = scan_folder(folder)
    loaded: list[MRSeries] = []
    skipped = list(scan.skipped)
    for paths in scan.series.values():
        try:
            loaded.append(load_series(paths))
        except SeriesLoadError as exc:
            skipped.extend(SkippedFile(p, str(exc)) for p in paths[:1])
    return loaded, skipped


def load_series(paths: Iterable[Path | str], all_volumes: bool = False) -> MRSeries:
    """Decode the files of one MR series into one sorted float32 volume.

    What real series hold beyond one clean volume is resolved here, each with a note:

    - an instance that cannot be used (unreadable, no or undecodable pixel data, not MR,
      colour, a matrix unlike the rest) is left out, and the rest is loaded;
    - a Siemens mosaic is cut into its slices (:mod:`dicom_node.imaging.mosaic`);
    - repeated slice positions (fMRI time points, diffusion directions) are split into volumes
      and the first one in acquisition order is kept (:func:`split_volumes`); ``all_volumes``
      keeps them all, position-major.

    Raises:
        SeriesLoadError: no files, files of several series, or no usable instance (the message
            is that of the first unusable one).
    """
    files = [Path(p) for p in paths]
    if not files:
        raise SeriesLoadError("No files were given for the series.")
    series_uid: str | None = None
    entries: list[tuple[tuple, SliceInfo, np.ndarray]] = []
    headers: dict[Path, Dataset] = {}
    first: Dataset | None = None
    refusals: list[tuple[SeriesLoadError, str]] = []  # (error, note text without the path)
    mosaic_notes: set[str] = set()
    for path in files:
        try:
            ds = _read_full(path)
        except SeriesLoadError as exc:
            refusals.append((exc, "a file that could not be read as DICOM"))
            continue
        uid = str(ds.get("SeriesInstanceUID", ""))
        if not uid or "SOPInstanceUID" not in ds:
            refusals.append((SeriesLoadError(f"File {path} is not a DICOM image (no Series or SOP Instance UID)."),
                             "a file that is not a DICOM image (no UIDs)"))
            continue
        if series_uid is None:
            series_uid, first = uid, ds
        elif uid != series_uid:
            raise SeriesLoadError(
                f"File {path} belongs to another series than {files[0]}; "
                "give load_series the files of one series."
            )
        try:
            _check_segmentable(ds, path)
            frames = _decode(ds, path)
            slices = _slices_of(ds, path, frames)
        except SeriesLoadError as exc:
            refusals.append((exc, _without_path(str(exc), path, ds)))
            continue
        for info, frame in slices:
            entries.append((_sort_key(ds, info), info, frame))
            if info.mosaic_tile is not None:
                mosaic_notes.add(
                    f"Siemens mosaic: {len(slices)} slices of {frame.shape[0]}x{frame.shape[1]} cut from each "
                    f"{frames.shape[1]}x{frames.shape[2]} image (NumberOfImagesInMosaic, CSA slice normal)."
                )
        headers[path] = _header_only(ds)
    if not entries or series_uid is None or first is None:
        if refusals:
            raise refusals[0][0]
        raise SeriesLoadError("No files were given for the series.")
    notes = [f"Left out {text} (the rest of the series is segmented)." for _, text in refusals]
    notes.extend(sorted(mosaic_notes))
    entries = _keep_common_matrix(entries, notes)

    infos = [info for _, info, _ in entries]
    if any(i.position is None or i.orientation is None for i in infos):
        notes.append("Some slices have no position or orientation; sorted by instance number.")
        entries.sort(key=lambda e: e[0][1:])
    else:
        _check_single_orientation(infos, series_uid)
        entries.sort(key=lambda e: (position_key(e[1]), *e[0][1:]))
        if not all_volumes:
            entries = split_volumes(entries, notes)
    infos = [info for _, info, _ in entries]
    pixels = np.stack([frame for _, _, frame in entries]).astype(np.float32, copy=False)
    ordered_files = list(dict.fromkeys(i.path for i in infos))
    return MRSeries(
        series_instance_uid=series_uid,
        study_instance_uid=str(first.StudyInstanceUID),
        frame_of_reference_uid=str(first.FrameOfReferenceUID) if "FrameOfReferenceUID" in first else None,
        series_number=_int_or_none(first.get("SeriesNumber")),
        pixels=pixels,
        slices=infos,
        datasets=[headers[p] for p in ordered_files],
        slice_spacing_mm=_slice_spacing(infos),
        notes=notes,
    )


Entry = tuple[tuple, SliceInfo, np.ndarray]


def split_volumes(entries: list[Entry], notes: list[str]) -> list[Entry]:
    """The first volume of a series whose slice positions repeat; the rest is left out with a note.

    ``entries`` are sorted by position, then acquisition number, instance number and frame (or
    tile). The k-th image at every position forms volume k, so volume 1 holds the first image in
    acquisition order at each position: it is complete by construction (every position has one)
    and is the one a reader would look at first. A series without repeats is returned as is.
    """
    by_position: dict[float | None, list[Entry]] = {}
    for entry in entries:
        by_position.setdefault(position_key(entry[1]), []).append(entry)
    counts = {len(group) for group in by_position.values()}
    if counts == {1}:
        return entries
    volumes = max(counts)
    kept = [group[0] for group in by_position.values()]
    shape = "" if len(counts) == 1 else " (not every position in every volume)"
    notes.append(
        f"Repeated slice positions: {volumes} volumes of {len(by_position)} positions{shape}, as in fMRI or "
        f"diffusion; volume 1 (first in acquisition order) is segmented, {len(entries) - len(kept)} images left out."
    )
    return kept


def _keep_common_matrix(entries: list[Entry], notes: list[str]) -> list[Entry]:
    """Images of the most common matrix; files of another matrix are left out with a note."""
    shapes: dict[tuple[int, ...], int] = {}
    for _, _, frame in entries:
        shapes[frame.shape] = shapes.get(frame.shape, 0) + 1
    if len(shapes) == 1:
        return entries
    common = max(shapes, key=lambda shape: shapes[shape])
    dropped = {info.sop_instance_uid for _, info, frame in entries if frame.shape != common}
    for uid in sorted(dropped):
        other = next(frame.shape for _, info, frame in entries if info.sop_instance_uid == uid)
        notes.append(
            f"Left out instance {short_hash(uid)}: its matrix {other[0]}x{other[1]} differs from the "
            f"series' {common[0]}x{common[1]} (the rest of the series is segmented)."
        )
    return [entry for entry in entries if entry[2].shape == common]


def _without_path(message: str, path: Path, ds: Dataset) -> str:
    """A refusal as a note: the file named by a hash of its SOP Instance UID, never its path."""
    uid = str(ds.get("SOPInstanceUID", "")) or str(path)
    text = message.replace(f"File {path}", "").replace(str(path), "").strip().lstrip(":").strip().rstrip(".")
    return f"instance {short_hash(uid)}: {text}"


def _int_or_none(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _slices_of(ds: Dataset, path: Path, frames: np.ndarray) -> list[tuple[SliceInfo, np.ndarray]]:
    """(slice, pixels) of every 2D image in ``ds``: its frames, or the tiles of a mosaic."""
    infos = _slice_infos(ds, path)
    if len(infos) == 1 and mosaic_tile_count(ds):
        try:
            tiles = split_mosaic(ds, frames[0])
        except ValueError as exc:
            raise SeriesLoadError(f"File {path} is a mosaic that cannot be split: {exc}.") from exc
        base = infos[0]
        return [(replace(base, position=tile.position, mosaic_tile=tile.index + 1), tile.pixels) for tile in tiles]
    return [(info, frames[index]) for index, info in enumerate(infos)]


def _read_full(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, force=not _has_preamble(path))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise SeriesLoadError(f"File {path} could not be read as DICOM: {exc}.") from exc


def _has_preamble(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _check_segmentable(ds: Dataset, path: Path) -> None:
    modality = str(ds.get("Modality", "")) or "missing"
    if modality != "MR":
        raise SeriesLoadError(f"File {path} is not MR (Modality is {modality}); only MR is segmented.")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise SeriesLoadError(f"File {path} has no pixel data.")
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise SeriesLoadError(
            f"File {path} is a colour image (Samples per Pixel {samples}, "
            f"Photometric Interpretation {photometric}); only grayscale MR is segmented."
        )


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Pixel data as float32 ``(frames, rows, cols)`` with the modality rescale applied."""
    try:
        raw = ds.pixel_array
    except Exception as exc:
        ts = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        name = getattr(ts, "name", ts)
        raise SeriesLoadError(f"File {path}: pixel data ({name}) could not be decoded: {exc}") from exc
    frames = raw.reshape((-1, raw.shape[-2], raw.shape[-1])).astype(np.float32)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames.shape[0] != n_frames:
        raise SeriesLoadError(
            f"File {path} declares {n_frames} frames but its pixel data holds {frames.shape[0]}."
        )
    for index in range(n_frames):
        slope, intercept = _rescale(ds, index)
        if slope != 1.0 or intercept != 0.0:
            frames[index] = frames[index] * slope + intercept
    if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":
        frames = frames.max() - frames
    return frames


def _frame_item(ds: Dataset, index: int, sequence: str) -> Dataset | None:
    """An Enhanced functional group item for frame ``index``: per-frame first, then shared."""
    for groups, item_index in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > item_index and sequence in items[item_index]:
            inner = items[item_index].get(sequence)
            if len(inner):
                return inner[0]
    return None


def _rescale(ds: Dataset, index: int) -> tuple[float, float]:
    item = _frame_item(ds, index, "PixelValueTransformationSequence") if "NumberOfFrames" in ds else None
    source = item if item is not None else ds
    slope = source.get("RescaleSlope")
    intercept = source.get("RescaleIntercept")
    return (float(slope) if slope not in (None, "") else 1.0, float(intercept) if intercept not in (None, "") else 0.0)


def _slice_infos(ds: Dataset, path: Path) -> list[SliceInfo]:
    sop_uid = str(ds.SOPInstanceUID)
    sop_class = str(ds.SOPClassUID)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        infos = []
        for index in range(n_frames):
            position = _frame_item(ds, index, "PlanePositionSequence")
            orientation = _frame_item(ds, index, "PlaneOrientationSequence")
            measures = _frame_item(ds, index, "PixelMeasuresSequence")
            infos.append(
                SliceInfo(
                    path=path,
                    sop_instance_uid=sop_uid,
                    sop_class_uid=sop_class,
                    frame_number=index + 1,
                    position=_floats(position, "ImagePositionPatient", 3),
                    orientation=_floats(orientation, "ImageOrientationPatient", 6),
                    pixel_spacing=_floats(measures, "PixelSpacing", 2),
                    slice_thickness=_float(measures, "SliceThickness"),
                )
            )
        return infos
    if n_frames != 1:
        raise SeriesLoadError(f"File {path} has {n_frames} frames but no per-frame geometry.")
    return [
        SliceInfo(
            path=path,
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            frame_number=None,
            position=_floats(ds, "ImagePositionPatient", 3),
            orientation=_floats(ds, "ImageOrientationPatient", 6),
            pixel_spacing=_floats(ds, "PixelSpacing", 2),
            slice_thickness=_float(ds, "SliceThickness"),
        )
    ]


def float_values(value: object, count: int) -> tuple[float, ...] | None:
    """``count`` finite numbers from a multi-valued DS/FD value; None for anything else."""
    if value in (None, ""):
        return None
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(math.isfinite(n) for n in numbers) else None


def _floats(ds: Dataset | None, keyword: str, count: int) -> Any:  # a tuple of ``count`` floats, as the field expects
    return float_values(_safe_get(ds, keyword), count)


def _float(ds: Dataset | None, keyword: str) -> float | None:
    raw = _safe_get(ds, keyword)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _sort_key(ds: Dataset, info: SliceInfo) -> tuple:
    """(position placeholder, acquisition number, instance number, frame number, ...)."""
    return (
        0.0,
        _int_or_none(_safe_get(ds, "AcquisitionNumber")) or 0,
        _int_or_none(_safe_get(ds, "InstanceNumber")) or 0,
        info.frame_number or 0,
        info.sop_instance_uid,
        info.mosaic_tile or 0,
    )


def _safe_get(ds: Dataset | None, keyword: str) -> object:
    """``ds.get(keyword)``, or None when the value does not decode (e.g. ``***`` in an IS or DS)."""
    if ds is None:
        return None
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, OverflowError):
        return None


def _normal(orientation: Sequence[float]) -> tuple[float, float, float]:
    """Row cosines x column cosines, in plain floats: numpy costs more than it saves on 3 values."""
    r0, r1, r2, c0, c1, c2 = orientation
    return (r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0)


def _check_single_orientation(infos: Sequence[SliceInfo], series_uid: str) -> None:
    reference = np.asarray(infos[0].orientation)
    for info in infos[1:]:
        if np.max(np.abs(np.asarray(info.orientation) - reference)) > _ORIENTATION_TOLERANCE:
            raise SeriesLoadError(
                f"Series {short_hash(series_uid)} mixes slice orientations (file {info.path}); "
                "a series with several orientations (e.g. a localizer) is not segmented."
            )


def position_key(info: SliceInfo) -> float | None:
    """The slice's distance along its normal in mm, rounded to 1 um: the sort and grouping key."""
    if info.position is None or info.orientation is None:
        return None
    n0, n1, n2 = _normal(info.orientation)
    x, y, z = info.position
    return round(n0 * x + n1 * y + n2 * z, 3)


def volume_directions(series: MRSeries) -> tuple[tuple[float, float, float], ...] | None:
    """Patient directions (LPS) of increasing slice, row and column index of ``series.pixels``,
    or None when the orientation is unknown. Slices are sorted along the normal (row x column)."""
    orientation = series.slices[0].orientation
    if orientation is None:
        return None
    row_dir, col_dir = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row_dir, col_dir)
    return tuple(float(v) for v in normal), tuple(float(v) for v in col_dir), tuple(float(v) for v in row_dir)  # type: ignore[return-value]


def ras_affine(series: MRSeries) -> np.ndarray:
    """The NIfTI (RAS) affine of ``series.pixels.transpose(2, 1, 0)``: voxel (column, row, slice)
    to millimetres, for tools that read NIfTI (deepbet). Raises ValueError without geometry."""
    first = series.slices[0]
    if first.orientation is None or first.position is None:
        raise ValueError(f"{series.log_name} has no slice orientation or position.")
    row_mm, col_mm = first.pixel_spacing or (1.0, 1.0)
    row_dir, col_dir = np.asarray(first.orientation[:3], dtype=float), np.asarray(first.orientation[3:], dtype=float)
    second = series.slices[1].position if series.n_slices > 1 else None
    depth = series.slice_spacing_mm or first.slice_thickness or 1.0
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = row_dir * col_mm, col_dir * row_mm
    affine[:3, 2] = np.asarray(second) - np.asarray(first.position) if second is not None else np.cross(row_dir, col_dir) * depth
    affine[:3, 3] = first.position
    affine[:2] *= -1  # LPS -> RAS
    return affine


def _slice_spacing(infos: Sequence[SliceInfo]) -> float | None:
    """Median distance between distinct slice positions along the normal, in mm."""
    keys = sorted({k for k in (position_key(i) for i in infos) if k is not None})
    if len(keys) < 2:
        return None
    return float(np.median(np.diff(keys)))


_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def _header_only(ds: Dataset) -> Dataset:
    """A copy of ``ds`` without its pixel data, to keep memory flat for long series.

    Built from ``items()``, which yields elements as read, still undecoded: iterating the dataset
    would decode every value of every header (two thirds of the load time of a Siemens series),
    while the SEG and SC builders read only a few.
    """
    header = Dataset({tag: element for tag, element in ds.items() if tag not in _PIXEL_TAGS})
    header.file_meta = ds.file_meta
    header.set_original_encoding(*ds.original_encoding, ds.original_character_set)  # type: ignore[call-arg]  # pydicom 3 takes the character set too
    header.preamble = getattr(ds, "preamble", None)
    return header


def per_source_image(series: MRSeries, array: np.ndarray) -> list[tuple[SliceInfo, np.ndarray]]:
    """``array`` (one entry per slice of ``series``) as (slice, data) per source image.

    For most series that is each slice as it is. The tiles of a Siemens mosaic are put back into
    their mosaic, one entry per mosaic image (its first tile's slice, without the tile number),
    so that SEG frames and SC images match the image they reference pixel for pixel.
    """
    if not series.is_mosaic:
        return list(zip(series.slices, array))
    headers = {str(ds.SOPInstanceUID): ds for ds in series.datasets}
    by_image: dict[str, list[int]] = {}
    for index, info in enumerate(series.slices):
        by_image.setdefault(info.sop_instance_uid, []).append(index)
    result = []
    for uid, indices in by_image.items():
        header = headers[uid]
        shape = (int(header.Rows), int(header.Columns))
        numbers = [series.slices[i].mosaic_tile or 0 for i in indices]
        first = series.slices[indices[numbers.index(min(numbers))]]
        result.append((replace(first, mosaic_tile=None), assemble_mosaic(array[indices], numbers, shape)))
    return result
