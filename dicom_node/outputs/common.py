"""What the SEG and SC builders share: who made the object, deterministic UIDs and numbers, valid sources."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from pydicom import config
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM, validate_value

from dicom_node.imaging.model_info import ModelInfo

MANUFACTURER = "dicom-node"
SEG_SERIES_OFFSET = 901
SC_SERIES_OFFSET = 902
_MAX_IS = 2**31 - 1


class OutputBuildError(ValueError):
    """A SEG or SC object could not be built; the message names the series and the reason."""


def package_version() -> str:
    try:
        return version("dicom-node")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Equipment:
    """Who made an output object (General Equipment and Enhanced General Equipment modules)."""

    manufacturer: str
    model_name: str
    software_versions: tuple[str, ...]
    device_serial_number: str

    @classmethod
    def for_model(cls, model: ModelInfo, device_serial_number: str) -> Equipment:
        """dicom-node as manufacturer; software versions name the node and the model version."""
        return cls(
            manufacturer=MANUFACTURER,
            model_name="dicom-node brain segmentation",
            software_versions=(f"dicom-node {package_version()}"[:64], f"{model.name} {model.version}"[:64]),
            device_serial_number=device_serial_number,
        )


_UID_NAMESPACE = uuid.UUID("6f1c3c2e-5d0b-4a53-9a57-6b0d1c0de5e9")  # dicom-node's name-based UUID space


def derive_uid(uid_seed: str, *parts: str) -> str:
    """A UID that depends only on ``uid_seed`` and ``parts``, so re-runs reproduce it.

    A name-based UUID (version 5) in the ``2.25.`` form of PS3.5 B.2. (pydicom's
    ``generate_uid(prefix=None, ...)`` ignores its entropy sources and is random.)
    """
    if not uid_seed:
        raise OutputBuildError("uid_seed must be a non-empty string (e.g. series UID, job and model version).")
    name = "\x1f".join([uid_seed, *parts])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def derived_series_number(source_series_number: int | None, offset: int) -> int:
    """``1000 * source + offset`` (series 5 -> 5901), or ``offset`` when that does not fit."""
    if source_series_number is None or source_series_number < 0:
        return offset
    number = 1000 * source_series_number + offset
    return number if number <= _MAX_IS else offset


# Type 2 attributes of the Patient and General Study modules: present in every output, empty
# where the source lacks them or holds an invalid value (PS3.3 C.7.1.1, C.7.2.1).
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_CHECKED_VRS = frozenset({"DA", "TM", "DT", "AS", "DS", "IS", "PN"})


def valid_source(ds: Dataset) -> tuple[Dataset, list[str]]:
    """A shallow copy of a source header that highdicom can copy patient and study data from.

    Real headers carry values their VR does not allow (dates ``***`` as an anonymiser left them
    on a UIH uMR 770) and lack Type 2 attributes (PatientSex on Siemens mosaics from heudiconv);
    pydicom raises on the first and highdicom on the second. Here every top-level value of a
    checked VR is decoded once: one that does not decode is emptied, and the Type 2 patient and
    study attributes are added empty where absent. Dates and times must also parse. Valid
    values are copied as they are. Returns the copy and the keywords it emptied or added (for a
    note; never their values). The source header is not changed.
    """
    fixed = Dataset(dict(ds.items()))
    if hasattr(ds, "file_meta"):
        fixed.file_meta = ds.file_meta
    fixed.set_original_encoding(*ds.original_encoding, ds.original_character_set)  # type: ignore[call-arg]
    changed: list[str] = []
    for tag in list(fixed.keys()):
        raw = fixed.get_item(tag)
        vr = getattr(raw, "VR", None)
        if vr not in _CHECKED_VRS:
            continue
        try:
            _check_value(vr, fixed[tag].value)
        except Exception:
            keyword = keyword_for_tag(tag) or str(tag)
            fixed[tag] = DataElement(tag, vr, None)
            changed.append(keyword)
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in fixed:
            setattr(fixed, keyword, None)
            changed.append(keyword)
    return fixed, changed


_TEMPORAL = {"DA": DA, "TM": TM, "DT": DT}


def _check_value(vr: str, value: object) -> None:
    """Raise when ``value`` is not valid for ``vr`` (dates and times must also parse)."""
    values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    for item in values:  # type: ignore[attr-defined]
        if item in (None, "") or not isinstance(item, str) or vr not in (*_TEMPORAL, "AS"):
            continue  # numbers and names were decoded (or raised) when the value was read
        validate_value(vr, item, config.RAISE)
        if vr in _TEMPORAL:
            _TEMPORAL[vr](item)
