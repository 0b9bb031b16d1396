"""The six post-processing candidates of the twenty-first session (MODEL_CARD.md, "Closing the mask,
or trimming its bright rim"), scored on the kept T1 folds against 1.4.2's cut.

    .venv/bin/python models/training-results/postcut/postcut.py /tmp/cases.pt.npz > models/training-results/postcut/postcut.log
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "models")]

import train_default as td  # noqa: E402

from dicom_node.imaging.postprocess import _morph3d, clean_mask, trim_bright_rim  # noqa: E402
from dicom_node.imaging.thresholding import brain_voxels, smooth_probabilities  # noqa: E402
from dicom_node.training.data import load_cases, oriented_stack  # noqa: E402
from dicom_node.training.evaluate import _axis_names, load_probabilities  # noqa: E402
from dicom_node.training.metrics import Counts, confusion, scores  # noqa: E402

KEPT = ROOT / "models/training-results/1.4.0-kept"
BASE = td.VARIANTS["smooth1mm/0.55"]


def close(mask: np.ndarray, spacing, radius: float) -> np.ndarray:
    return _morph3d(_morph3d(mask, spacing, radius, erode=False), spacing, radius, erode=True) | mask


def bright(mask: np.ndarray, image: np.ndarray, smoothed: np.ndarray, spacing, k: float, below: float | None) -> np.ndarray:
    return trim_bright_rim(mask, image, spacing, k, keep=None if below is None else smoothed >= below)  # the node's step since 1.4.6


CANDIDATES = {
    "close2mm": lambda m, img, sm, sp: close(m, sp, 2.0),
    "close3mm": lambda m, img, sm, sp: close(m, sp, 3.0),
    "bright2": lambda m, img, sm, sp: bright(m, img, sm, sp, 2.0, None),
    "bright1.5": lambda m, img, sm, sp: bright(m, img, sm, sp, 1.5, None),
    "bright1.3/p0.8": lambda m, img, sm, sp: bright(m, img, sm, sp, 1.3, 0.8),
    "bright1.5/p0.8": lambda m, img, sm, sp: bright(m, img, sm, sp, 1.5, 0.8),
}


def rates(counts: Counts) -> dict[str, float]:
    return {k: v for k, v in scores(counts).items() if k in ("dice", "precision", "recall")}


def main(pack: str) -> None:
    cases = {c.name: c for c in load_cases(pack)}
    folds = sorted(p.name[4:-len("-probabilities.npz")] for p in KEPT.glob("loo-*-probabilities.npz"))
    table: dict[str, dict[str, Counts]] = {}
    for head in folds:
        case = cases[head]
        kept = load_probabilities(KEPT / f"loo-{head}-probabilities.npz")
        voxel_ml = float(np.prod(case.spacing)) / 1000.0
        sums = {k: Counts(0, 0, 0, 0) for k in ("1.4.2", *CANDIDATES)}
        for axis, name in _axis_names(case).items():
            prob = kept[name]
            ref, in_plane = oriented_stack(case.mask, case.spacing, axis)
            image, _ = oriented_stack(case.volume, case.spacing, axis)
            spacing = (float(case.spacing[axis]), *in_plane)
            base = clean_mask(brain_voxels(prob, BASE, case.echo_planar, case.contrast_enhanced, spacing), voxel_ml).mask
            smoothed = smooth_probabilities(prob, spacing, BASE.smooth_mm)
            sums["1.4.2"] += confusion(base, ref)
            for key, step in CANDIDATES.items():
                sums[key] += confusion(clean_mask(step(base, image, smoothed, spacing), voxel_ml).mask, ref)
        table[head] = sums
        print(head + ": " + "  ".join(f"{k} {rates(c)['dice']:.4f}" for k, c in sums.items()), flush=True)
    summary = {}
    for key in ("1.4.2", *CANDIDATES):
        pool = rates(sum((table[h][key] for h in folds), Counts(0, 0, 0, 0)))
        drops = {h: rates(table[h][key])["dice"] - rates(table[h]["1.4.2"])["dice"] for h in folds}
        summary[key] = {**pool, "worst_fold_change": min(drops.values()), "per_head": {h: rates(table[h][key]) for h in folds}}
        print(f"pooled {key}: dice {pool['dice']:.4f} precision {pool['precision']:.4f} recall {pool['recall']:.4f}  worst fold {min(drops.values()):+.4f}")
    (Path(__file__).with_name("postcut.json")).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
