"""Score decision thresholds and post-processing variants of one weights file on whole heads.

    .venv/bin/python models/postprocess_variants.py WEIGHTS HEAD... [--out FILE.json]
    .venv/bin/python models/postprocess_variants.py WEIGHTS HEAD --node --out variants-HEAD.json

HEAD is a name of ``models/train_default.py`` (training and never-seen heads). For every head the
network's brain probabilities are computed once per orientation (as the node computes them, in
each view's own slices) and mapped back to the volume; every variant then thresholds and cleans
them in each view and is scored against deepbet's mask: Dice, precision, recall, and the mean
Dice of the slices in the first and last 10 % of the brain's extent (``end_dice``).

``--node`` scores instead, through ``evaluate_case`` as a fold is scored, the node's optional 3D
steps on its own fused probabilities (``train_default.VARIANTS``: another threshold at the ends
of the brain, smoothing; ``dicom_node.imaging.thresholding``), as a fold's JSON, so that
``train_default.py calibrate`` weighs them beside the thresholds. Folds run since the steps exist
score them in ``run_loo``; this is for the fold networks trained before.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_node.imaging.model_info import ModelInfo  # noqa: E402
from dicom_node.imaging.network import load_weights  # noqa: E402
from dicom_node.imaging.normalize import intensity_window, normalize  # noqa: E402
from dicom_node.imaging.postprocess import clean_mask, erode_connect  # noqa: E402
from dicom_node.imaging.triplanar import VIEW_AXES, triplanar_probabilities  # noqa: E402
from dicom_node.training.data import Case, oriented_stack  # noqa: E402
from dicom_node.training.evaluate import NIFTI_AXIS_NAMES, evaluate_case, predict_probabilities  # noqa: E402
from dicom_node.training.metrics import overall, series_metrics  # noqa: E402

INVERSE = {axis: tuple(int(a) for a in np.argsort(order)) for axis, order in VIEW_AXES.items()}  # oriented_stack's transposes undone


def view_probabilities(network, arch, case: Case) -> list[np.ndarray]:
    """The network's probabilities from each of the three views, in the volume's own axes."""
    out = []
    for axis in (0, 1, 2):
        stack, spacing = oriented_stack(case.volume, case.spacing, axis)
        prob = predict_probabilities(network, ModelInfo("view", "-", arch), stack, (float(case.spacing[axis]), *spacing))
        out.append(np.ascontiguousarray(prob.transpose(INVERSE[axis])))
    return out


TRIPLANAR = ((160, 1), (160, 2), (160, 3), (128, 1), (128, 2), (128, 3))  # (grid size, step) of the node's fused inference


@torch.no_grad()
def triplanar(network, case: Case, size: int, step: int) -> np.ndarray:
    """The node's tri-planar fused probabilities (dicom_node.imaging.triplanar), in volume axes."""
    network.eval()
    volume = normalize(torch.from_numpy(np.ascontiguousarray(case.volume, dtype=np.float32)), intensity_window(case.volume))
    return triplanar_probabilities(network, volume, case.spacing, size, step=step, directions=case.directions).numpy()


Variant = Callable[[list[np.ndarray], int, Case], np.ndarray]  # (view probabilities, view axis, case) -> mask in volume axes


def in_view(mask: np.ndarray, axis: int, step: Callable[[np.ndarray, tuple[float, float, float]], np.ndarray], case: Case) -> np.ndarray:
    """Run a post-processing step in the view's slices and map the result back to volume axes."""
    stack, spacing = oriented_stack(mask, case.spacing, axis)
    view_spacing = (float(case.spacing[axis]), *spacing)
    return np.ascontiguousarray(step(stack, view_spacing).transpose(INVERSE[axis]))


def variants() -> dict[str, Variant]:
    def single(threshold: float, opening_mm: float = 0.0) -> Variant:
        def run(probs: list[np.ndarray], axis: int, case: Case) -> np.ndarray:
            def step(m: np.ndarray, sp: tuple[float, float, float]) -> np.ndarray:
                if opening_mm:
                    m = erode_connect(m, sp, opening_mm)
                return clean_mask(m, float(np.prod(sp)) / 1000).mask
            return in_view(probs[axis] > threshold, axis, step, case)
        return run

    def fused(threshold: float, opening_mm: float = 0.0) -> Variant:
        def run(probs: list[np.ndarray], axis: int, case: Case) -> np.ndarray:
            mean = (probs[0] + probs[1] + probs[2]) / 3
            return single(threshold, opening_mm)([mean, mean, mean], axis, case)
        return run

    def grid_fused(key: str, threshold: float) -> Variant:
        def run(probs: list[np.ndarray], axis: int, case: Case) -> np.ndarray:
            p = probs[3 + [f"tri{a}s{b}" for a, b in TRIPLANAR].index(key)]
            return single(threshold)([p, p, p], axis, case)
        return run

    out: dict[str, Variant] = {}
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        out[f"t{t:.1f}"] = single(t)
    for r in (2.0, 4.0, 6.0):
        out[f"t0.5+open{r:g}mm"] = single(0.5, r)
        out[f"t0.7+open{r:g}mm"] = single(0.7, r)
    for t in (0.5, 0.6, 0.7):
        out[f"fuse3-t{t:.1f}"] = fused(t)
    out["fuse3-t0.5+open4mm"] = fused(0.5, 4.0)
    for size, step in TRIPLANAR:
        for t in (0.5, 0.6, 0.7):
            out[f"tri{size}s{step}-t{t:.1f}"] = grid_fused(f"tri{size}s{step}", t)
    return out


