"""Training cases: a head volume, its brain mask and its geometry, from DICOM + SEG or NIfTI pairs.

A :class:`Case` holds one 3D head as ``(slices, rows, cols)`` float32 with a bool mask of the same
shape and the voxel spacing along each axis. Slices are drawn from all three orientations
(:func:`case_slices`), each normalised and letterboxed exactly as the segmenter does at inference
(:mod:`dicom_node.imaging.normalize`): the intensity window is that of the whole volume, as for a
series, and the slice is fitted to the network size by its physical aspect ratio.

Inputs (:func:`discover_cases`):

* DICOM: folders or files holding MR series and SEG files; a SEG is matched to the series whose
  Series Instance UID it references (``ReferencedSeriesSequence``). Series without a SEG are left
  out with a note, unless listed as negatives (no brain: an all-background mask).
* NIfTI: a folder with an image (``t1.nii.gz`` or any ``*.nii[.gz]`` without "mask" in its name)
  and a mask whose name contains ``mask_name`` (default ``brainmask_deepbet``), or an
  ``IMAGE.nii.gz:MASK.nii.gz`` pair.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
import torch

from dicom_node.imaging.context import context_indices, context_offset
from dicom_node.imaging.loading import MRSeries, SeriesLoadError, load_series, names_an_agent, read_header, volume_directions
from dicom_node.imaging.normalize import Letterbox, intensity_window, normalize
from dicom_node.imaging.triplanar import VIEW_AXES

DEFAULT_MASK_NAME = "brainmask_deepbet"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
ORIENTATIONS = (0, 1, 2)
# load_nifti_case's layout in patient (LPS) terms: slices run to the right (LPS -x), rows from head
# to foot (LPS -z), columns toward the face (LPS -y).
NIFTI_DIRECTIONS = ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, -1.0, 0.0))


@dataclass
class Case:
    """One head: volume ``(n, rows, cols)``, bool mask, spacing in mm along each axis."""

    name: str
    volume: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    native_axis: int = 0  # the acquisition's slice axis (DICOM); NIfTI volumes have none
    series: MRSeries | None = None  # the DICOM series, for evaluation through the node's path
    kind: str = "dicom"  # dicom | nifti
    negative: bool = False  # no brain anywhere (phantom): every target is background
    notes: list[str] = field(default_factory=list)
    directions: tuple[tuple[float, float, float], ...] | None = None  # patient (LPS) direction of each axis, when known
    echo_planar: bool = False  # an EPI acquisition: the model may have its own threshold for these
    contrast_enhanced: bool = False  # acquired after a contrast agent: so may these
    draw_weight: float = 1.0  # how often the trainer draws this head, against 1 for every other head

    def __post_init__(self) -> None:
        if self.mask.shape != self.volume.shape:
            raise ValueError(f"{self.name}: mask {self.mask.shape} does not match volume {self.volume.shape}.")
        if not self.draw_weight > 0:
            raise ValueError(f"{self.name}: draw weight {self.draw_weight} is not positive.")

    @property
    def window(self) -> tuple[float, float]:
        return intensity_window(self.volume)


def stack_directions(case: Case, axis: int) -> tuple[tuple[float, float, float], ...] | None:
    """The patient directions of the three axes of ``oriented_stack(case.volume, ..., axis)``."""
    if case.directions is None:
        return None
    return tuple(case.directions[a] for a in VIEW_AXES[axis])


def oriented_stack(volume: np.ndarray, spacing: Sequence[float], axis: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Slices of ``volume`` along ``axis`` as ``(n, rows, cols)`` with their in-plane spacing.

    Axis 0 is the stack as stored. Axes 1 and 2 are reformats, transposed so that the stored rows
    (head-up in a scanner series, superior-up for the canonical NIfTI views) stay vertical.
    """
    if axis not in VIEW_AXES:
        raise ValueError(f"axis must be 0, 1 or 2, not {axis}.")
    order = VIEW_AXES[axis]  # axis 1: (n, r, c) -> (r, c, n), rows of the new slices are the stored columns; axis 2: -> (c, r, n)
    stack = volume if axis == 0 else np.ascontiguousarray(volume.transpose(order))
    return stack, (float(spacing[order[1]]), float(spacing[order[2]]))


