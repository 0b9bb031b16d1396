"""The node's one settings object, read once from environment variables (and an optional file).

Operators script against the ``DICOM_NODE_*`` names: keep them stable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dicom_node.imaging.pseudocolor import PAPER_BINS, PseudocolorSettings, colormap_code

_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash
_DESTINATION = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Destination:
    """A C-STORE peer results are exported to."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AET@host:port``; raise ``ValueError`` naming the bad entry."""
        match = _DESTINATION.match(text.strip())
        if not match or not _AET.match(match["aet"].strip()) or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"destination {text!r} is not of the form AET@host:port")
        return cls(match["aet"].strip(), match["host"], int(match["port"]))


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything configurable, from ``DICOM_NODE_*`` variables or ``DICOM_NODE_CONFIG`` (a .env file)."""

    model_config = SettingsConfigDict(env_prefix="DICOM_NODE_", extra="forbid", frozen=True)

    ae_title: str = "DICOMNODE"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    data_dir: Path = Path("./var")
    database_url: str = ""
    destinations: Annotated[list[Destination], NoDecode] = []
    series_timeout: float = Field(10.0, gt=0, description="quiet seconds after which a series is complete")
    completion_grace_s: float = Field(
        0.5, ge=0, description="wait after a released association (or a whole acquisition) before its series is complete"
    )
    allowed_callers: Annotated[list[str], NoDecode] = []
    allowed_hosts: Annotated[list[str], NoDecode] = []
    min_free_bytes: int = Field(512 * 1024 * 1024, ge=0, description="refuse instances below this free space")
    export_max_attempts: int = Field(8, ge=1)
    export_associations: int = Field(4, ge=1, le=32, description="associations opened at once to each destination")
    export_backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles per attempt")
    export_backoff_max_s: float = Field(300.0, gt=0)
    job_max_attempts: int = Field(3, ge=1)
    series_rules: Path | None = Field(None, description="JSON series selection rules; None: the defaults (dicom_node.series.selection)")
    poll_interval_s: float = Field(1.0, gt=0, description="tracker and dispatcher tick")
    max_pdu: int = Field(
        262144, ge=0, description="largest PDU received (bytes): bounds memory per association; 0 = unlimited"
    )
    max_associations: int = Field(32, ge=1, description="negotiated associations at once; more get a transient reject")
    network_timeout_s: float = Field(60.0, gt=0, description="a silent peer (mid-PDU, handshake or idle) is dropped after it")
    flows: Literal["embedded", "distributed", "off"] = Field(
        "embedded",
        description="embedded: a local Prefect server, flows in this process; distributed: submit to "
        "PREFECT_API_URL's work pool; off: plain functions, no Prefect",
    )
    prefect_port: int = Field(4200, ge=1, le=65535, description="embedded Prefect server (dashboard) port")
    work_pool: str = "dicom-node"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model_weights: Path | None = Field(None, description="weights file adopted at start-up; default: the shipped model")
    pseudocolor_bins: int = Field(PAPER_BINS, ge=2, le=255, description="gray-level bins of the pseudocolor series")
    pseudocolor_colormap: str = Field("JET", description="OpenCV colormap name of the pseudocolor series")
    pseudocolor_sc: Literal["single-frame", "multi-frame"] = Field(
        "single-frame", description="the pseudocolor series as one SC image per slice, or as one multi-frame SC object"
    )
    tls_cert: Path | None = Field(None, description="PEM certificate: the listener speaks DICOM TLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_ca: Path | None = Field(None, description="PEM CA: callers must present a certificate it signed")
    export_tls: bool = Field(False, description="export over TLS (verified against tls_ca)")
    retrain_min_masks: int = Field(5, ge=1, description="new expert masks that start a retraining round")
    retrain_epochs: int = Field(3, ge=1)
    retrain_samples_per_epoch: int = Field(480, ge=16)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("destinations", mode="before")
    @classmethod
    def _parse_destinations(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            return [Destination.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("allowed_callers", "allowed_hosts", mode="before")
    @classmethod
    def _parse_list(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("ae_title")
    @classmethod
    def _check_aet(cls, value: str) -> str:
        if not _AET.match(value):
            raise ValueError(f"AE title {value!r} must be 1-16 printable characters without a backslash")
        return value

    @field_validator("pseudocolor_colormap")
    @classmethod
    def _check_colormap(cls, value: str) -> str:
        colormap_code(value)  # raises ValueError naming the known maps
        return value

    @property
    def pseudocolor(self) -> PseudocolorSettings:
        return PseudocolorSettings(bins=self.pseudocolor_bins, colormap=self.pseudocolor_colormap)

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both DICOM_NODE_TLS_CERT and DICOM_NODE_TLS_KEY")
        if self.export_tls and not self.tls_ca:
            raise ValueError("export_tls needs DICOM_NODE_TLS_CA to verify the destination")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL; SQLite in the data folder unless one is configured."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'dicom-node.db').resolve()}"

    @property
    def incoming_dir(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def models_dir(self) -> Path:
        """The registry's weights files: retrained versions and copies of shipped ones."""
        return self.data_dir / "models"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"


def load_settings() -> Settings:
    """Read the settings once; ``DICOM_NODE_CONFIG`` may name a .env-style file."""
    env_file = os.environ.get("DICOM_NODE_CONFIG")
    if env_file:
        return Settings(_env_file=env_file)
    return Settings()
