"""The weights a job uses: the registry's production version, bootstrapped from the shipped file.

The shipped model lives inside the package (``weights/``), so a plain ``pip install`` carries it;
``DICOM_NODE_MODEL_WEIGHTS`` names another file.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from dicom_node.config import Settings
from dicom_node.db.models import ModelVersion
from dicom_node.db.session import Database
from dicom_node.models.registry import adopt_shipped, production

DEFAULT_WEIGHTS_NAME = "brain-deeplabv3plus.pt"


def default_weights_path() -> Path:
    """The shipped default weights file."""
    return Path(__file__).resolve().parent / "weights" / DEFAULT_WEIGHTS_NAME


def configured_weights(settings: Settings) -> Path:
    """``DICOM_NODE_MODEL_WEIGHTS`` when set, else the shipped model."""
    return settings.model_weights.expanduser() if settings.model_weights else default_weights_path()


def _adopt_configured(session: Session, settings: Settings) -> ModelVersion:
    from dicom_node.imaging.network import load_weights  # torch loads where it is used

    path = configured_weights(settings)
    _, info = load_weights(path, "cpu")  # a missing or corrupt file fails here, clearly
    return adopt_shipped(session, path, info.version, settings.models_dir)


def production_weights(db: Database, settings: Settings) -> Path:
    """The weights new jobs use: the registry's production version (the configured file when the
    registry is empty)."""
    with db.session() as session:
        row = production(session)
        if row is None:
            row = _adopt_configured(session, settings)
        return Path(row.weights_path)


def check_model(db: Database, settings: Settings) -> str:
    """At start-up: register a new shipped model version (an upgrade may bring one), then load the
    production model, so a missing or corrupt weights file stops start-up clearly."""
    from dicom_node.imaging.segmenter import get_segmenter

    with db.session() as session:
        if production(session) is None or configured_weights(settings).is_file():
            _adopt_configured(session, settings)
    info = get_segmenter(production_weights(db, settings), settings.device).info
    return f"{info.name} {info.version}"
