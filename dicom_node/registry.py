"""The model registry: which weights are in production, which were tried, and how they scored.

Exactly one version is ``production`` at a time (after bootstrap). Promoting retires the current
one; rolling back retires the current one and restores the version it replaced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import ModelStatus, ModelVersion, utcnow


class RegistryError(ValueError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to, ...)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register(
    session: Session,
    version: str,
    weights_path: Path,
    status: ModelStatus,
    *,
    parent: str | None = None,
    metrics: dict | None = None,
    n_masks: int = 0,
) -> ModelVersion:
    if session.scalar(select(ModelVersion.id).where(ModelVersion.version == version)) is not None:
        raise RegistryError(f"model version {version!r} is already registered")
    if status is ModelStatus.PRODUCTION:
        _retire_production(session)
    row = ModelVersion(
        version=version,
        parent_version=parent,
        status=status,
        weights_path=str(weights_path),
        sha256=sha256_of(weights_path),
        metrics=metrics,
        n_masks=n_masks,
        promoted_at=utcnow() if status is ModelStatus.PRODUCTION else None,
    )
    session.add(row)
    session.flush()
    return row


def production(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.status == ModelStatus.PRODUCTION))


def ensure_bootstrapped(session: Session, default_weights: Path, version: str) -> ModelVersion:
    """Register the shipped weights as production when the registry is empty."""
    current = production(session)
    if current is not None:
        return current
    if session.scalar(select(ModelVersion.id).limit(1)) is not None:
        raise RegistryError("no model is in production; promote one with `dicom-node models promote VERSION`")
    return register(session, version, default_weights, ModelStatus.PRODUCTION, metrics={"source": "shipped"})


def _retire_production(session: Session) -> None:
    session.execute(
        update(ModelVersion).where(ModelVersion.status == ModelStatus.PRODUCTION).values(status=ModelStatus.RETIRED)
    )


def promote(session: Session, version: str) -> ModelVersion:
    row = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if row is None:
        raise RegistryError(f"no model version {version!r}; `dicom-node models list` shows them")
    if row.status is ModelStatus.PRODUCTION:
        return row
    if not Path(row.weights_path).exists() or sha256_of(Path(row.weights_path)) != row.sha256:
        raise RegistryError(f"weights of {version!r} at {row.weights_path} are missing or changed since registration")
    _retire_production(session)
    row.status = ModelStatus.PRODUCTION
    row.promoted_at = utcnow()
    return row


def rollback(session: Session) -> ModelVersion:
    """Retire the production version and restore the one that was in production before it."""
    current = production(session)
    if current is None:
        raise RegistryError("no model is in production")
    previous = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.status == ModelStatus.RETIRED, ModelVersion.promoted_at.is_not(None), ModelVersion.id != current.id)
        .order_by(ModelVersion.promoted_at.desc())
        .limit(1)
    )
    if previous is None:
        raise RegistryError(f"nothing to roll back to: {current.version} is the only version that was in production")
    current.status = ModelStatus.RETIRED
    current.promoted_at = None  # so a second rollback goes further back, not forth again
    previous.status = ModelStatus.PRODUCTION
    previous.promoted_at = utcnow()
    return previous


@dataclass(frozen=True)
class ModelRow:
    version: str
    status: str
    parent: str | None
    metrics: dict | None
    n_masks: int
    sha256: str
    weights_path: str
    created_at: str


def list_models(session: Session) -> list[ModelRow]:
    return [
        ModelRow(m.version, m.status.value, m.parent_version, m.metrics, m.n_masks, m.sha256, m.weights_path, m.created_at.isoformat())
        for m in session.scalars(select(ModelVersion).order_by(ModelVersion.id))
    ]


def is_not_worse(candidate: dict, production_metrics: dict, key: str = "dice", tolerance: float = 0.0) -> bool:
    """The promotion gate: the candidate's held-out score is at least production's (minus tolerance)."""
    return float(candidate[key]) >= float(production_metrics[key]) - tolerance
