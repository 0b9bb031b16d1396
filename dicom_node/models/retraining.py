"""A retraining round: fine-tune production on expert masks, compare on a fixed split, promote or not.

Plain library code: :func:`run_round` trains and scores, :func:`round_outcome` says what the job
writes when it ends. The ``retrain`` job handler and the ``retrain`` flow both use the two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dicom_node.config import Settings
from dicom_node.db.models import ExpertMask, Instance, ModelStatus, ModelVersion, Series
from dicom_node.db.session import Database
from dicom_node.jobs.dispatch import Outcome, handler_for
from dicom_node.jobs.kinds import JobKind
from dicom_node.jobs.listing import JobInput
from dicom_node.jobs.queue import PermanentJobError
from dicom_node.models.registry import is_not_worse, production, promote, register
from dicom_node.uids import short_hash

if TYPE_CHECKING:  # the training data module imports torch
    from dicom_node.training.data import Case

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpertCaseRef:
    mask_id: int
    split: str
    seg_path: Path
    series_uid: str
    series_paths: list[Path]


@dataclass
class RoundResult:
    version: str
    status: str
    parent: str
    candidate: dict
    production: dict
    evaluated_on: str
    n_train: int
    n_eval: int
    n_masks: int
    history: list[dict] = field(default_factory=list)
    weights_path: Path | None = None
    seconds: float = 0.0

    @property
    def promoted(self) -> bool:
        return self.status == ModelStatus.PRODUCTION.value


def expert_case_refs(db: Database) -> list[ExpertCaseRef]:
    """Every expert mask with the stored files of its source series."""
    refs = []
    with db.session() as session:
        rows = session.execute(
            select(ExpertMask.id, ExpertMask.split, Instance.path, Series.id, Series.series_instance_uid)
            .join(Instance, ExpertMask.instance_id == Instance.id)
            .join(Series, ExpertMask.source_series_id == Series.id)
            .order_by(ExpertMask.id)
        ).all()
        for mask_id, split, seg_path, series_id, series_uid in rows:
            paths = [Path(p) for p in session.scalars(select(Instance.path).where(Instance.series_id == series_id).order_by(Instance.id))]
            refs.append(ExpertCaseRef(mask_id, split, Path(seg_path), series_uid, paths))
    return refs


def load_case(ref: ExpertCaseRef) -> Case:
    """The training case of one expert mask (the source series and the mask on its slices)."""
    from dicom_node.imaging.loading import load_series
    from dicom_node.outputs.seg import read_seg_mask
    from dicom_node.training.data import dicom_case

    series = load_series(ref.series_paths)
    return dicom_case(series, read_seg_mask(ref.seg_path, series), name=f"expert-{short_hash(ref.series_uid)}")


def score(weights: Path, cases: list[Case], device: str = "cpu") -> dict[str, Any]:
    """Pooled Table-2 metrics of ``weights`` on ``cases`` (the node's post-processing included)."""
    from dicom_node.imaging.network import load_weights, resolve_device
    from dicom_node.training.evaluate import evaluate_case
    from dicom_node.training.metrics import overall

    network, info = load_weights(weights, resolve_device(device))
    per_series: dict = {}
    for case in cases:
        per_series.update(evaluate_case(network, info, case))
    return {"overall": overall(per_series), "per_series": per_series}


def round_verdict(candidate: dict, current: dict) -> str:
    """``production`` when the candidate is not worse than production on Dice, else ``rejected``."""
    return ModelStatus.PRODUCTION.value if is_not_worse(candidate, current, key="dice") else ModelStatus.REJECTED.value


def conclude_round(session: Session, result: RoundResult) -> None:
    """Register the candidate with its metrics, promote it or keep it as rejected, mark the masks used."""
    metrics = {
        "dice": result.candidate["dice"],
        "evaluated_on": result.evaluated_on,
        "candidate": result.candidate,
        "production": {"version": result.parent, **result.production},
        "history": result.history,
    }
    assert result.weights_path is not None
    register(session, result.version, result.weights_path, ModelStatus.CANDIDATE, parent=result.parent, metrics=metrics,
             n_masks=result.n_masks)
    if result.promoted:
        promote(session, result.version)
    else:
        session.execute(update(ModelVersion).where(ModelVersion.version == result.version).values(status=ModelStatus.REJECTED))
    session.execute(update(ExpertMask).where(ExpertMask.used_in_version.is_(None)).values(used_in_version=result.version))


def round_outcome(result: RoundResult) -> Outcome:
    """The job's end: the registry rows are written with it, in one transaction."""
    verdict = "promoted" if result.promoted else "rejected"
    return Outcome(
        message=f"{result.version} {verdict}: Dice {result.candidate['dice']:.4f} vs {result.production['dice']:.4f} ({result.evaluated_on})",
        stats={"candidate": result.candidate, "production": result.production, "promoted": result.promoted},
        model_version=result.version,
        writes=[lambda session: conclude_round(session, result)],
    )


def run_round(db: Database, settings: Settings, round_no: int, log_line: Callable[[str], None] = log.info) -> RoundResult:
    """Fine-tune production on every expert mask and score candidate and production; writes no rows."""
    from dicom_node.training.train import TrainConfig, train

    started = time.perf_counter()
    refs = expert_case_refs(db)
    if not refs:
        raise PermanentJobError("no expert masks have been received: nothing to retrain on")
    with db.session() as session:
        parent = production(session)
        if parent is None:
            raise PermanentJobError("no model is in production to fine-tune from")
        parent_version, parent_path = parent.version, Path(parent.weights_path)
    train_refs = [r for r in refs if r.split == "train"]
    eval_refs = [r for r in refs if r.split == "holdout"]
    evaluated_on = "holdout"
    if not eval_refs:  # too few masks for a held-out case yet: say so rather than pretend
        eval_refs, evaluated_on = train_refs, "training masks (no held-out mask yet)"
    if not train_refs:
        train_refs = eval_refs
    train_cases = [load_case(r) for r in train_refs]
    eval_cases = train_cases if eval_refs is train_refs else [load_case(r) for r in eval_refs]

    version = f"{parent_version}-r{round_no}"
    out = settings.models_dir / f"{version}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    config = replace(TrainConfig(), epochs=settings.retrain_epochs, samples_per_epoch=settings.retrain_samples_per_epoch, p_negative=0.0,
                     device=settings.device)
    trained = train(train_cases, config, val_cases=eval_cases, out=out, init=parent_path, version=version,
                    name="dicom-node-brain", progress=False, log=log_line)
    candidate = score(out, eval_cases, settings.device)["overall"]
    current = score(parent_path, eval_cases, settings.device)["overall"]
    return RoundResult(
        version=version, status=round_verdict(candidate, current), parent=parent_version,
        candidate=candidate, production=current, evaluated_on=evaluated_on,
        n_train=len(train_cases), n_eval=len(eval_cases), n_masks=len(refs), history=trained.history, weights_path=out,
        seconds=time.perf_counter() - started,
    )


@handler_for(JobKind.RETRAIN)
def retrain_job(db: Database, settings: Settings, job: JobInput) -> Outcome:
    return round_outcome(run_round(db, settings, job.version))
