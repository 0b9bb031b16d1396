"""Which series the node segments: a rule set a site changes without code.

In the spirit of MONAI Deploy's ``DICOMSeriesSelectorOperator``: a JSON file of *named
selections*, each a set of attribute conditions over the series' headers, plus series-level
checks. A series is selected when it meets every condition of at least one selection; otherwise
the reason names the selection and the condition that failed, e.g.
``not selected by 'brain-mr': ImageType has LOCALIZER``. Reasons carry rule names, attribute
keywords and coded (CS) values only, never UIDs or patient data.

Format (``DEFAULT_RULES`` is the default, written out in this form)::

    {
      "selections": [
        {
          "name": "brain-mr",
          "conditions": {
            "Modality": "MR",
            "ImageType": {"all_of": ["ORIGINAL"], "none_of": ["LOCALIZER", "DERIVED", "SECONDARY"]},
            "BodyPartExamined": {"regex": "HEAD|BRAIN|NEURO|SKULL|CRANIUM", "missing": "pass"}
          },
          "series": {"single_orientation": true, "min_slices": 10}
        }
      ]
    }

Time series and mosaics are selected: the loader keeps one volume and cuts Siemens mosaics into
slices, and the outputs reference the mosaic image in its own layout. A site that wants no fMRI or
diffusion results adds e.g. ``"none_of": [..., "MOSAIC", "DIFFUSION"]`` or a SeriesDescription
``not_regex``.

A condition is keyed by a DICOM keyword and its value is one of:

- a string: some value of the attribute equals it (case-insensitive);
- a list of strings: the attribute holds every one of them (MONAI's meaning for ImageType);
- an object with any of ``equals`` (string), ``all_of`` / ``any_of`` / ``none_of`` (lists of
  strings, case-insensitive), ``regex`` / ``not_regex`` (Python regex searched,
  case-insensitive, in the values joined by ``\\``), ``min`` / ``max`` (numbers, every value),
  and ``missing``: ``"pass"`` or ``"fail"`` (what an absent or empty attribute gives; by default
  it is judged like an empty value: ``none_of`` and ``not_regex`` pass, the rest fail).

Every instance of the series must meet a condition (a series that is partly LOCALIZER is not a
volume). Series checks: ``single_orientation`` (all slices share one orientation within 1e-3)
and ``min_slices`` (distinct slice positions of one volume: frames of an Enhanced file, tiles of
a Siemens mosaic).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from dicom_node.imaging.loading import float_values, header_values
from dicom_node.imaging.mosaic import mosaic_tile_count

ORIENTATION_TOLERANCE = 1e-3

DEFAULT_RULES: dict[str, Any] = {
    "selections": [
        {
            "name": "brain-mr",
            "conditions": {
                "Modality": "MR",
                "ImageType": {"all_of": ["ORIGINAL"], "none_of": ["LOCALIZER", "DERIVED", "SECONDARY"]},
                "BodyPartExamined": {"regex": "HEAD|BRAIN|NEURO|SKULL|CRANIUM", "missing": "pass"},
            },
            "series": {"single_orientation": True, "min_slices": 10},
        }
    ]
}

_CONDITION_KEYS = frozenset({"equals", "all_of", "any_of", "none_of", "regex", "not_regex", "min", "max", "missing"})
_SERIES_KEYS = frozenset({"single_orientation", "min_slices"})


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the offending entry."""


