"""The network's two jobs on each device: segmenting a series and a retraining round's fine-tune.

    .venv/bin/python bench/bench_devices.py [--cases heads.npz] [--repeats 3]

On the Siemens head (192 sagittal slices, its deepbet mask as the expert mask), with the shipped
model: segmentation (network + post-processing, best of ``--repeats``) and the fine-tune and
scoring of one retraining round with the default settings (``DICOM_NODE_RETRAIN_EPOCHS`` 3 and
``DICOM_NODE_RETRAIN_SAMPLES_PER_EPOCH`` 480, from the production model). The CPU is the peer: CUDA
rows run in the same process when torch sees a GPU, and say so when it does not. The round's
database work and SEG reading are left out: they take the same time on either device.

``--cases`` reads the head from a file written by ``models/train_default.py pack`` instead of
../shared/data, for a GPU machine without the data or the DICOM stack (pydantic-settings is still
needed, for the retraining defaults). Prints a table and ends
with a JSON line of metrics for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.timing import best_of  # noqa: E402
from dicom_node.config import Settings  # noqa: E402
from dicom_node.imaging.network import load_weights  # noqa: E402
from dicom_node.imaging.postprocess import clean_mask  # noqa: E402
from dicom_node.imaging.segmenter import Segmenter  # noqa: E402
from dicom_node.models.shipped import default_weights_path  # noqa: E402
from dicom_node.training.data import Case, discover_cases, load_cases  # noqa: E402
from dicom_node.training.evaluate import evaluate_case  # noqa: E402
from dicom_node.training.train import TrainConfig, train  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def siemens(cases_file: Path | None) -> Case:
    if cases_file:
        return next(c for c in load_cases(cases_file) if c.name in ("siemens", "sag-t1-siemens-skyra"))
    (case,) = discover_cases([DATA / "dicom" / "sag-t1-siemens-skyra", DATA / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm"])
    return case


def segment_seconds(case: Case, weights: Path, device: str, repeats: int) -> tuple[float, str]:
    segmenter = Segmenter.from_weights(weights, device)
    voxel_ml = float(case.spacing[0] * case.spacing[1] * case.spacing[2]) / 1000.0
    spacing = (case.spacing[1], case.spacing[2])
    return best_of(repeats, lambda: clean_mask(segmenter.predict(case.volume, spacing), voxel_ml)), segmenter.runtime


def round_seconds(case: Case, weights: Path, device: str, out: Path) -> tuple[float, float, float]:
    """(fine-tune seconds, scoring seconds for candidate and parent, candidate Dice)."""
    defaults = Settings.model_fields  # the node's retraining defaults, not a copy of them
    config = replace(TrainConfig(), epochs=defaults["retrain_epochs"].default,
                     samples_per_epoch=defaults["retrain_samples_per_epoch"].default, p_negative=0.0,
                     device=device, threads=os.cpu_count() or 1)
    result = train([case], config, out=out, init=weights, progress=False, log=lambda _: None)
    started = time.perf_counter()
    candidate = evaluate_case(result.network, result.arch, case)
    parent, _ = load_weights(weights, device)
    evaluate_case(parent, result.arch, case)
    return result.seconds, time.perf_counter() - started, next(iter(candidate.values()))["dice"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, help="a file written by models/train_default.py pack")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "devices.json")
    args = parser.parse_args()
    case = siemens(args.cases)
    weights = default_weights_path()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    rows: dict[str, dict] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for device in devices:
        torch.set_num_threads(os.cpu_count() or 1)
        seg, runtime = segment_seconds(case, weights, device, args.repeats)
        tune, scoring, dice = round_seconds(case, weights, device, args.out.parent / f"devices-{device}.pt")
        rows[device] = {"segment_s": seg, "runtime": runtime, "finetune_s": tune, "score_s": scoring, "candidate_dice": dice}
    n = case.volume.shape[0]
    print(f"\n{n} slices, {os.cpu_count()} CPU threads, torch {torch.__version__}, GPU: {gpu or 'none'}\n")
    print(f"{'device':<8} {'segment s':>10} {'slices/s':>9} {'fine-tune s':>12} {'scoring s':>10} {'Dice':>7}  runtime")
    for device, r in rows.items():
        print(f"{device:<8} {r['segment_s']:>10.3f} {n / r['segment_s']:>9.0f} {r['finetune_s']:>12.1f} {r['score_s']:>10.1f} {r['candidate_dice']:>7.4f}  {r['runtime']}")
    metrics: dict[str, float | str] = {
        "retrain_finetune_cpu_s": round(rows["cpu"]["finetune_s"], 1),
        "retrain_round_cpu_s": round(rows["cpu"]["finetune_s"] + rows["cpu"]["score_s"], 1),
    }
    if "cuda" in rows:
        metrics.update({
            "segment_cuda_s": round(rows["cuda"]["segment_s"], 3),
            "segment_speedup_cuda_vs_cpu": round(rows["cpu"]["segment_s"] / rows["cuda"]["segment_s"], 2),
            "retrain_finetune_cuda_s": round(rows["cuda"]["finetune_s"], 1),
            "retrain_speedup_cuda_vs_cpu": round(rows["cpu"]["finetune_s"] / rows["cuda"]["finetune_s"], 2),
        })
    else:
        metrics["retrain_speedup_cuda_vs_cpu"] = "no CUDA GPU on this machine"
    args.out.write_text(json.dumps({"slices": n, "threads": os.cpu_count(), "torch": torch.__version__, "gpu": gpu, "rows": rows}, indent=2))
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
