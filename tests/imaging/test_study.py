"""A whole study as scanners send it (tests/study.py): selection, loading and the gate give each series its verdict.

Library level, with the shipped model: the end-to-end push to the node and Orthanc uses the same
builder. Every selected series also gets its SEG and SC built and checked by dciodvfy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from dicom_node.imaging.loading import MRSeries
from dicom_node.imaging.plausibility import Verdict
from dicom_node.imaging.pseudocolor import PseudocolorSettings, pseudocolor
from dicom_node.imaging.segmenter import BrainMask, Segmenter
from dicom_node.outputs.common import Equipment
from dicom_node.outputs.part10 import write_dataset
from dicom_node.outputs.sc import build_sc_series
from dicom_node.outputs.seg import build_segs
from dicom_node.series_selection import Selection, load_rules
from dicom_node.series_triage import Triage, triage
from tests.conftest import REPO
from tests.study import StudySeries, build_study

from .conftest import dciodvfy_errors

SHIPPED_WEIGHTS = REPO / "models" / "brain-deeplabv3plus.pt"
NAMES = [
    "t1-siemens-skyra", "t1-philips-ingenia", "t1-enhanced-siemens-xa30", "epi-fmri-ge", "phantom-ge",
    "b0-mosaic-siemens-prisma", "bold-mosaic-siemens-triotim", "ct-pydicom", "sr-pydicom", "abdomen-mr-pydicom",
    "t1-uih-stars", "t1-one-unusable", "localizer-3plane", "mpr-axial",
]


@dataclass
class Outcome:
    series: StudySeries
    triage: Triage

    @property
    def state(self) -> str:
        return {"segmented": "selected"}.get(self.triage.state, self.triage.state)

    @property
    def selection(self) -> Selection:
        return self.triage.selection

    @property
    def loaded(self) -> MRSeries | None:
        return self.triage.series

    @property
    def brain(self) -> BrainMask | None:
        return self.triage.brain

    @property
    def verdict(self) -> Verdict | None:
        return self.triage.verdict


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    if not SHIPPED_WEIGHTS.is_file():
        pytest.fail(f"the shipped weights are missing at {SHIPPED_WEIGHTS}")
    return Segmenter.from_weights(SHIPPED_WEIGHTS, "cpu")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> list[StudySeries]:  # type: ignore[no-untyped-def]
    try:
        return build_study(tmp_path_factory.mktemp("study"))
    except RuntimeError as exc:  # a missing download or shared data fails, never skips
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def outcomes(study: list[StudySeries], segmenter: Segmenter) -> dict[str, Outcome]:
    rules = load_rules(None)
    return {item.name: Outcome(item, triage(item.files, rules, segmenter)) for item in study}


def test_the_study_is_one_study_of_distinct_series(study: list[StudySeries]) -> None:
    assert [s.name for s in study] == NAMES
    assert len({s.series_instance_uid for s in study}) == len(study)
    studies = {str(pydicom.dcmread(s.files[0], stop_before_pixels=True).StudyInstanceUID) for s in study}
    assert len(studies) == 1
    assert sum(s.n_files for s in study) == 1067


@pytest.mark.parametrize("name", NAMES)
def test_each_series_gets_its_expected_verdict(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    expected = outcome.series
    detail = outcome.selection.reason if outcome.verdict is None else outcome.verdict.reason
    assert outcome.state == expected.expected, detail
    assert outcome.triage.reason == detail
    if expected.expected == "skipped":
        assert outcome.loaded is None and outcome.brain is None  # nothing loaded or segmented
        assert expected.reason in outcome.selection.reason
        assert "brain-mr" in outcome.selection.reason  # the reason names the rule
        assert expected.series_instance_uid not in outcome.selection.reason
    else:
        assert outcome.selection.rule == "brain-mr"
        assert outcome.loaded is not None
        if expected.reason:
            assert any(expected.reason in note for note in outcome.triage.notes), outcome.triage.notes
        assert outcome.loaded.n_positions == outcome.loaded.n_slices, "one volume per load"


def test_no_brain_verdict_names_what_failed(outcomes: dict[str, Outcome]) -> None:
    verdict = outcomes["phantom-ge"].verdict
    assert verdict is not None and verdict.reason == "no brain: the network marked no brain voxels"


def test_the_unusable_instance_is_left_out_and_named_by_hash(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["t1-one-unusable"]
    assert outcome.loaded is not None and outcome.loaded.n_slices == 191
    (note,) = [n for n in outcome.loaded.notes if "no pixel data" in n]
    assert note.startswith("Left out instance ") and str(outcome.series.folder) not in note


SELECTED = [
    "t1-siemens-skyra", "t1-philips-ingenia", "t1-enhanced-siemens-xa30", "epi-fmri-ge", "b0-mosaic-siemens-prisma",
    "bold-mosaic-siemens-triotim", "t1-uih-stars", "t1-one-unusable",
]


def test_the_labels_agree_with_the_selected_list(study: list[StudySeries]) -> None:
    assert [s.name for s in study if s.expected == "selected"] == SELECTED
    assert all(s.sc_images > 0 for s in study if s.expected == "selected")
    assert all(s.sc_images == s.seg_instances == 0 for s in study if s.expected != "selected")


@pytest.mark.parametrize("name", SELECTED)
def test_selected_heads_give_valid_seg_and_sc(outcomes: dict[str, Outcome], segmenter: Segmenter, name: str, tmp_path: Path) -> None:
    outcome = outcomes[name]
    assert outcome.loaded is not None and outcome.brain is not None
    info = segmenter.info
    equipment = Equipment.for_model(info, device_serial_number="test-box")
    segs = build_segs(outcome.loaded, outcome.brain.mask, info, equipment, f"seed-{name}")
    assert len(segs) == outcome.series.seg_instances == 1
    seg = segs[0]
    settings = PseudocolorSettings()
    images = build_sc_series(outcome.loaded, pseudocolor(outcome.loaded.pixels, outcome.brain.mask, settings), equipment, f"seed-{name}", settings)
    assert len(images) == outcome.series.sc_images  # a mosaic: one image in its own layout
    assert (seg.Rows, seg.Columns) == (outcome.loaded.datasets[0].Rows, outcome.loaded.datasets[0].Columns)
    for dataset in (seg, images[0]):
        path = write_dataset(dataset, tmp_path)
        assert dciodvfy_errors(path) == []
        read = pydicom.dcmread(path)
        assert read.StudyInstanceUID == outcome.loaded.study_instance_uid
        assert read.SeriesDate and read.SeriesTime
        for keyword in ("PatientSex", "PatientBirthDate", "StudyDate", "StudyTime", "PatientName", "PatientID"):
            assert keyword in read, keyword
    if name == "t1-uih-stars":
        assert read.StudyDate == "" and read.PatientSex == ""
        assert read.PatientID == "DN-STUDY-1"  # valid values are still copied
