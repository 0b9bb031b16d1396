"""Reproduce the shipped model and its leave-one-head-out numbers (models/MODEL_CARD.md).

    .venv/bin/python models/train_default.py all          # leave-one-head-out, then the final model
    .venv/bin/python models/train_default.py final        # only the shipped weights
    .venv/bin/python models/train_default.py loo [HEAD..] # only leave-one-head-out (all heads by default)

Heads (../shared/data, deepbet reference masks everywhere): the Siemens and Philips DICOM series
with their deepbet SEGs, and the MNI152 and ROBEX-atlas NIfTI heads with ``brainmask_deepbet``.
The GE grid phantom is a negative case (no brain) in every run. Each leave-one-head-out run trains
on the other three heads and scores the held-out head in all three orientations; the final model
trains on all four. Results go to ``models/training-results/`` (JSON, curves, logs); the final
weights to ``models/brain-deeplabv3plus.pt``. Training uses 2 CPU threads unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_node.training.curves import plot_history  # noqa: E402
from dicom_node.training.data import discover_cases  # noqa: E402
from dicom_node.training.evaluate import evaluate_case  # noqa: E402
from dicom_node.training.metrics import format_table, overall  # noqa: E402
from dicom_node.training.train import TrainConfig, train  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "models" / "training-results"
WEIGHTS = REPO / "models" / "brain-deeplabv3plus.pt"
NAME, VERSION = "dicom-node-brain", "1.1.0"
HEADS = {
    "siemens": [DATA / "dicom" / "sag-t1-siemens-skyra", DATA / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm"],
    "philips": [DATA / "dicom" / "sag-t1-philips-ingenia", DATA / "reference" / "sag-t1-philips-ingenia.brain-deepbet.seg.dcm"],
    "mni152": [DATA / "volumes" / "mni152-2mm"],
    "robex": [DATA / "volumes" / "robex-atlas"],
}
NEGATIVES = [DATA / "dicom" / "t1-phantom-ge-signa"]
FINAL = TrainConfig(epochs=36, samples_per_epoch=1280)
LOO = FINAL  # leave-one-head-out scores the shipped recipe (until 1.1.0 it used a 6-epoch one)
CARD = {
    "architecture": "DeepLabV3Plus (segmentation-models-pytorch), tu-mobilenetv3_large_100 encoder from random init, 160x160, 1 channel in, brain logit out",
    "data": "Siemens Skyra + Philips Ingenia sagittal T1 DICOM (deepbet SEG), MNI152 2mm + ROBEX atlas T1 NIfTI (deepbet masks), GE phantom as negative",
    "reference": "deepbet 1.0.2 masks: a reference, not ground truth",
    "card": "models/MODEL_CARD.md",
}


def load_heads(log=print):  # noqa: ANN001, ANN201
    heads = {}
    for name, inputs in HEADS.items():
        (case,) = discover_cases(inputs, log=log)
        case.name = name
        heads[name] = case
    negatives = discover_cases([], negatives=NEGATIVES, log=log)
    return heads, negatives


def run_loo(names: list[str], config: TrainConfig) -> dict:
    heads, negatives = load_heads()
    results = {}
    for held in names:
        started = time.perf_counter()
        train_cases = [c for n, c in heads.items() if n != held] + negatives
        out = RESULTS / f"loo-{held}.pt"
        result = train(train_cases, config, val_cases=[heads[held]], out=out, resume=True, name=f"{NAME}-loo-{held}", version=VERSION)
        per_series = evaluate_case(result.network, result.arch, heads[held], axes="all")
        head_total = overall(per_series)
        print(format_table(per_series, head_total), flush=True)
        plot_history(result.history, RESULTS / f"loo-{held}-curve.png", title=f"leave out {held}")
        results[held] = {"series": per_series, "overall": head_total, "history": result.history, "train_seconds": result.seconds,
                         "wall_seconds": time.perf_counter() - started}
        (RESULTS / f"loo-{held}.json").write_text(json.dumps(results[held], indent=1))
    return results


def run_final(config: TrainConfig) -> dict:
    heads, negatives = load_heads()
    started = time.perf_counter()
    result = train(list(heads.values()) + negatives, config, out=RESULTS / "final.pt", resume=True, name=NAME, version=VERSION, card=CARD)
    per_series = {}
    for case in heads.values():
        per_series.update(evaluate_case(result.network, result.arch, case, axes="all"))
    total = overall(per_series)
    print(format_table(per_series, total), flush=True)
    plot_history(result.history, RESULTS / "final-curve.png", title="shipped model (all four heads)")
    metrics = {f"train_heads_{k}": v for k, v in total.items() if k in ("dice", "iou", "precision", "recall", "ap")}
    for held, numbers in _loo_numbers().items():
        metrics[f"loo_{held}_dice"] = numbers["overall"]["dice"]
    metrics["train_seconds"] = result.seconds
    metrics["epochs"] = float(len(result.history))
    from dicom_node.imaging.network import save_weights

    save_weights(WEIGHTS, result.network, result.arch, name=NAME, version=VERSION, metrics=metrics, card=CARD)
    summary = {"series": per_series, "overall": total, "history": result.history, "train_seconds": result.seconds,
               "wall_seconds": time.perf_counter() - started}
    (RESULTS / "final.json").write_text(json.dumps(summary, indent=1))
    return summary


def _loo_numbers() -> dict:
    out = {}
    for path in sorted(RESULTS.glob("loo-*.json")):
        out[path.stem.removeprefix("loo-")] = json.loads(path.read_text())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["all", "loo", "final"])
    parser.add_argument("heads", nargs="*", default=list(HEADS), help="heads to leave out (loo)")
    parser.add_argument("--epochs", type=int, help="override the epochs")
    parser.add_argument("--max-minutes", type=float, help="wall-clock budget per training run (LR schedule follows it)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (two folds side by side: 1 each)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = args.max_minutes * 60 if args.max_minutes else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.phase in ("all", "loo"):
        run_loo(args.heads, replace(LOO, epochs=args.epochs or LOO.epochs, max_seconds=budget, threads=args.threads))
    if args.phase in ("all", "final"):
        run_final(replace(FINAL, epochs=args.epochs or FINAL.epochs, max_seconds=budget, threads=args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
