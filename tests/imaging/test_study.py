"""A whole study as scanners send it (tests/study.py) through the series pipeline with the shipped
model: each series gets its verdict and reason, and every selected series SEG and SC that
dciodvfy accepts. The end-to-end push to the node and Orthanc (tests/flows) uses the same builder.
"""

from __future__ import annotations

import pydicom
import pytest

from dicom_node.imaging.segmenter import Segmenter
from dicom_node.series.pipeline import SeriesResult, process_series
from dicom_node.series.selection import load_rules
from tests.study import StudySeries, build_study

from .conftest import dciodvfy_errors

NAMES = [
    "t1-siemens-skyra", "t1-philips-ingenia", "t1-enhanced-siemens-xa30", "epi-fmri-ge", "phantom-ge",
    "b0-mosaic-siemens-prisma", "bold-mosaic-siemens-triotim", "ct-pydicom", "sr-pydicom", "abdomen-mr-pydicom",
    "t1-uih-stars", "t1-one-unusable", "localizer-3plane", "mpr-axial",
]
SELECTED = [
    "t1-siemens-skyra", "t1-philips-ingenia", "t1-enhanced-siemens-xa30", "epi-fmri-ge", "b0-mosaic-siemens-prisma",
    "bold-mosaic-siemens-triotim", "t1-uih-stars", "t1-one-unusable",
]
STATE = {"selected": "segmented", "skipped": "skipped", "no-brain": "no-brain"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> list[StudySeries]:  # type: ignore[no-untyped-def]
    try:
        return build_study(tmp_path_factory.mktemp("study"))
    except RuntimeError as exc:  # a missing download or shared data fails, never skips
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def results(study: list[StudySeries], shipped_segmenter: Segmenter, tmp_path_factory) -> dict[str, tuple[StudySeries, SeriesResult]]:  # type: ignore[no-untyped-def]
    segmenter = shipped_segmenter
    rules = load_rules(None)
    out = tmp_path_factory.mktemp("outputs")
    return {s.name: (s, process_series(s.files, out / s.name, segmenter, f"seed-{s.name}", rules=rules)) for s in study}


def test_the_study_is_one_study_of_distinct_series(study: list[StudySeries]) -> None:
    assert [s.name for s in study] == NAMES
    assert len({s.series_instance_uid for s in study}) == len(study)
    studies = {str(pydicom.dcmread(s.files[0], stop_before_pixels=True).StudyInstanceUID) for s in study}
    assert len(studies) == 1
    assert sum(s.n_files for s in study) == 1067


def test_the_labels_agree_with_the_selected_list(study: list[StudySeries]) -> None:
    assert [s.name for s in study if s.expected == "selected"] == SELECTED
    assert all(s.sc_images > 0 for s in study if s.expected == "selected")
    assert all(s.sc_images == s.seg_instances == 0 for s in study if s.expected != "selected")


@pytest.mark.parametrize("name", NAMES)
def test_each_series_gets_its_expected_verdict(results: dict[str, tuple[StudySeries, SeriesResult]], name: str) -> None:
    expected, result = results[name]
    assert result.state == STATE[expected.expected], result.reason
    assert expected.series_instance_uid not in result.reason and not any(expected.series_instance_uid in n for n in result.notes)
    if expected.expected == "skipped":
        assert expected.reason in result.reason and "brain-mr" in result.reason  # the reason names the rule
        assert "load" not in result.seconds and "segment" not in result.seconds  # nothing loaded or segmented
    elif expected.reason:
        assert any(expected.reason in note for note in result.notes), result.notes
    if expected.expected != "selected":
        assert result.seg_paths == [] and result.sc_paths == []


def test_no_brain_names_what_failed(results: dict[str, tuple[StudySeries, SeriesResult]]) -> None:
    assert results["phantom-ge"][1].reason == "no brain: the network marked no brain voxels"


def test_the_unusable_instance_is_left_out_and_named_by_hash(results: dict[str, tuple[StudySeries, SeriesResult]]) -> None:
    expected, result = results["t1-one-unusable"]
    assert result.n_slices == 191 and len(result.sc_paths) == 191
    (note,) = [n for n in result.notes if "no pixel data" in n]
    assert note.startswith("Left out instance ") and str(expected.folder) not in note


@pytest.mark.parametrize("name", SELECTED)
def test_selected_heads_give_valid_seg_and_sc(results: dict[str, tuple[StudySeries, SeriesResult]], name: str) -> None:
    expected, result = results[name]
    assert len(result.seg_paths) == expected.seg_instances == 1
    assert len(result.sc_paths) == expected.sc_images  # a mosaic: one image in its own layout
    source = pydicom.dcmread(expected.files[0], stop_before_pixels=True)
    for path in (result.seg_paths[0], result.sc_paths[0]):
        assert dciodvfy_errors(path) == []
        read = pydicom.dcmread(path, stop_before_pixels=True)
        assert read.StudyInstanceUID == source.StudyInstanceUID
        assert read.SeriesDate and read.SeriesTime
        for keyword in ("PatientSex", "PatientBirthDate", "StudyDate", "StudyTime", "PatientName", "PatientID"):
            assert keyword in read, keyword
    if name == "t1-uih-stars":
        assert read.StudyDate == "" and read.PatientSex == ""
        assert read.PatientID == "DN-STUDY-1"  # valid values are still copied
    seg = pydicom.dcmread(result.seg_paths[0], stop_before_pixels=True)
    assert "ContentCreatorName" in seg and "RequestingService" not in seg
