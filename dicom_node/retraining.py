"""A retraining round: fine-tune production on expert masks, compare on a fixed split, promote or not.

Plain library code; the ``retrain`` flow and ``dicom-node retrain`` call :func:`run_round`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import select, update

from dicom_node.config import Settings
from dicom_node.db.models import ExpertMask, Instance, Job, JobState, ModelStatus, ModelVersion, Series
from dicom_node.db.session import Database
from dicom_node.jobs import finish_job
from dicom_node.registry import is_not_worse, production, promote, register
from dicom_node.uids import short_hash

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
    history: list[dict] = field(default_factory=list)
    weights_path: Path | None = None
    seconds: float = 0.0


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


def load_case(ref: ExpertCaseRef):  # type: ignore[no-untyped-def]
    """The training case of one expert mask (the source series and the mask on its slices)."""
    from dicom_node.imaging.loading import load_series
    from dicom_node.outputs.seg import read_seg_mask
    from dicom_node.training.data import dicom_case

    series = load_series(ref.series_paths)
    return dicom_case(series, read_seg_mask(ref.seg_path, series), name=f"expert-{short_hash(ref.series_uid)}")


def score(weights: Path, cases: list, device: str = "cpu") -> dict:  # type: ignore[type-arg]
    """Pooled Table-2 metrics of ``weights`` on ``cases`` (the node's post-processing included)."""
    from dicom_node.imaging.network import load_weights, resolve_device
    from dicom_node.training.evaluate import evaluate_case
    from dicom_node.training.metrics import overall

    network, info = load_weights(weights, resolve_device(device))
    per_series: dict = {}
    for case in cases:
        per_series.update(evaluate_case(network, info.arch, case))
    return {"overall": overall(per_series), "per_series": per_series}


def conclude_round(
    db: Database,
    version: str,
    weights: Path,
    parent_version: str,
    candidate: dict,
    current: dict,
    evaluated_on: str,
    history: list[dict],
    n_masks: int,
    job_id: int | None = None,
) -> bool:
    """Register the candidate with its metrics; promote it only if it is not worse. True if promoted."""
    promoted = is_not_worse(candidate, current, key="dice")
    metrics = {
        "dice": candidate["dice"],
        "evaluated_on": evaluated_on,
        "candidate": candidate,
        "production": {"version": parent_version, **current},
        "history": history,
    }
    with db.session() as session:
        register(session, version, weights, ModelStatus.CANDIDATE, parent=parent_version, metrics=metrics, n_masks=n_masks)
        if promoted:
            promote(session, version)
        else:
            session.execute(update(ModelVersion).where(ModelVersion.version == version).values(status=ModelStatus.REJECTED))
        session.execute(update(ExpertMask).where(ExpertMask.used_in_version.is_(None)).values(used_in_version=version))
        if job_id is not None:
            verdict = "promoted" if promoted else "rejected"
            finish_job(session, job_id, JobState.SUCCEEDED, model_version=version,
                       message=f"{version} {verdict}: Dice {candidate['dice']:.4f} vs {current['dice']:.4f} ({evaluated_on})",
                       stats={"candidate": candidate, "production": current, "promoted": promoted})
    return promoted


def run_round(db: Database, settings: Settings, job_id: int | None = None, log_line=log.info) -> RoundResult:  # type: ignore[no-untyped-def]
    """One round, from the production model; registers the candidate and promotes it if not worse."""
    import time

    from dicom_node.training.train import TrainConfig, train

    started = time.perf_counter()
    refs = expert_case_refs(db)
    if not refs:
        raise ValueError("no expert masks have been received: nothing to retrain on")
    with db.session() as session:
        parent = production(session)
        if parent is None:
            raise ValueError("no model is in production to fine-tune from")
        parent_version, parent_path = parent.version, Path(parent.weights_path)
        round_no = session.get(Job, job_id).version if job_id else 1 + len(list(session.scalars(select(Job.id).where(Job.kind == "retrain"))))  # type: ignore[union-attr]
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
    result = train(train_cases, config, val_cases=eval_cases, out=out, init=parent_path, version=version,
                   name="dicom-node-brain", progress=False, log=log_line)
    candidate = score(out, eval_cases, settings.device)
    current = score(parent_path, eval_cases, settings.device)
    promoted = conclude_round(db, version, out, parent_version, candidate["overall"], current["overall"],
                              evaluated_on, result.history, len(refs), job_id)
    return RoundResult(
        version=version, status="production" if promoted else "rejected", parent=parent_version,
        candidate=candidate["overall"], production=current["overall"], evaluated_on=evaluated_on,
        n_train=len(train_cases), n_eval=len(eval_cases), history=result.history, weights_path=out,
        seconds=time.perf_counter() - started,
    )
