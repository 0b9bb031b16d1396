"""Every network of a fold of recipe 1.4.0 side by side: the first run, the rerun, the third run,
the context networks, the moving-average pilot's run with its average, seed 0 and seed 1 runs,
two runs' networks averaged, the later recipes' pilots, and the GPU run at coarser grid steps.

    .venv/bin/python models/training-results/compare_runs.py [HEAD ...]

Each row is one network, scored as the node runs it (three views, every third grid slice): at
1.4.2's cut (T1 smoothed 1 mm, then 0.55), at 0.55 and 0.6 plain, at the fold's best cut of the
calibration grid, and in one view at 0.5. AP (average precision) does not depend on a cut. Below
them, each network pooled over the heads asked for, at 1.4.2's cut, where it holds them all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/, for train_default
import train_default as td

RESULTS = Path(__file__).resolve().parent
RUNS = {  # a network of a fold: its folder and the suffix of its loo-HEAD{suffix}.json, oldest first
    "first run": (RESULTS / "1.4.0", ""),
    "rerun": (RESULTS / "1.4.0-rerun", ""),
    "third run": (RESULTS / "mirror", ""),
    "context 3 mm": (RESULTS / "context", ""),
    "EMA pilot's run, final weights": (RESULTS / "ema", ""),
    "EMA pilot's run, moving average 0.999": (RESULTS / "ema", "-ema"),
    "seed 0 run (twelfth session)": (RESULTS / "ensemble", "-seed0"),
    "seed 1 run": (RESULTS / "ensemble", "-seed1"),
    "seed 0 and seed 1 averaged, every 3rd grid slice (two passes; radiomics-brain1's seed 0: the EMA pilot's final weights)": (RESULTS / "ensemble", "-pair"),
    "the same two, every 6th grid slice (one pass's cost)": (RESULTS / "ensemble", "-pair-step6"),
    "recipe 1.6.0 (48 epochs in bfloat16), seed 0": (RESULTS / "1.6.0", ""),
    "recipe 1.7.0 (6 mm axial copies of the T1 heads trained on), seed 0": (RESULTS / "1.7.0", ""),
    "recipe 1.8.0 (1.6.0 with the copies at a quarter weight), seed 0": (RESULTS / "1.8.0", ""),
    "recipe 1.4.0 again, its probabilities kept (seventeenth session), seed 0": (RESULTS / "1.4.0-kept", ""),
    "recipe 1.9.0 (a contrast agent's bright rim drawn on 30 % of the slices), seed 0": (RESULTS / "1.9.0", ""),
    "recipe 1.10.0 (the small MobileNetV3 encoder), seed 0": (RESULTS / "1.10.0", ""),
    "recipe 1.11.0 (the large encoder at 0.75 width, 64 decoder channels), seed 0": (RESULTS / "1.11.0", ""),
    "recipe 1.4.0 on the lent GPU, 5 minutes of training (twenty-second session), seed 0": (RESULTS / "1.4.0-gpu", ""),
    "the same network, every 4th grid slice": (RESULTS / "1.4.0-gpu" / "step4", ""),
    "the same network, every 5th grid slice": (RESULTS / "1.4.0-gpu" / "step5", ""),
    "recipe 1.12.0 (the large encoder at 0.75 width, 128 decoder channels) on the GPU, 5 minutes, seed 0": (RESULTS / "1.12.0", ""),
}
SHIPPED_CUT = "smooth1mm/0.55"


def row(name: str, fold: dict) -> str:
    cuts = fold["thresholds"]
    shipped = cuts.get(SHIPPED_CUT)
    best_key = max(cuts, key=lambda k: cuts[k]["dice"])
    cell = f"{shipped['dice']:.4f} ({shipped['precision']:.3f} / {shipped['recall']:.3f}, end {shipped['end_dice']:.3f})" if shipped else "–"
    one = fold["one_view"]["overall"] if "one_view" in fold else None  # a grid step's rows have none: one view has no step
    one_cell = f"{one['dice']:.4f} (end {one['end_dice']:.3f})" if one else "–"

    def dice(key: str) -> str:
        return f"{cuts[key]['dice']:.4f}" if key in cuts else "–"

    return (f"| {name} | {cell} | {dice('0.55')} | {dice('0.6')} | {best_key}: {cuts[best_key]['dice']:.4f} | "
            f"{cuts['0.6']['ap']:.4f} | {one_cell} |")


def read_fold(head: str, folder: Path, suffix: str) -> dict | None:
    path = folder / f"loo-{head}{suffix}.json"
    if not path.is_file():
        return None
    fold = json.loads(path.read_text())
    if (folder / f"variants-{head}.json").is_file():  # the rerun's first folds had their 3D steps scored after the run
        td.merge_variants(head, fold, folder / f"variants-{head}.json")
    return fold


def main(heads: list[str]) -> None:
    print("| fold, network | 1.4.2's cut: Dice (precision / recall, end-slice) | 0.55 | 0.6 | best cut | AP | one view at 0.5 |")
    print("|---|---|---|---|---|---|---|")
    folds = {run: {h: read_fold(h, folder, suffix) for h in heads} for run, (folder, suffix) in RUNS.items()}
    for head in heads:
        for run, by_head in folds.items():
            if by_head[head] is not None:
                print(row(f"{head}, {run}", by_head[head]))
    for run, by_head in folds.items():
        if all(f is not None and SHIPPED_CUT in f["thresholds"] for f in by_head.values()):
            p = td.pooled(by_head, dict.fromkeys(heads, SHIPPED_CUT))
            print(f"pooled over {', '.join(heads)}, {run}: Dice {p['dice']:.4f}, precision {p['precision']:.3f}, recall {p['recall']:.3f}, end-slice {p['end_dice']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["radiomics-brain1", "pycortex-s1"])