@dataclass
class SliceSet:
    """Network-ready slices of one case and orientation: ``images`` float32 (n, S, S) in [0, 1]."""

    case: str
    axis: int
    images: np.ndarray
    masks: np.ndarray  # bool (n, S, S)
    valid: np.ndarray  # bool (S, S): the letterbox's inner rectangle (the rest is padding)
    has_brain: np.ndarray  # bool (n,)
    has_head: np.ndarray  # bool (n,)
    depth_mm: float = 0.0  # spacing between the slices, for their neighbours (``dicom_node.imaging.context``)

    def inputs(self, indices: np.ndarray, channels: int, context_mm: float) -> np.ndarray:
        """``(len(indices), channels, S, S)``: the slices with their neighbours, as the segmenter shows them."""
        offset = context_offset(self.depth_mm, context_mm)
        return self.images[context_indices(np.asarray(indices), len(self.images), offset, channels)]


def case_slices(case: Case, size: int, axes: Iterable[int] = ORIENTATIONS) -> list[SliceSet]:
    """Every slice of ``case`` along ``axes``, normalised and letterboxed as at inference."""
    window = case.window
    sets = []
    for axis in axes:
        stack, spacing = oriented_stack(case.volume, case.spacing, axis)
        mstack, _ = oriented_stack(case.mask, case.spacing, axis)
        box = Letterbox.fit(stack.shape[1], stack.shape[2], size, spacing)
        with torch.no_grad():
            images = box.to_network(normalize(torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32)), window))[:, 0]
            masks = box.to_network(torch.from_numpy(mstack.astype(np.float32)))[:, 0] > 0.5
        valid = np.zeros((size, size), dtype=bool)
        valid[box.top : box.top + box.inner_rows, box.left : box.left + box.inner_cols] = True
        images_np = images.numpy().astype(np.float32)
        masks_np = masks.numpy()
        has_head = (images_np > 0.05).mean(axis=(1, 2)) > 0.01
        sets.append(SliceSet(case.name, axis, images_np, masks_np, valid, np.asarray(masks_np.any(axis=(1, 2))), has_head, float(case.spacing[axis])))
    return sets


def axial_axis(case: Case) -> int:
    """The axis of ``case`` that runs closest to the patient's head-foot direction (LPS z)."""
    if case.directions is None:
        raise ValueError(f"{case.name}: the patient directions of its axes are not known, so its axial axis is not either.")
    return int(np.argmax([abs(d[2]) for d in case.directions]))