def score_node_variants(network, info: ModelInfo, case: Case, only: Sequence[str] = ()) -> dict[str, Any]:
    """``train_default.VARIANTS`` (those in ``only``, when given) on ``case`` in its three
    orientations through ``evaluate_case``, as a fold's JSON: ``series`` at the weights' own way
    of running, and ``thresholds`` with the pooled rows at 0.5 and 0.6 (which must match the
    fold's own) and of each variant, which ``train_default.py calibrate`` merges."""
    from train_default import VARIANTS, pooled_rows

    variants = {k: v for k, v in VARIANTS.items() if not only or k in only}
    scored = evaluate_case(network, info, case, axes="all", thresholds=(0.5, 0.6), variants=variants)
    return {"weights": f"{info.name} {info.version}", "series": {k: v for k, v in scored.items() if "@" not in k},
            "thresholds": pooled_rows(scored, ("0.5", "0.6", *variants)),
            "variant_series": {k: v for k, v in scored.items() if "@" in k}}


def main(argv: list[str] | None = None) -> int:
    from train_default import load_heads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path)
    parser.add_argument("heads", nargs="+")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=[], help="score only the variants whose names start with these (--node: only those named)")
    parser.add_argument("--node", action="store_true", help="train_default.VARIANTS on the node's fused probabilities, one head, as a fold's JSON")
    parser.add_argument("--cases", type=Path, help="read the cases from this file (train_default.py pack)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    network, info = load_weights(args.weights)
    heads, _, never_seen, _ = load_heads(args.cases)
    cases = {**heads, **never_seen}
    if args.node:
        if len(args.heads) != 1 or not args.out:
            parser.error("--node scores one head and needs --out")
        scored = score_node_variants(network, info, cases[args.heads[0]], args.only)
        for name, row in scored["thresholds"].items():
            print(f"{name:18s} dice {row['dice']:.4f} precision {row['precision']:.4f} recall {row['recall']:.4f} end {row['end_dice']:.4f}", flush=True)
        args.out.write_text(json.dumps(scored, indent=1))
        return 0
    chosen = {k: v for k, v in variants().items() if not args.only or k.startswith(tuple(args.only))}
    rows: dict[str, dict[str, dict[str, float]]] = {name: {} for name in chosen}
    seconds: dict[str, float] = {name: 0.0 for name in chosen}
    for head in args.heads:
        case = cases[head]
        probs = view_probabilities(network, info.arch, case)
        for size, step in TRIPLANAR:
            started = time.perf_counter()
            wanted = any(k.startswith(f"tri{size}s{step}-") for k in chosen)
            probs.append(triplanar(network, case, size, step) if wanted else probs[0])
            print(f"{head}: tri{size}s{step} {time.perf_counter() - started:.2f} s", flush=True)
        for name, variant in chosen.items():
            for axis in (0, 1, 2):
                started = time.perf_counter()
                pred = variant(probs, axis, case)
                seconds[name] += time.perf_counter() - started
                ref_view, _ = oriented_stack(case.mask, case.spacing, axis)
                pred_view, _ = oriented_stack(pred, case.spacing, axis)
                prob_view, _ = oriented_stack(probs[axis], case.spacing, axis)
                rows[name][f"{head}/{NIFTI_AXIS_NAMES[axis]}"] = series_metrics(pred_view, ref_view, prob_view)
        print(f"{head}: " + ", ".join(f"{n} {overall({k: v for k, v in rows[n].items() if k.startswith(head + '/')})['dice']:.4f}" for n in chosen), flush=True)
    summary: dict[str, dict[str, Any]] = {name: {"overall": overall(r), "series": r, "postprocess_seconds": seconds[name]} for name, r in rows.items()}
    print(f"{'variant':22s} {'dice':>7s} {'prec':>7s} {'recall':>7s} {'end':>7s} {'min head':>9s}")
    for name, s in summary.items():
        o = s["overall"]
        per_head = [overall({k: v for k, v in s["series"].items() if k.startswith(h + "/")})["dice"] for h in args.heads]
        print(f"{name:22s} {o['dice']:7.4f} {o['precision']:7.4f} {o['recall']:7.4f} {o['end_dice']:7.4f} {min(per_head):9.4f}")
    if args.out:
        args.out.write_text(json.dumps({"weights": str(args.weights), "heads": args.heads, "variants": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
