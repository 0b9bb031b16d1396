"""What the SEG and SC builders share: who made the object, deterministic UIDs and numbers."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import uuid

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
    def for_model(cls, model: ModelInfo, device_serial_number: str) -> "Equipment":
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