def thick_slice_copy(case: Case, thickness_mm: float, draw_weight: float = 1.0) -> Case | None:
    """``case`` as a 2D axial acquisition with contiguous slices ``thickness_mm`` thick, or None
    when its axial slices are already at least half that thick.

    Each new slice is the mean of the voxels its slab covers (the partial volume of a thick slice,
    which a 2D augmentation of a thin slice cannot make: a clinical axial T1 or T2 of 5-7 mm blends
    cortex, CSF, dura and bone at the brain's rim), and it is brain where at least half the slab is.
    """
    axis = axial_axis(case)
    step = thickness_mm / case.spacing[axis]
    if step < 2.0:
        return None
    volume, mask = np.moveaxis(case.volume, axis, 0), np.moveaxis(case.mask, axis, 0)
    edges = np.round(np.arange(int(volume.shape[0] // step) + 1) * step).astype(int)
    slabs = list(zip(edges[:-1], edges[1:]))
    thick = np.stack([volume[a:b].mean(axis=0) for a, b in slabs]).astype(np.float32)
    brain = np.stack([mask[a:b].mean(axis=0) >= 0.5 for a, b in slabs])
    spacing = list(case.spacing)
    spacing[axis] = float(np.mean([b - a for a, b in slabs])) * case.spacing[axis]
    return replace(case, name=f"{case.name}-axial{thickness_mm:g}mm", volume=np.ascontiguousarray(np.moveaxis(thick, 0, axis)),
                   mask=np.ascontiguousarray(np.moveaxis(brain, 0, axis)), spacing=(spacing[0], spacing[1], spacing[2]),
                   native_axis=axis, series=None, notes=[], draw_weight=draw_weight)


def save_cases(path: Path | str, cases: Sequence[Case]) -> Path:
    """Write ``cases`` to one compressed ``.npz``: volumes, masks and geometry, not the DICOM series.

    Training can then run where neither the data folders nor the DICOM stack are (a GPU machine).
    Integer-valued volumes are stored as 16-bit integers, exactly; others as float32.
    """
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, case in enumerate(cases):
        volume = case.volume
        for dtype in (np.uint16, np.int16):
            info = np.iinfo(dtype)
            if volume.min() >= info.min and volume.max() <= info.max and np.array_equal(volume, np.round(volume)):
                volume = volume.astype(dtype)
                break
        else:
            volume = volume.astype(np.float32)
        arrays[f"volume{i}"], arrays[f"mask{i}"] = volume, np.packbits(case.mask)
        meta.append({"name": case.name, "spacing": list(case.spacing), "native_axis": case.native_axis,
                     "kind": case.kind, "negative": case.negative, "shape": list(case.mask.shape),
                     "directions": [list(d) for d in case.directions] if case.directions else None, "echo_planar": case.echo_planar,
                     "contrast_enhanced": case.contrast_enhanced})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    target = Path(path)
    np.savez_compressed(target, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
    return target


def load_cases(path: Path | str) -> list[Case]:
    """The cases :func:`save_cases` wrote, with float32 volumes as the readers give them."""
    with np.load(Path(path)) as pack:
        meta = json.loads(pack["meta"].tobytes())
        cases = []
        for i, m in enumerate(meta):
            mask = np.unpackbits(pack[f"mask{i}"], count=int(np.prod(m["shape"]))).reshape(m["shape"]).astype(bool)
            cases.append(Case(name=m["name"], volume=pack[f"volume{i}"].astype(np.float32), mask=mask,
                              spacing=tuple(m["spacing"]), native_axis=m["native_axis"], kind=m["kind"], negative=m["negative"],
                              directions=tuple(tuple(d) for d in m["directions"]) if m.get("directions") else None,
                              echo_planar=bool(m.get("echo_planar", False)), contrast_enhanced=bool(m.get("contrast_enhanced", False))))
    return cases


# --------------------------------------------------------------------------------------------
# Reading cases


def load_nifti_case(image_path: Path | str, mask_path: Path | str, name: str | None = None) -> Case:
    """A NIfTI head and its mask, reoriented to RAS.

    The volume is stored as ``(R->L sagittal index, S->I rows, A->P cols)`` so that axis 0 gives
    sagittal slices, axis 1 axial and axis 2 coronal (see :func:`oriented_stack`). A BIDS sidecar
    beside the image (``t1.json`` for ``t1.nii.gz``, as dcm2niix writes it) tells an EPI by its
    ``ScanningSequence`` and a contrast agent by its ``ContrastBolusIngredient``.
    """
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(str(image_path)))
    mask_img = nib.as_closest_canonical(nib.load(str(mask_path)))
    data = np.asarray(image.get_fdata(dtype=np.float32))
    mask = np.asarray(mask_img.get_fdata(dtype=np.float32)) > 0.5
    if data.ndim == 4:
        data = data[..., 0]
    if data.shape != mask.shape:
        raise ValueError(f"NIfTI image {image_path} {data.shape} and mask {mask_path} {mask.shape} differ in shape.")
    zooms = [float(z) for z in image.header.get_zooms()[:3]]
    # RAS (x, y, z) -> (x, -z, y): sagittal slices along x with superior at the top, anterior left.
    def reorder(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.transpose(0, 2, 1)[:, ::-1, :])

    volume = reorder(data)
    volume = volume - min(0.0, float(volume.min()))  # non-negative like MR magnitudes
    sidecar = read_sidecar(Path(image_path))
    return Case(
        name=name or Path(image_path).parent.name,
        volume=volume.astype(np.float32),
        mask=reorder(mask),
        spacing=(zooms[0], zooms[2], zooms[1]),
        kind="nifti",
        directions=NIFTI_DIRECTIONS,
        echo_planar=sidecar_echo_planar(sidecar),
        contrast_enhanced=sidecar_contrast_enhanced(sidecar),
    )


def read_sidecar(image_path: Path) -> dict:
    """The image's BIDS sidecar (``t1.json`` beside ``t1.nii.gz``); {} when there is none or it is not a JSON object."""
    sidecar = image_path.parent / (image_path.name.split(".")[0] + ".json")
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sidecar_echo_planar(sidecar: dict) -> bool:
    """Whether a BIDS sidecar names an echo-planar acquisition (``"ScanningSequence": "EP"``;
    dcm2niix joins several values with ``_``). An empty one (none, or not JSON): not EPI."""
    value = sidecar.get("ScanningSequence", "")
    return isinstance(value, str) and "EP" in re.split(r"[_\\\s]+", value.upper())


def sidecar_contrast_enhanced(sidecar: dict) -> bool:
    """Whether a BIDS sidecar names a contrast agent (``ContrastBolusIngredient``, as BIDS has it, or
    ``ContrastBolusAgent``, the DICOM attribute's name), read as the node reads the header."""
    values = [sidecar.get(k) for k in ("ContrastBolusIngredient", "ContrastBolusAgent")]
    return names_an_agent([v for v in values if isinstance(v, str)])


def series_volume(series: MRSeries) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The series' pixels as a volume and its spacing (slice spacing, row spacing, column spacing)."""
    spacing2d = series.slices[0].pixel_spacing or (1.0, 1.0)
    depth = series.slice_spacing_mm or series.slices[0].slice_thickness or spacing2d[0]
    return series.pixels, (float(depth), float(spacing2d[0]), float(spacing2d[1]))


def dicom_case(series: MRSeries, mask: np.ndarray, name: str, negative: bool = False) -> Case:
    volume, spacing = series_volume(series)
    return Case(name=name, volume=volume, mask=mask.astype(bool), spacing=spacing, series=series, kind="dicom", negative=negative,
                directions=volume_directions(series), echo_planar=series.echo_planar,
                contrast_enhanced=series.contrast_enhanced)


def _seg_referenced_series(ds: pydicom.Dataset) -> set[str]:
    uids = set()
    for item in ds.get("ReferencedSeriesSequence", []) or []:
        if "SeriesInstanceUID" in item:
            uids.add(str(item.SeriesInstanceUID))
    return uids


def _files(paths: Iterable[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file()))
        elif p.is_file():
            out.append(p)
    return out


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(".nii") or path.name.endswith(".nii.gz")


def _nifti_pairs(path: Path, mask_name: str) -> list[tuple[Path, Path]]:
    if ":" in str(path) and not path.exists():
        image, mask = str(path).split(":", 1)
        return [(Path(image), Path(mask))]
    if not path.is_dir():
        return []
    pairs = []
    for folder in sorted({p.parent for p in path.rglob("*") if _is_nifti(p)}):
        niftis = sorted(p for p in folder.iterdir() if _is_nifti(p))
        masks = [p for p in niftis if mask_name in p.name]
        images = [p for p in niftis if "mask" not in p.name.lower()]
        if masks and images:
            t1 = [p for p in images if p.name.startswith("t1.")]
            pairs.append(((t1 or images)[0], masks[0]))
    return pairs


def discover_cases(
    inputs: Sequence[Path | str],
    mask_name: str = DEFAULT_MASK_NAME,
    negatives: Sequence[Path | str] = (),
    log=print,
) -> list[Case]:
    """Every case found in ``inputs`` (DICOM series + SEG, NIfTI pairs) and ``negatives`` (no brain)."""
    from dicom_node.outputs.seg import read_seg_mask

    cases: list[Case] = []
    paths = [Path(p) for p in inputs]
    dicom_paths: list[Path] = []
    for path in paths:
        pairs = _nifti_pairs(path, mask_name)
        for image, mask in pairs:
            cases.append(load_nifti_case(image, mask, name=image.parent.name if image.name.startswith("t1.") else image.name.split(".")[0]))
        if ":" in str(path) and not path.exists():
            continue
        dicom_paths.append(path)
    series_files: dict[str, list[Path]] = {}
    segs: dict[str, list[Path]] = {}
    for f in _files(dicom_paths):
        if _is_nifti(f):
            continue
        try:
            ds = read_header(f)
        except SeriesLoadError:
            continue
        if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS or str(ds.get("Modality", "")) == "SEG":
            for uid in _seg_referenced_series(ds):
                segs.setdefault(uid, []).append(f)
        elif "SeriesInstanceUID" in ds:
            series_files.setdefault(str(ds.SeriesInstanceUID), []).append(f)
    for uid, files in series_files.items():
        if uid not in segs:
            log(f"Skipping a series of {len(files)} files under {files[0].parent}: no SEG references it.")
            continue
        try:
            series = load_series(files)
        except SeriesLoadError as exc:
            log(f"Skipping a series under {files[0].parent}: {exc}")
            continue
        brain = np.zeros(series.pixels.shape, dtype=bool)
        for seg_path in segs[uid]:
            brain |= read_seg_mask(seg_path, series)
        cases.append(dicom_case(series, brain, name=files[0].parent.name))
    for neg in negatives:
        for files in _group_series(_files([Path(neg)])).values():
            try:
                series = load_series(files)
            except SeriesLoadError as exc:
                log(f"Skipping negative series under {files[0].parent}: {exc}")
                continue
            cases.append(dicom_case(series, np.zeros(series.pixels.shape, dtype=bool), name=files[0].parent.name, negative=True))
    return cases


def _group_series(files: Iterable[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        try:
            ds = read_header(f)
        except SeriesLoadError:
            continue
        if str(ds.get("Modality", "")) == "MR" and "SeriesInstanceUID" in ds:
            groups.setdefault(str(ds.SeriesInstanceUID), []).append(f)
    return groups
