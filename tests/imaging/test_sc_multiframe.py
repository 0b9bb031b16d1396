"""The multi-frame pseudocolor SC: built, written, validated with dciodvfy, read back with pydicom."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameTrueColorSecondaryCaptureImageStorage

from dicom_node.imaging.loading import MRSeries, load_series, per_source_image
from dicom_node.imaging.model_info import ArchSpec, ModelInfo
from dicom_node.imaging.pseudocolor import PseudocolorSettings, pseudocolor
from dicom_node.outputs.common import Equipment, OutputBuildError, derive_uid
from dicom_node.outputs.part10 import write_datasets
from dicom_node.outputs.sc import build_sc_series
from dicom_node.outputs.sc_multiframe import build_sc_multiframe

from .conftest import dciodvfy_errors

EQUIPMENT = Equipment.for_model(ModelInfo(name="test-brain", version="0.0.1-test", arch=ArchSpec()), "test-box")
SETTINGS = PseudocolorSettings()
# what the multi-frame object has of its own, or with another value, than the first single-frame
# image; then what holds the time of building
OWN = {"SOPClassUID", "SOPInstanceUID", "NumberOfFrames", "FrameIncrementPointer", "FrameLabelVector",
       "SourceImageSequence", "PixelData"}
MADE_NOW = {"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime", "SeriesDate",
            "SeriesTime", "DateOfSecondaryCapture", "TimeOfSecondaryCapture", "ContributingEquipmentSequence"}


def box_rgb(series: MRSeries) -> np.ndarray:
    mask = np.zeros(series.pixels.shape, dtype=bool)
    n, rows, cols = mask.shape
    mask[n // 4 : 3 * n // 4, rows // 4 : 3 * rows // 4, cols // 4 : 3 * cols // 4] = True
    return pseudocolor(series.pixels, mask, SETTINGS)


def check_written(series: MRSeries, rgb: np.ndarray, seed: str, folder) -> pydicom.Dataset:  # type: ignore[no-untyped-def]
    """Build, write, validate and read back; check frames and references against the sources."""
    built = build_sc_multiframe(series, rgb, EQUIPMENT, seed, SETTINGS)
    assert len(built) == 1
    (path,) = write_datasets(built, folder)
    expected = io.BytesIO()  # write_datasets' own encoder gives dcmwrite's bytes
    pydicom.dcmwrite(expected, built[0], enforce_file_format=True)
    assert path.read_bytes() == expected.getvalue()
    assert dciodvfy_errors(path) == []
    read = pydicom.dcmread(path)
    sources = per_source_image(series, rgb)
    assert read.SOPClassUID == read.file_meta.MediaStorageSOPClassUID == MultiFrameTrueColorSecondaryCaptureImageStorage
    assert read.SOPInstanceUID == read.file_meta.MediaStorageSOPInstanceUID == derive_uid(seed, "sc-multiframe")
    assert read.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert read.PhotometricInterpretation == "RGB" and read.PlanarConfiguration == 0
    assert read.NumberOfFrames == len(sources)
    assert read.FrameIncrementPointer == 0x00182002 and len(read.FrameLabelVector) == len(sources)
    pixels = read.pixel_array.reshape(len(sources), int(read.Rows), int(read.Columns), 3)  # one frame: no frame axis
    for index, (info, frame) in enumerate(sources):
        assert np.array_equal(pixels[index], frame), f"frame {index + 1}"
        item = read.SourceImageSequence[index]
        assert item.ReferencedSOPInstanceUID == info.sop_instance_uid, f"frame {index + 1}"
        assert item.get("ReferencedFrameNumber") == info.frame_number
    assert len(read.SourceImageSequence) == len(sources)
    assert read.SeriesInstanceUID == derive_uid(seed, "sc-series")
    return read


@pytest.mark.parametrize("folder", ["sag-t1-siemens-skyra", "enhanced-t1-siemens-xa30"])
def test_one_object_holds_every_slice_and_points_at_it(load_named, folder, tmp_path):
    series = load_named(folder)
    rgb = box_rgb(series)
    read = check_written(series, rgb, "seed-mf", tmp_path)
    assert read.NumberOfFrames == series.n_slices
    assert read.pixel_array.shape == (series.n_slices, *series.matrix, 3)
    assert np.array_equal(read.pixel_array, rgb)
    if series.is_multiframe:  # Enhanced source: the labels name instance and frame
        assert read.FrameLabelVector[4] == f"1 f{series.slices[4].frame_number}"
    else:
        assert read.FrameLabelVector[4] == str(series.datasets[4].InstanceNumber)
    # the same series, number and descriptive header as the single-frame variant of the job
    (single,) = write_datasets(build_sc_series(series, rgb, EQUIPMENT, "seed-mf", SETTINGS)[:1], tmp_path / "single")
    first = pydicom.dcmread(single)
    assert {e.keyword for e in read} - OWN == {e.keyword for e in first} - OWN
    for keyword in {e.keyword for e in first} - OWN - MADE_NOW:
        assert read[keyword] == first[keyword], keyword
    assert read.SeriesDescription == "Brain pseudocolor" and read.BurnedInAnnotation == "NO"
    rebuilt = build_sc_multiframe(series, rgb, EQUIPMENT, "seed-mf", SETTINGS, series_number=77)[0]
    assert rebuilt.SOPInstanceUID == read.SOPInstanceUID and rebuilt.SeriesNumber == 77


def test_a_mosaic_gets_one_frame_per_mosaic_image(heudiconv, tmp_path):
    paths = sorted((heudiconv / "b0dwiForFmap").glob("*.dcm"))
    series = load_series(paths, all_volumes=True)  # 3 mosaic images of 81 tiles
    assert series.is_mosaic and len(series.datasets) == 3
    read = check_written(series, box_rgb(series), "seed-mosaic", tmp_path)
    assert read.NumberOfFrames == 3 and (read.Rows, read.Columns) == (1368, 1350)


def test_a_wrong_rgb_is_refused_without_naming_the_series_uid(load_named):
    series = load_named("enhanced-t1-siemens-xa30")
    rgb = box_rgb(series)
    for wrong in (rgb[1:], rgb.astype(np.uint16)):
        with pytest.raises(OutputBuildError, match=series.log_name) as raised:
            build_sc_multiframe(series, wrong, EQUIPMENT, "seed-mf", SETTINGS)
        assert series.series_instance_uid not in str(raised.value)


def test_the_pipeline_writes_one_multiframe_sc_when_asked(load_named, shipped_segmenter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dicom_node.series.pipeline import process_series

    series = load_named("sag-t1-siemens-skyra")
    result = process_series(series, tmp_path, shipped_segmenter, "seed-pipeline", multiframe_sc=True)
    assert result.state == "segmented" and len(result.seg) == 1
    (sc,) = result.sc
    read = pydicom.dcmread(sc.path, stop_before_pixels=True)
    assert read.SOPClassUID == MultiFrameTrueColorSecondaryCaptureImageStorage and read.NumberOfFrames == series.n_slices
    assert (sc.sop_instance_uid, sc.series_instance_uid) == (read.SOPInstanceUID, read.SeriesInstanceUID)
    assert dciodvfy_errors(sc.path) == []
