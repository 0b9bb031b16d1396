"""The model registry: which weights are in production, which were tried, and how they scored.

Exactly one version is ``production`` at a time (after bootstrap). Promoting retires the current
one; rolling back retires the current one and restores the version it replaced. Every version's
weights file is pinned by sha256: a version whose file is missing or changed is never put back in
production.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.db.models import ModelStatus, ModelVersion, utcnow
from dicom_node.receive.storage import atomic_file

log = logging.getLogger(__name__)


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


def adopt_shipped(session: Session, shipped: Path, version: str, store: Path) -> ModelVersion:
    """Register the shipped (or configured) weights when their version is new; return production.

    The registry keeps its own copy, ``store/VERSION.pt``: an upgrade replaces the shipped file, and
    the version it replaced must stay loadable for a rollback. A new shipped version goes into
    production when the registry is empty or production is an earlier shipped version; when a
    retrained model is in production it stays there and the new version waits as a candidate.
    """
    current = production(session)
    known = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if known is not None and known.sha256 != sha256_of(shipped):
        log.warning("the weights at %s say version %s, which the registry holds with other weights; keeping those "
                    "(give new weights a new version: dicom-node train --version)", shipped, version)
    if known is None:
        copy = store / f"{version}.pt"
        with atomic_file(copy) as fh, open(shipped, "rb") as source:
            shutil.copyfileobj(source, fh)
        follows = current is None or (current.metrics or {}).get("source") == "shipped"
        status = ModelStatus.PRODUCTION if follows else ModelStatus.CANDIDATE
        row = register(session, version, copy, status, metrics={"source": "shipped"})
        current = row if follows else current
    if current is None:
        raise RegistryError("no model is in production; promote one with `dicom-node models promote VERSION`")
    return current


def _check_intact(row: ModelVersion) -> None:
    path = Path(row.weights_path)
    if not path.is_file() or sha256_of(path) != row.sha256:
        raise RegistryError(f"weights of {row.version!r} at {path} are missing or changed since registration")


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
    _check_intact(row)
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
    _check_intact(previous)
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
