"""Loading real series: vendors, Enhanced multi-frame, time series, transfer syntaxes, refusals."""

from __future__ import annotations

import random
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_node.imaging.loading import SeriesLoadError, load_folder, load_series, position_key, scan_folder
from dicom_node.uids import short_hash


def positions(series) -> np.ndarray:
    return np.array([position_key(s) for s in series.slices])


@pytest.mark.parametrize(
    ("folder", "shape", "n_positions"),
    [
        ("sag-t1-siemens-skyra", (192, 256, 256), 192),
        ("sag-t1-philips-ingenia", (170, 256, 256), 170),
        ("enhanced-t1-siemens-xa30", (96, 128, 128), 96),
        ("t1-phantom-ge-signa", (130, 256, 256), 130),
        ("epi-ge-discovery", (15, 64, 64), 15),  # volume 1 of 10
    ],
)
def test_real_series_load_sorted_along_the_normal(load_named, folder, shape, n_positions):
    series = load_named(folder)
    assert series.pixels.shape == shape
    assert series.pixels.dtype == np.float32
    assert series.n_positions == n_positions
    along = positions(series)
    assert np.all(np.diff(along) >= 0), "slices must be sorted along the slice normal"
    assert series.slice_spacing_mm and series.slice_spacing_mm > 0
    assert series.voxel_volume_ml() > 0
    assert series.pixels.max() > 0


def test_non_dicom_files_are_skipped_with_a_reason(shared_data):
    scan = scan_folder(shared_data / "dicom" / "epi-ge-discovery")
    assert len(scan.series) == 1
    names = {s.path.name for s in scan.skipped}
    assert names == {"LICENSE", "README-Series.txt"}
    assert all("not a DICOM file" in s.reason for s in scan.skipped)


def test_ge_files_without_dcm_extension_are_found(shared_data):
    scan = scan_folder(shared_data / "dicom" / "t1-phantom-ge-signa")
    (paths,) = scan.series.values()
    assert any(not p.name.endswith(".dcm") for p in paths)


def test_epi_time_series_keeps_every_instance_position_major_when_asked(shared_data):
    paths = scan_folder(shared_data / "dicom" / "epi-ge-discovery").series.popitem()[1]
    series = load_series(paths, all_volumes=True)
    along = positions(series)
    values, counts = np.unique(along, return_counts=True)
    assert len(values) == 15 and set(counts) == {10}
    assert len({s.sop_instance_uid for s in series.slices}) == 150
    # within one position, time points follow instance number
    first = [int(pydicom.dcmread(s.path, stop_before_pixels=True).InstanceNumber) for s in series.slices[:10]]
    assert first == sorted(first)


def test_epi_time_series_loads_its_first_volume_with_a_note(load_named):
    series = load_named("epi-ge-discovery")
    assert series.n_slices == series.n_positions == 15
    kept = {s.path for s in series.slices}
    everything = set(scan_folder(series.slices[0].path.parent).series.popitem()[1])
    numbers = [int(h.InstanceNumber) for h in series.datasets]
    others = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in everything - kept]
    # the first image in acquisition order at each position: the 15 lowest instance numbers of 150
    assert len(numbers) == 15 and len(others) == 135 and max(numbers) < min(others)
    assert series.notes == [
        "Repeated slice positions: 10 volumes of 15 positions, as in fMRI or diffusion; "
        "volume 1 (first in acquisition order) is segmented, 135 images left out."
    ]


def test_enhanced_multiframe_uses_per_frame_geometry(load_named):
    series = load_named("enhanced-t1-siemens-xa30")
    assert series.is_multiframe and len(series.datasets) == 1
    assert sorted(s.frame_number for s in series.slices) == list(range(1, 97))
    assert len({s.position for s in series.slices}) == 96
    assert "PixelData" not in series.datasets[0]


def test_explicit_shuffled_paths_give_the_same_series(shared_data, load_named):
    folder = shared_data / "dicom" / "sag-t1-siemens-skyra"
    paths = sorted(folder.glob("*.dcm"))
    random.Random(1).shuffle(paths)
    series = load_series(paths)
    reference = load_named("sag-t1-siemens-skyra")
    assert [s.sop_instance_uid for s in series.slices] == [s.sop_instance_uid for s in reference.slices]
    np.testing.assert_array_equal(series.pixels, reference.pixels)


def test_rescale_slope_is_applied(shared_data, load_named):
    series = load_named("sag-t1-philips-ingenia")
    header = pydicom.dcmread(series.slices[0].path)
    slope, intercept = float(header.RescaleSlope), float(header.RescaleIntercept)
    assert slope != 1.0
    np.testing.assert_allclose(series.pixels[0], header.pixel_array * slope + intercept, rtol=1e-5)


