"""The two enhancing-rim candidates of the twenty-third session (MODEL_CARD.md, "Trimming the
enhancing rim of contrast-enhanced series only"), scored on the kept probabilities of the
radiomics-brain1 fold under four networks, against 1.4.2's cut, by the node's own ``cut_and_clean``.
With ``--kept``, afterwards: the eight kept T1 folds of recipe 1.4.0 pooled, at 1.4.2's cut and
with the chosen step (which runs on the contrast-enhanced fold alone).

    .venv/bin/python models/training-results/contrast-rim/contrast_rim.py /tmp/cases.pt.npz > models/training-results/contrast-rim/contrast_rim.log
    .venv/bin/python models/training-results/contrast-rim/contrast_rim.py /tmp/cases.pt.npz --kept > models/training-results/contrast-rim/kept.log
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "models")]

import train_default as td  # noqa: E402

from dicom_node.imaging.thresholding import cut_and_clean  # noqa: E402
from dicom_node.training.data import Case, load_cases, oriented_stack  # noqa: E402
from dicom_node.training.evaluate import _axis_names, load_probabilities  # noqa: E402
from dicom_node.training.metrics import Counts, confusion, scores  # noqa: E402

HEAD = "radiomics-brain1"
NETWORKS = ("1.4.0-kept", "1.9.0", "1.10.0", "1.11.0")
BASE = td.VARIANTS["smooth1mm/0.55"]
CANDIDATES = {"1.4.2": BASE, "rim1.5": replace(BASE, contrast_rim=1.5), "rim1.3/p0.8": replace(BASE, contrast_rim=1.3, contrast_rim_below=0.8)}


def rates(counts: Counts) -> dict[str, float]:
    return {k: round(v, 5) for k, v in scores(counts).items() if k in ("dice", "precision", "recall")}


def head_counts(case: Case, kept: dict[str, np.ndarray], keys: Iterable[str]) -> dict[str, Counts]:
    """The voxel counts of ``case``'s three orientations pooled, cut from its ``kept`` probabilities
    by each of ``keys``' ``CANDIDATES`` as the node cuts them."""
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    sums = {k: Counts(0, 0, 0, 0) for k in keys}
    for axis, name in _axis_names(case).items():
        ref, in_plane = oriented_stack(case.mask, case.spacing, axis)
        image, _ = oriented_stack(case.volume, case.spacing, axis)
        spacing = (float(case.spacing[axis]), *in_plane)
        for key in sums:
            sums[key] += confusion(cut_and_clean(kept[name], image, CANDIDATES[key], case.echo_planar, case.contrast_enhanced, spacing, voxel_ml).mask, ref)
    return sums


def main(pack: str) -> None:
    case = {c.name: c for c in load_cases(pack)}[HEAD]
    assert case.contrast_enhanced, "the fold's head must carry the contrast flag"
    table: dict[str, dict[str, dict[str, float]]] = {}
    for network in NETWORKS:
        kept = load_probabilities(ROOT / "models/training-results" / network / f"loo-{HEAD}-probabilities.npz")
        table[network] = {k: rates(c) for k, c in head_counts(case, kept, CANDIDATES).items()}
        print(f"{network}: " + "  ".join(f"{k} {v['dice']:.4f} (P {v['precision']:.3f} R {v['recall']:.3f})" for k, v in table[network].items()), flush=True)
    verdict = {}
    for key in CANDIDATES:
        if key == "1.4.2":
            continue
        gains = [table[n][key]["dice"] - table[n]["1.4.2"]["dice"] for n in NETWORKS]
        qualifies = min(gains) > 0 and float(np.mean(gains)) >= 0.002
        verdict[key] = {"gains": gains, "mean_gain": float(np.mean(gains)), "qualifies": qualifies}
        print(f"{key}: gains " + ", ".join(f"{g:+.4f}" for g in gains) + f"  mean {np.mean(gains):+.4f}  qualifies {qualifies}")
    chosen = max((k for k in verdict if verdict[k]["qualifies"]), key=lambda k: verdict[k]["mean_gain"], default=None)
    print(f"chosen: {chosen}")
    Path(__file__).with_name("contrast_rim.json").write_text(json.dumps({"table": table, "verdict": verdict, "chosen": chosen}, indent=1))


def kept_folds(pack: str, chosen: str = "rim1.3/p0.8") -> None:
    """The eight kept T1 folds pooled, at 1.4.2's cut and with ``chosen`` (``kept.json``)."""
    cases = {c.name: c for c in load_cases(pack)}
    folder = ROOT / "models/training-results/1.4.0-kept"
    folds = sorted(p.name[4:-len("-probabilities.npz")] for p in folder.glob("loo-*-probabilities.npz"))
    table: dict[str, dict[str, Counts]] = {}
    for head in folds:
        case = cases[head]
        table[head] = head_counts(case, load_probabilities(folder / f"loo-{head}-probabilities.npz"), ("1.4.2", chosen))
        print(f"{head}{' (contrast-enhanced)' if case.contrast_enhanced else ''}: " + "  ".join(f"{k} {rates(c)['dice']:.4f}" for k, c in table[head].items()), flush=True)
    pooled = {k: rates(sum((table[h][k] for h in folds), Counts(0, 0, 0, 0))) for k in ("1.4.2", chosen)}
    for key, row in pooled.items():
        print(f"pooled {key}: dice {row['dice']:.4f} precision {row['precision']:.4f} recall {row['recall']:.4f}  mean of heads {np.mean([rates(table[h][key])['dice'] for h in folds]):.4f}  lowest {min(rates(table[h][key])['dice'] for h in folds):.4f}")
    Path(__file__).with_name("kept.json").write_text(json.dumps({"pooled": pooled, "per_head": {h: {k: rates(c) for k, c in t.items()} for h, t in table.items()}}, indent=1))


if __name__ == "__main__":
    kept_folds(sys.argv[1]) if "--kept" in sys.argv[2:] else main(sys.argv[1])
