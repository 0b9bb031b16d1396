"""SEG and SC: built, written, validated with dciodvfy and dcmqi, read back with highdicom and pydicom."""

from __future__ import annotations

import io

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_node.imaging.loading import load_series, scan_folder
from dicom_node.imaging.model_info import ArchSpec, ModelInfo
from dicom_node.imaging.pseudocolor import PseudocolorSettings, pseudocolor
from dicom_node.outputs.common import Equipment, derived_series_number
from dicom_node.outputs.part10 import write_dataset, write_datasets
from dicom_node.outputs.sc import build_sc_series
from dicom_node.outputs.seg import build_segs, frame_source_uids, read_seg_mask

from .conftest import dciodvfy_errors, segimage2itkimage

MODEL = ModelInfo(name="test-brain", version="0.0.1-test", arch=ArchSpec())
EQUIPMENT = Equipment.for_model(MODEL, device_serial_number="test-box")


def box_mask(series) -> np.ndarray:
    mask = np.zeros(series.pixels.shape, dtype=bool)
    n, rows, cols = mask.shape
    mask[n // 4 : 3 * n // 4, rows // 4 : 3 * rows // 4, cols // 4 : 3 * cols // 4] = True
    return mask


def test_siemens_seg_validates_converts_and_references_sources(load_named, siemens_reference_mask, tmp_path):
    series = load_named("sag-t1-siemens-skyra")
    (seg,) = build_segs(series, siemens_reference_mask, MODEL, EQUIPMENT, "seed-a")
    path = write_dataset(seg, tmp_path)
    assert dciodvfy_errors(path) == []
    expected = io.BytesIO()
    pydicom.dcmwrite(expected, seg, enforce_file_format=True)
    assert path.read_bytes() == expected.getvalue()

    read = hd.seg.segread(path)
    assert read.StudyInstanceUID == series.study_instance_uid
    assert read.FrameOfReferenceUID == series.frame_of_reference_uid
    assert read.Manufacturer == "dicom-node"
    assert "test-brain 0.0.1-test" in list(read.SoftwareVersions)
    assert read.SeriesNumber == derived_series_number(5, 901) == 5901
    segment = read.SegmentSequence[0]
    assert segment.SegmentLabel == "Brain" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "12738006"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("test-brain", "0.0.1-test")

    # every frame references a source slice by SOP Instance UID, at that slice's position
    by_uid = {s.sop_instance_uid: s for s in series.slices}
    raw = pydicom.dcmread(path)
    for (uid, _), item in zip(frame_source_uids(raw), raw.PerFrameFunctionalGroupsSequence):
        position = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose([float(v) for v in position], by_uid[uid].position, atol=1e-3)
    np.testing.assert_array_equal(read_seg_mask(path, series), siemens_reference_mask)

    nifti = segimage2itkimage(path, tmp_path / "dcmqi")
    assert int((np.asarray(nib.load(nifti).dataobj) > 0).sum()) == int(siemens_reference_mask.sum())


def test_uids_are_deterministic_per_seed(load_named):
    series = load_named("epi-ge-discovery")
    mask = box_mask(series)
    first = build_segs(series, mask, MODEL, EQUIPMENT, "seed-a")
    again = build_segs(series, mask, MODEL, EQUIPMENT, "seed-a")
    other = build_segs(series, mask, MODEL, EQUIPMENT, "seed-b")
    assert [s.SOPInstanceUID for s in first] == [s.SOPInstanceUID for s in again]
    assert first[0].SeriesInstanceUID == again[0].SeriesInstanceUID != other[0].SeriesInstanceUID
    assert all(pydicom.uid.UID(s.SOPInstanceUID).is_valid for s in first)


def test_epi_time_series_gets_one_seg_by_default(load_named):
    series = load_named("epi-ge-discovery")  # volume 1 of 10
    (seg,) = build_segs(series, box_mask(series), MODEL, EQUIPMENT, "seed-epi")
    assert {uid for uid, _ in frame_source_uids(seg)} <= {h.SOPInstanceUID for h in series.datasets}


def test_epi_time_series_loaded_whole_gets_one_seg_per_time_point(shared_data, tmp_path):
    paths = scan_folder(shared_data / "dicom" / "epi-ge-discovery").series.popitem()[1]
    series = load_series(paths, all_volumes=True)
    segs = build_segs(series, box_mask(series), MODEL, EQUIPMENT, "seed-epi")
    assert len(segs) == 10 and len({s.SeriesInstanceUID for s in segs}) == 1
    referenced = set()
    for seg in segs:
        referenced |= {uid for uid, _ in frame_source_uids(seg)}
    assert len(referenced) == 75  # the box covers the middle half of 15 positions x 10 time points
    path = write_dataset(segs[3], tmp_path)
    assert dciodvfy_errors(path) == []
    segimage2itkimage(path, tmp_path / "dcmqi")


def test_enhanced_multiframe_seg_references_frames(load_named, tmp_path):
    series = load_named("enhanced-t1-siemens-xa30")
    mask = box_mask(series)
    (seg,) = build_segs(series, mask, MODEL, EQUIPMENT, "seed-xa")
    path = write_dataset(seg, tmp_path)
    assert dciodvfy_errors(path) == []
    refs = frame_source_uids(pydicom.dcmread(path))
    assert {uid for uid, _ in refs} == {series.slices[0].sop_instance_uid}
    assert all(frame is not None for _, frame in refs)
    np.testing.assert_array_equal(read_seg_mask(path, series), mask)
    segimage2itkimage(path, tmp_path / "dcmqi")


def test_empty_mask_gives_a_valid_all_empty_seg(load_named, tmp_path):
    series = load_named("t1-phantom-ge-signa")
    (seg,) = build_segs(series, np.zeros(series.pixels.shape, dtype=bool), MODEL, EQUIPMENT, "seed-empty")
    assert seg.NumberOfFrames == series.n_slices
    path = write_dataset(seg, tmp_path)
    assert dciodvfy_errors(path) == []
    segimage2itkimage(path, tmp_path / "dcmqi")


@pytest.mark.parametrize("folder", ["sag-t1-siemens-skyra", "enhanced-t1-siemens-xa30", "sag-t1-philips-ingenia"])
def test_sc_series_validates_and_points_at_source_slices(load_named, folder, tmp_path):
    series = load_named(folder)
    mask = box_mask(series)
    settings = PseudocolorSettings()
    rgb = pseudocolor(series.pixels, mask, settings)
    images = build_sc_series(series, rgb, EQUIPMENT, "seed-sc", settings)
    assert len(images) == series.n_slices and len({i.SOPInstanceUID for i in images}) == series.n_slices
    paths = write_datasets(images, tmp_path)
    for image, path in zip(images, paths):  # shared elements encoded once, yet the files are dcmwrite's
        expected = io.BytesIO()
        pydicom.dcmwrite(expected, image, enforce_file_format=True)
        assert path.read_bytes() == expected.getvalue(), path.name
    middle = series.n_slices // 2
    for index in (0, middle, series.n_slices - 1):
        path = paths[index]
        assert dciodvfy_errors(path) == []
        read = pydicom.dcmread(path)
        assert read.StudyInstanceUID == series.study_instance_uid
        assert read.PhotometricInterpretation == "RGB" and read.SamplesPerPixel == 3
        assert read.pixel_array.shape == (*series.matrix, 3)
        assert np.array_equal(read.pixel_array, rgb[index]), "each image carries its own slice's pseudocolor"
        assert read.file_meta.MediaStorageSOPInstanceUID == read.SOPInstanceUID == images[index].SOPInstanceUID
        source = read.SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == series.slices[index].sop_instance_uid
        if series.is_multiframe:
            assert source.ReferencedFrameNumber == series.slices[index].frame_number
        assert read.InstanceNumber == index + 1
    rebuilt = build_sc_series(series, pseudocolor(series.pixels, mask, settings), EQUIPMENT, "seed-sc", settings)
    assert [i.SOPInstanceUID for i in rebuilt] == [i.SOPInstanceUID for i in images]


def dciodvfy_lines(path) -> list[str]:  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy (dicom3tools) is not installed: run the tests with `make test`")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))]


def test_seg_and_sc_headers_carry_series_date_and_nothing_outside_the_iod(load_named, tmp_path):
    series = load_named("sag-t1-siemens-skyra")
    assert series.datasets[0].RequestingService  # the Skyra header has one: the SEG must not copy it
    mask = box_mask(series)
    (seg,) = build_segs(series, mask, MODEL, EQUIPMENT, "seed-headers")
    settings = PseudocolorSettings()
    sc = build_sc_series(series, pseudocolor(series.pixels, mask, settings), EQUIPMENT, "seed-headers", settings)[0]
    for dataset in (seg, sc):
        path = write_dataset(dataset, tmp_path)
        read = pydicom.dcmread(path)
        assert read.SeriesDate == read.ContentDate and read.SeriesTime == read.ContentTime
        lines = dciodvfy_lines(path)
        assert not [line for line in lines if line.startswith("Error")], lines
        # the only warnings left are about values copied from the source (Person Name forms)
        assert all("Retired Person Name form" in line for line in lines), lines
    read_seg = pydicom.dcmread(tmp_path / f"{seg.SOPInstanceUID}.dcm")
    assert "ContentCreatorName" in read_seg and read_seg.ContentCreatorName == ""
    assert "RequestingService" not in read_seg


def _anonymised_like_uih(shared_data, folder):  # type: ignore[no-untyped-def]
    from tests.study import _uih_anonymised

    folder.mkdir()
    paths = []
    for path in sorted((shared_data / "dicom" / "sag-t1-siemens-skyra").glob("*.dcm"))[60:80]:
        ds = pydicom.dcmread(path)
        _uih_anonymised(ds)
        ds.save_as(folder / path.name)
        paths.append(folder / path.name)
    return paths


def test_invalid_dates_and_missing_type2_still_give_valid_outputs(shared_data, tmp_path):
    series = load_series(_anonymised_like_uih(shared_data, tmp_path / "uih"))
    assert "PatientSex" not in series.datasets[0] and series.datasets[0]["StudyDate"].value == "***"
    mask = box_mask(series)
    (seg,) = build_segs(series, mask, MODEL, EQUIPMENT, "seed-uih")
    settings = PseudocolorSettings()
    images = build_sc_series(series, pseudocolor(series.pixels, mask, settings), EQUIPMENT, "seed-uih", settings)
    for dataset in (seg, images[0]):
        path = write_dataset(dataset, tmp_path / "out")
        assert dciodvfy_errors(path) == []
        read = pydicom.dcmread(path)
        for keyword in ("PatientSex", "PatientBirthDate", "StudyDate", "StudyTime"):
            assert keyword in read and read[keyword].value in ("", None), keyword  # Type 2: present, empty
        assert read.PatientID == series.datasets[0].PatientID  # valid values are copied
        assert read.StudyInstanceUID == series.study_instance_uid
    assert series.datasets[0]["StudyDate"].value == "***"  # the source header is not changed


def test_outputs_that_fail_midway_publish_nothing_and_keep_the_file_already_there(load_named, tmp_path):
    """The SC images are staged, flushed together and only then renamed: a failure while
    encoding the third image leaves the folder as it was, with no staged ``.part`` files."""
    series = load_named("sag-t1-siemens-skyra")
    settings = PseudocolorSettings()
    images = build_sc_series(series, pseudocolor(series.pixels, box_mask(series), settings), EQUIPMENT, "seed-fail", settings)
    earlier = tmp_path / f"{images[0].SOPInstanceUID}.dcm"
    earlier.write_bytes(b"written by an earlier run")

    def failing():  # type: ignore[no-untyped-def]
        yield from images[:2]
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_datasets(failing(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [earlier.name]
    assert earlier.read_bytes() == b"written by an earlier run"

    paths = write_datasets(images[:2], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    assert pydicom.dcmread(earlier).SOPInstanceUID == images[0].SOPInstanceUID