MR_TRANSFER_SYNTAX_FILES = [
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]


@pytest.mark.parametrize("name", MR_TRANSFER_SYNTAX_FILES)
def test_every_pydicom_mr_transfer_syntax_decodes_losslessly(name):
    reference = load_series([get_testdata_file("MR_small.dcm")])
    series = load_series([get_testdata_file(name)])
    assert series.pixels.shape == (1, 64, 64)
    np.testing.assert_array_equal(series.pixels, reference.pixels)


def test_jpeg_lossless_made_by_dcmtk_decodes(tmp_path):
    tool = shutil.which("dcmcjpeg")
    if tool is None:
        pytest.fail("DCMTK's dcmcjpeg is not installed: run the tests with `make test`")
    source = get_testdata_file("MR_small.dcm")
    target = tmp_path / "jpeg-lossless.dcm"
    subprocess.run([tool, "+e1", source, str(target)], check=True, capture_output=True)
    ts = pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert ts == pydicom.uid.JPEGLosslessSV1
    np.testing.assert_array_equal(load_series([target]).pixels, load_series([source]).pixels)


def test_ct_is_refused_naming_the_file():
    path = get_testdata_file("CT_small.dcm")
    with pytest.raises(SeriesLoadError, match=r"CT_small\.dcm is not MR \(Modality is CT\)"):
        load_series([path])


def test_colour_is_refused(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_small_odd.dcm"))
    ds.Modality = "MR"
    path = tmp_path / "colour-mr.dcm"
    ds.save_as(path)
    with pytest.raises(SeriesLoadError, match=r"colour-mr\.dcm is a colour image \(Samples per Pixel 3"):
        load_series([path])


def test_missing_pixel_data_is_refused(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.PixelData
    path = tmp_path / "no-pixels.dcm"
    ds.save_as(path)
    with pytest.raises(SeriesLoadError, match=r"no-pixels\.dcm has no pixel data"):
        load_series([path])


def test_truncated_pixel_data_is_refused():
    with pytest.raises(SeriesLoadError, match=r"MR_truncated\.dcm"):
        load_series([get_testdata_file("MR_truncated.dcm")])


def test_files_of_two_series_are_refused(shared_data):
    one = next((shared_data / "dicom" / "sag-t1-siemens-skyra").glob("*.dcm"))
    other = next((shared_data / "dicom" / "epi-ge-discovery").glob("*.dcm"))
    with pytest.raises(SeriesLoadError, match="belongs to another series"):
        load_series([one, other])


def test_folder_of_only_non_dicom_files(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    series, skipped = load_folder(tmp_path)
    assert series == [] and len(skipped) == 2


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(SeriesLoadError, match="does not exist"):
        scan_folder(tmp_path / "nope")


# ---- Siemens mosaics (real files from the heudiconv wheel) ----------------------------------

@pytest.mark.parametrize(("files", "shape", "note"), [
    ("axasc35.dcm", (35, 64, 64), "Siemens mosaic: 35 slices of 64x64 cut from each 384x384 image"),
    ("b0dwiForFmap/*.dcm", (81, 152, 150), "Repeated slice positions: 3 volumes of 81 positions"),
])
def test_mosaics_are_cut_into_slices_where_nibabel_puts_them(heudiconv, files, shape, note):
    import warnings

    from nibabel.nicom import dicomwrappers

    paths = sorted(heudiconv.glob(files))
    series = load_series(paths)
    assert series.pixels.shape == shape and series.is_mosaic
    assert any(n.startswith(note) for n in series.notes), series.notes
    first = min(paths, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).AcquisitionNumber))
    assert {s.path for s in series.slices} == {first}  # volume 1: the first acquisition
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
        wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(first))
        reference = wrapper.get_data()
    order = sorted(range(series.n_slices), key=lambda i: series.slices[i].mosaic_tile)
    for index in order:
        tile = series.slices[index].mosaic_tile - 1
        np.testing.assert_allclose(series.pixels[index], reference[:, :, tile])
        expected = (wrapper.affine @ [0, 0, tile, 1])[:3]
        np.testing.assert_allclose(series.slices[index].position, expected, atol=1e-3)
    assert [s.mosaic_tile for s in series.slices] == sorted(s.mosaic_tile for s in series.slices)  # tiles go along the normal