@dataclass(frozen=True)
class Condition:
    """One attribute condition of a selection (see the module docstring for the meaning)."""

    keyword: str
    equals: str | None = None
    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    none_of: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None
    not_regex: re.Pattern[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    missing: str | None = None  # "pass", "fail" or None (judge as an empty value)

    def failure(self, ds: Dataset) -> str | None:
        """Why ``ds`` fails this condition, or None when it passes."""
        values = header_values(ds, self.keyword)
        if not values and self.missing is not None:
            return None if self.missing == "pass" else f"{self.keyword} is missing"
        upper = [v.upper() for v in values]
        shown = self._shown(values)
        if self.equals is not None and self.equals.upper() not in upper:
            return f"{self.keyword} is {shown}, not {self.equals}"
        lacking = [v for v in self.all_of if v.upper() not in upper]
        if lacking:
            return f"{self.keyword} lacks {'/'.join(lacking)}"
        if self.any_of and not any(v.upper() in upper for v in self.any_of):
            return f"{self.keyword} has none of {'/'.join(self.any_of)}"
        present = [v for v in self.none_of if v.upper() in upper]
        if present:
            return f"{self.keyword} has {'/'.join(present)}"
        joined = "\\".join(values)
        if self.regex is not None and not self.regex.search(joined):
            return f"{self.keyword} {shown} does not match /{self.regex.pattern}/"
        if self.not_regex is not None and self.not_regex.search(joined):
            return f"{self.keyword} {shown} matches /{self.not_regex.pattern}/"
        if self.minimum is not None or self.maximum is not None:
            numbers = [_number(v) for v in values]
            if not numbers or any(n is None for n in numbers):
                return f"{self.keyword} is not a number"
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if not all(low <= n <= high for n in numbers if n is not None):
                return f"{self.keyword} is outside [{self.minimum}, {self.maximum}]"
        return None

    def _shown(self, values: list[str]) -> str:
        """The header's value in a reason: coded (short, upper-case) values only, else a stand-in."""
        if not values:
            return "empty"
        if all(re.fullmatch(r"[A-Z0-9_ ]{0,16}", v) for v in values):
            return "\\".join(values)
        return "(value not shown)"


@dataclass(frozen=True)
class SeriesChecks:
    """Checks over the whole series rather than one header."""

    single_orientation: bool = False
    min_slices: int = 0


@dataclass(frozen=True)
class Rule:
    """A named selection: every condition holds on every instance, and the series checks pass."""

    name: str
    conditions: tuple[Condition, ...]
    series: SeriesChecks = field(default_factory=SeriesChecks)


@dataclass(frozen=True)
class RuleSet:
    """The selections of a rules file; a series is selected by the first one it meets."""

    rules: tuple[Rule, ...]
    source: str = "default rules"


@dataclass(frozen=True)
class Selection:
    """Whether a series is segmented, and why (names the rule; no UIDs, no patient data)."""

    selected: bool
    reason: str
    rule: str | None = None  # the selection that chose it, None when skipped


def load_rules(path: Path | str | None = None) -> RuleSet:
    """The rules in the JSON file at ``path``, or the defaults when ``path`` is None.

    Raises:
        RulesError: the file is missing, not JSON, or an entry is not of the documented form.
    """
    if path is None:
        return parse_rules(DEFAULT_RULES, "default rules")
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(f"Series rules file {file} cannot be read: {exc.strerror or exc}.") from exc
    except json.JSONDecodeError as exc:
        raise RulesError(f"Series rules file {file} is not JSON: {exc}.") from exc
    return parse_rules(data, str(file))


def parse_rules(data: object, source: str = "rules") -> RuleSet:
    """A :class:`RuleSet` from the decoded JSON ``data``; ``source`` names it in errors."""
    if not isinstance(data, dict) or set(data) != {"selections"} or not isinstance(data["selections"], list):
        raise RulesError(f"{source}: the top level must be an object with one key, \"selections\" (a list).")
    if not data["selections"]:
        raise RulesError(f"{source}: \"selections\" is empty, so no series would ever be segmented.")
    rules = []
    for index, entry in enumerate(data["selections"]):
        where = f"{source}: selection {index + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise RulesError(f"{where} must be an object with a non-empty \"name\".")
        unknown = set(entry) - {"name", "conditions", "series"}
        if unknown:
            raise RulesError(f"{where} ({entry['name']}) has unknown keys {sorted(unknown)}.")
        conditions = entry.get("conditions", {})
        if not isinstance(conditions, dict):
            raise RulesError(f"{where} ({entry['name']}): \"conditions\" must be an object keyed by DICOM keyword.")
        parsed = tuple(_condition(keyword, value, f"{where} ({entry['name']})") for keyword, value in conditions.items())
        rules.append(Rule(entry["name"], parsed, _series_checks(entry.get("series", {}), f"{where} ({entry['name']})")))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise RulesError(f"{source}: selection names must be unique, got {names}.")
    return RuleSet(tuple(rules), source)


def select_series(headers: Sequence[Dataset], rules: RuleSet) -> Selection:
    """Whether the series whose instance headers are ``headers`` is segmented under ``rules``."""
    if not headers:
        return Selection(False, "not selected: the series has no instances")
    failures = []
    for rule in rules.rules:
        failure = rule_failure(headers, rule)
        if failure is None:
            return Selection(True, f"selected by '{rule.name}'", rule.name)
        failures.append(f"not selected by '{rule.name}': {failure}")
    return Selection(False, "; ".join(failures))


def rule_failure(headers: Sequence[Dataset], rule: Rule) -> str | None:
    """The first condition or series check of ``rule`` that ``headers`` fail, or None."""
    for condition in rule.conditions:
        for ds in headers:
            failure = condition.failure(ds)
            if failure is not None:
                return failure if len(headers) == 1 else f"{failure} (in {_count(headers, condition)} of {len(headers)} instances)"
    if rule.series.single_orientation:
        orientations = distinct_orientations(headers)
        if len(orientations) > 1:
            return f"the series mixes {len(orientations)} slice orientations (single_orientation)"
    if rule.series.min_slices:
        slices = count_slices(headers)
        if slices < rule.series.min_slices:
            return f"{slices} slice positions, fewer than min_slices {rule.series.min_slices}"
    return None


def _count(headers: Sequence[Dataset], condition: Condition) -> int:
    return sum(condition.failure(ds) is not None for ds in headers)


def distinct_orientations(headers: Sequence[Dataset]) -> list[tuple[float, ...]]:
    """The distinct Image Orientation (Patient) values (per frame for Enhanced files)."""
    found: list[tuple[float, ...]] = []
    for ds in headers:
        for orientation in _orientations(ds):
            if not any(max(abs(a - b) for a, b in zip(orientation, seen)) <= ORIENTATION_TOLERANCE for seen in found):
                found.append(orientation)
    return found


