"""The context folds against every earlier run of the same fold of the 1-channel recipe 1.4.0.

    .venv/bin/python models/training-results/context/compare.py [HEAD ...]

Each row is one training run, scored as the node runs it (three views, every third grid slice):
at 1.4.2's cut (T1 smoothed 1 mm, then 0.55), at 0.55 and 0.6 plain, at the fold's best cut of
the calibration grid, and in one view at 0.5. AP (average precision) does not depend on a cut.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # models/, for train_default
import train_default as td

RESULTS = Path(__file__).resolve().parents[1]
RUNS = {  # the 1-channel recipe 1.4.0's runs of a fold, oldest first
    "first run": RESULTS / "1.4.0",
    "rerun": RESULTS / "1.4.0-rerun",
    "third run": RESULTS / "mirror",
    "context 3 mm": RESULTS / "context",
}


def row(name: str, fold: dict) -> str:
    cuts = fold["thresholds"]
    shipped = cuts.get("smooth1mm/0.55")
    best_key = max(cuts, key=lambda k: cuts[k]["dice"])
    cell = f"{shipped['dice']:.4f} ({shipped['precision']:.3f} / {shipped['recall']:.3f}, end {shipped['end_dice']:.3f})" if shipped else "–"
    one = fold["one_view"]["overall"]
    def dice(key: str) -> str:
        return f"{cuts[key]['dice']:.4f}" if key in cuts else "–"

    return (f"| {name} | {cell} | {dice('0.55')} | {dice('0.6')} | {best_key}: {cuts[best_key]['dice']:.4f} | "
            f"{cuts['0.6']['ap']:.4f} | {one['dice']:.4f} (end {one['end_dice']:.3f}) |")


def main(heads: list[str]) -> None:
    print("| fold, run | 1.4.2's cut: Dice (precision / recall, end-slice) | 0.55 | 0.6 | best cut | AP | one view at 0.5 |")
    print("|---|---|---|---|---|---|---|")
    for head in heads:
        for run, folder in RUNS.items():
            path = folder / f"loo-{head}.json"
            if path.is_file():
                fold = json.loads(path.read_text())
                if (folder / f"variants-{head}.json").is_file():  # the rerun's first folds had their 3D steps scored after the run
                    td.merge_variants(head, fold, folder / f"variants-{head}.json")
                print(row(f"{head}, {run}", fold))


if __name__ == "__main__":
    main(sys.argv[1:] or ["radiomics-brain1", "pycortex-s1"])