def test_a_mosaic_without_its_tile_count_is_one_image(heudiconv, tmp_path):
    ds = pydicom.dcmread(heudiconv / "axasc35.dcm")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]  # not marked MOSAIC: loaded as the image it is
    path = tmp_path / "plain.dcm"
    ds.save_as(path)
    assert load_series([path]).pixels.shape == (1, 384, 384)


# ---- one unusable instance does not fail the series ------------------------------------------

def _copy(paths, folder):
    folder.mkdir()
    copies = []
    for path in paths:
        target = folder / path.name
        shutil.copy(path, target)
        copies.append(target)
    return copies


@pytest.mark.parametrize("damage", ["no pixel data", "truncated pixel data", "not DICOM", "another matrix", "not MR"])
def test_one_unusable_instance_is_left_out_with_a_note(shared_data, tmp_path, damage):
    source = sorted((shared_data / "dicom" / "sag-t1-siemens-skyra").glob("*.dcm"))[:20]
    files = _copy(source, tmp_path / "series")
    victim = files[7]
    ds = pydicom.dcmread(victim)
    uid = str(ds.SOPInstanceUID)
    if damage == "no pixel data":
        del ds.PixelData
    elif damage == "truncated pixel data":
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    elif damage == "another matrix":
        ds.Rows, ds.Columns = 128, 128
        ds.PixelData = ds.pixel_array[::2, ::2].tobytes()
    elif damage == "not MR":
        ds.Modality = "OT"
    if damage == "not DICOM":
        victim.write_bytes(b"not a DICOM file at all" * 10)
    else:
        ds.save_as(victim)
    series = load_series(files)
    assert series.n_slices == 19
    assert uid not in {s.sop_instance_uid for s in series.slices}
    (note,) = [n for n in series.notes if n.startswith("Left out")]
    assert str(tmp_path) not in note and uid not in note  # no paths, no UIDs
    if damage != "not DICOM":
        assert short_hash(uid) in note


def test_a_series_of_only_unusable_instances_still_fails(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.PixelData
    paths = []
    for index in range(3):
        ds.SOPInstanceUID = f"1.2.3.{index}"
        paths.append(tmp_path / f"{index}.dcm")
        ds.save_as(paths[-1])
    with pytest.raises(SeriesLoadError, match=r"0\.dcm has no pixel data"):
        load_series(paths)


def test_numbers_left_as_stars_read_as_absent(shared_data, tmp_path):
    """An anonymiser that writes ``***`` into IS and DS values (as into dates) does not stop the load."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    paths = []
    for path in sorted((shared_data / "dicom" / "sag-t1-siemens-skyra").glob("*.dcm"))[:12]:
        ds = pydicom.dcmread(path)
        for keyword, vr in (("AcquisitionNumber", "IS"), ("InstanceNumber", "IS"), ("SliceThickness", "DS")):
            tag = Tag(keyword)
            ds[tag] = RawDataElement(tag, vr, 4, b"*** ", 0, False, True)
        ds.save_as(tmp_path / path.name)
        paths.append(tmp_path / path.name)
    series = load_series(paths)
    assert series.pixels.shape == (12, 256, 256) and series.slices[0].slice_thickness is None
    assert np.all(np.diff(positions(series)) > 0)


def test_mosaic_tile_count_falls_back_to_the_csa_header(heudiconv, tmp_path):
    from dicom_node.imaging.mosaic import mosaic_tile_count

    ds = pydicom.dcmread(heudiconv / "axasc35.dcm")
    assert mosaic_tile_count(ds) == 35
    del ds[0x0019100A]  # NumberOfImagesInMosaic in SIEMENS MR HEADER: gone, the CSA image header still says 35
    path = tmp_path / "csa-only.dcm"
    ds.save_as(path)
    reread = pydicom.dcmread(path)
    assert 0x0019100A not in reread and mosaic_tile_count(reread) == 35
    assert load_series([path]).pixels.shape == (35, 64, 64)


@pytest.mark.parametrize("folder", ["sag-t1-siemens-skyra", "epi-ge-discovery"])
def test_the_nifti_affine_puts_every_slice_at_its_image_position(shared_data, folder):
    """``ras_affine`` (the NIfTI that deepbet reads) maps each slice's first pixel to its DICOM position."""
    from dicom_node.imaging.loading import ras_affine

    series, _ = load_folder(shared_data / "dicom" / folder)
    affine = ras_affine(series[0])
    for k, info in enumerate(series[0].slices):
        corner = affine @ np.array([0.0, 0.0, k, 1.0])
        assert np.allclose(corner[:3] * [-1, -1, 1], info.position, atol=0.01), (folder, k)