def count_slices(headers: Sequence[Dataset]) -> int:
    """Distinct slice positions of one volume: a mosaic counts its tiles, an Enhanced file its frames.

    Repeated positions (time points, diffusion directions) count once, so a 15-position fMRI
    series of 150 instances has 15 slices.
    """
    positions: set[float] = set()
    unpositioned = 0
    tiles = 0
    for ds in headers:
        count = mosaic_tile_count(ds)
        if count:
            tiles = max(tiles, count)
            continue
        frames = _frame_positions(ds)
        if not frames:
            unpositioned += 1
        positions.update(frames)
    return max(tiles, len(positions) + unpositioned)


def _orientations(ds: Dataset) -> list[tuple[float, ...]]:
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        result = []
        for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for item in ds.get(groups) or []:
                for plane in item.get("PlaneOrientationSequence") or []:
                    value = float_values(plane.get("ImageOrientationPatient"), 6)
                    if value:
                        result.append(value)
        return result
    value = float_values(ds.get("ImageOrientationPatient"), 6)
    return [value] if value else []


def _frame_positions(ds: Dataset) -> list[float]:
    """Each frame's position along its slice normal, rounded to 1 um."""
    pairs: list[tuple[tuple[float, ...] | None, tuple[float, ...] | None]] = []
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
        for item in ds.PerFrameFunctionalGroupsSequence:
            position = _first(item, shared, "PlanePositionSequence", "ImagePositionPatient", 3)
            orientation = _first(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
            pairs.append((position, orientation))
    else:
        pairs.append((float_values(ds.get("ImagePositionPatient"), 3), float_values(ds.get("ImageOrientationPatient"), 6)))
    result = []
    for position, orientation in pairs:
        if position is None or orientation is None:
            continue
        r, c = orientation[:3], orientation[3:]
        normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
        result.append(round(sum(n * p for n, p in zip(normal, position)), 3))
    return result


def _first(item: Dataset, shared: Dataset, sequence: str, keyword: str, count: int) -> tuple[float, ...] | None:
    for source in (item, shared):
        inner = source.get(sequence)
        if inner:
            value = float_values(inner[0].get(keyword), count)
            if value:
                return value
    return None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _condition(keyword: str, value: object, where: str) -> Condition:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", keyword):
        raise RulesError(f"{where}: {keyword!r} is not a DICOM keyword.")
    if isinstance(value, str):
        return Condition(keyword, equals=value)
    if isinstance(value, list):
        return Condition(keyword, all_of=_strings(value, f"{where}, {keyword}"))
    if not isinstance(value, dict) or not value:
        raise RulesError(f"{where}, {keyword}: a condition is a string, a list of strings or an object.")
    unknown = set(value) - _CONDITION_KEYS
    if unknown:
        raise RulesError(f"{where}, {keyword}: unknown keys {sorted(unknown)}; use {sorted(_CONDITION_KEYS)}.")
    missing = value.get("missing")
    if missing not in (None, "pass", "fail"):
        raise RulesError(f"{where}, {keyword}: \"missing\" is \"pass\" or \"fail\", not {missing!r}.")
    equals = value.get("equals")
    if equals is not None and not isinstance(equals, str):
        raise RulesError(f"{where}, {keyword}: \"equals\" must be a string.")
    return Condition(
        keyword,
        equals=equals,
        all_of=_strings(value.get("all_of", []), f"{where}, {keyword}.all_of"),
        any_of=_strings(value.get("any_of", []), f"{where}, {keyword}.any_of"),
        none_of=_strings(value.get("none_of", []), f"{where}, {keyword}.none_of"),
        regex=_regex(value.get("regex"), f"{where}, {keyword}.regex"),
        not_regex=_regex(value.get("not_regex"), f"{where}, {keyword}.not_regex"),
        minimum=_limit(value.get("min"), f"{where}, {keyword}.min"),
        maximum=_limit(value.get("max"), f"{where}, {keyword}.max"),
        missing=missing,
    )


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RulesError(f"{where}: expected a list of non-empty strings.")
    return tuple(value)


def _regex(value: object, where: str) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RulesError(f"{where}: a regex is a string.")
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise RulesError(f"{where}: {value!r} is not a valid regex ({exc}).") from exc


def _limit(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RulesError(f"{where}: expected a number.")
    return float(value)


def _series_checks(value: object, where: str) -> SeriesChecks:
    if not isinstance(value, dict) or set(value) - _SERIES_KEYS:
        raise RulesError(f"{where}: \"series\" is an object with keys among {sorted(_SERIES_KEYS)}.")
    single = value.get("single_orientation", False)
    minimum = value.get("min_slices", 0)
    if not isinstance(single, bool):
        raise RulesError(f"{where}: series.single_orientation must be true or false.")
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
        raise RulesError(f"{where}: series.min_slices must be a non-negative integer.")
    return SeriesChecks(single, minimum)
