"""Series selection rules: the defaults on real headers, a site's own rules file, and refused files."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicom_node.config import Settings
from dicom_node.series.selection import DEFAULT_RULES, RulesError, count_slices, load_rules, parse_rules, select_series
from tests.conftest import SHARED_DATA, siemens_files


def headers(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def shared(folder: str) -> list[pydicom.Dataset]:
    names = {"LICENSE", "SOURCE.md", "README-Series.txt"}
    return headers(sorted(p for p in (SHARED_DATA / "dicom" / folder).iterdir() if p.name not in names))


@pytest.fixture(scope="module")
def skyra() -> list[pydicom.Dataset]:
    return headers(siemens_files())


@pytest.mark.parametrize("folder", ["sag-t1-siemens-skyra", "sag-t1-philips-ingenia", "enhanced-t1-siemens-xa30", "epi-ge-discovery", "t1-phantom-ge-signa"])
def test_defaults_select_the_shared_mr_series(folder: str) -> None:
    selection = select_series(shared(folder), load_rules(None))
    assert selection.selected and selection.rule == "brain-mr" and selection.reason == "selected by 'brain-mr'"


def test_slices_are_counted_per_volume() -> None:
    assert count_slices(shared("epi-ge-discovery")) == 15  # 150 images, 10 time points
    assert count_slices(shared("enhanced-t1-siemens-xa30")) == 96  # frames of one file


def test_localizer_and_derived_are_skipped_naming_the_rule(skyra) -> None:  # type: ignore[no-untyped-def]
    rules = load_rules(None)
    localizer = [pydicom.dcmread(p, stop_before_pixels=True) for p in siemens_files()[:3]]
    for ds in localizer:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    selection = select_series(localizer, rules)
    assert not selection.selected and selection.rule is None
    assert selection.reason == "not selected by 'brain-mr': ImageType has LOCALIZER (in 3 of 3 instances)"
    derived = select_series(headers([Path(get_testdata_file("MR_small.dcm"))]), rules)
    assert derived.reason == "not selected by 'brain-mr': ImageType lacks ORIGINAL"


def test_body_part_is_checked_only_where_it_is_given(skyra) -> None:  # type: ignore[no-untyped-def]
    rules = load_rules(None)
    knee = [pydicom.dcmread(siemens_files()[0], stop_before_pixels=True)]
    knee[0].BodyPartExamined = "KNEE"
    assert "BodyPartExamined KNEE does not match" in select_series(knee, rules).reason
    del knee[0].BodyPartExamined
    assert "fewer than min_slices 10" in select_series(knee, rules).reason  # body part passes; 1 slice does not


def test_mixed_orientations_and_few_slices(skyra) -> None:  # type: ignore[no-untyped-def]
    rules = load_rules(None)
    mixed = [pydicom.dcmread(p, stop_before_pixels=True) for p in siemens_files()[:12]]
    mixed[5].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    assert select_series(mixed, rules).reason == "not selected by 'brain-mr': the series mixes 2 slice orientations (single_orientation)"
    assert select_series(skyra[:9], rules).reason == "not selected by 'brain-mr': 9 slice positions, fewer than min_slices 10"
    assert select_series(skyra[:10], rules).selected


def test_a_site_rules_file_with_two_selections(tmp_path: Path, skyra) -> None:  # type: ignore[no-untyped-def]
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps({"selections": [
        {"name": "t2-only", "conditions": {"Modality": "MR", "SeriesDescription": {"regex": "t2|flair"}}},
        {"name": "siemens-t1", "conditions": {"Manufacturer": ["SIEMENS"], "EchoTime": {"min": 1, "max": 5},
                                               "ImageType": {"any_of": ["M", "P"], "not_regex": "MOSAIC"}},
         "series": {"min_slices": 100}},
    ]}))
    rules = load_rules(rules_file)
    assert rules.source == str(rules_file)
    selection = select_series(skyra, rules)
    assert selection.selected and selection.rule == "siemens-t1"
    philips = select_series(shared("sag-t1-philips-ingenia"), rules)
    assert not philips.selected
    assert philips.reason.startswith("not selected by 't2-only': SeriesDescription (value not shown) does not match /t2|flair/ (in 170 of 170 instances); ")
    assert "not selected by 'siemens-t1': Manufacturer lacks SIEMENS" in philips.reason


def test_settings_name_the_rules_file(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DICOM_NODE_SERIES_RULES", str(tmp_path / "rules.json"))
    assert Settings().series_rules == tmp_path / "rules.json"
    monkeypatch.delenv("DICOM_NODE_SERIES_RULES")
    assert Settings().series_rules is None


def test_invalid_dates_and_missing_attributes_do_not_break_selection() -> None:
    ds = pydicom.dcmread(siemens_files()[0], stop_before_pixels=True)
    ds.add_new("StudyDate", "DA", "***")
    rules = parse_rules({"selections": [{"name": "dated", "conditions": {"StudyDate": {"regex": "^20"}}}]})
    assert select_series([ds], rules).reason == "not selected by 'dated': StudyDate (value not shown) does not match /^20/"
    del ds.PatientSex
    assert select_series([ds], parse_rules({"selections": [{"name": "sexed", "conditions": {"PatientSex": {"any_of": ["F", "M"]}}}]})).reason == \
        "not selected by 'sexed': PatientSex has none of F/M"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "one key, \"selections\""),
        ({"selections": []}, "no series would ever be segmented"),
        ({"selections": [{"conditions": {}}]}, "non-empty \"name\""),
        ({"selections": [{"name": "a", "conditions": {"Modality": 3}}]}, "a string, a list of strings or an object"),
        ({"selections": [{"name": "a", "conditions": {"Modality": {"regexp": "MR"}}}]}, "unknown keys ['regexp']"),
        ({"selections": [{"name": "a", "conditions": {"SeriesDescription": {"regex": "("}}}]}, "not a valid regex"),
        ({"selections": [{"name": "a", "conditions": {"Modality": {"equals": "MR", "missing": "skip"}}}]}, "\"missing\" is \"pass\" or \"fail\""),
        ({"selections": [{"name": "a", "series": {"min_slices": "ten"}}]}, "min_slices must be a non-negative integer"),
        ({"selections": [{"name": "a"}, {"name": "a"}]}, "names must be unique"),
        ({"selections": [{"name": "a", "conditions": {"Not A Keyword": "x"}}]}, "is not a DICOM keyword"),
    ],
)
def test_bad_rules_are_refused_naming_the_entry(data: object, message: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse_rules(data, "site.json")
    assert message in str(caught.value) and str(caught.value).startswith("site.json")


def test_rules_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot be read"):
        load_rules(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{selections: ")
    with pytest.raises(RulesError, match="broken.json is not JSON"):
        load_rules(broken)


def test_the_documented_defaults_are_the_defaults() -> None:
    assert load_rules(None) == parse_rules(json.loads(json.dumps(DEFAULT_RULES)), "default rules")


def test_the_readme_shows_the_defaults() -> None:
    from tests.conftest import REPO

    text = (REPO / "README.md").read_text()
    block = text.split("## Which series are segmented", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    assert json.loads(block) == DEFAULT_RULES
