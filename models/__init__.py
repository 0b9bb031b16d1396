"""Shipped model weights and where to find them.

The default trained model (issue 5) will be ``models/brain-deeplabv3plus.pt`` with its model
card beside it. Until it exists, commands refuse with a message naming this path.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHTS_ENV_VAR = "DICOM_NODE_MODEL_WEIGHTS"
DEFAULT_WEIGHTS_NAME = "brain-deeplabv3plus.pt"


def default_weights_path() -> Path:
    """Where the shipped default weights file lives (it may not exist yet)."""
    return Path(__file__).resolve().parent / DEFAULT_WEIGHTS_NAME


def resolve_weights_path(explicit: Path | str | None = None) -> Path:
    """The weights to use: ``explicit``, else ``$DICOM_NODE_MODEL_WEIGHTS``, else the default."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return default_weights_path()
