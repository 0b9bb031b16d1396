"""The grid-step rule of the twenty-second session (MODEL_CARD.md), on the nine folds of recipe
1.4.0 trained on the lent GPU: each fold's network scored at every 3rd grid slice (``loo-HEAD.json``)
and at every 4th and 5th (``step4/``, ``step5/``), at 1.4.2's cut (T1 smoothed 1 mm then 0.55, EPI 0.4).

    .venv/bin/python models/training-results/1.4.0-gpu/compare_steps.py
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # models/, for train_default
import train_default as td  # noqa: E402

EPI = "sdcflows-epi"
RULE = {"t1_pooled": 0.001, "fold": 0.003, "end": 0.005, "rates": 0.95}  # the most each may lose; the least precision and recall may be


def folds(folder: Path) -> dict[str, dict]:
    return {h: json.loads((folder / f"loo-{h}.json").read_text()) for h in td.HEADS}


def cuts(names: Iterable[str]) -> dict[str, str]:
    """1.4.2's cut for each head: T1 smoothed 1 mm then 0.55, the EPI fold at 0.4."""
    return {h: "0.4" if h == EPI else "smooth1mm/0.55" for h in names}


def main() -> None:
    by_step = {3: folds(HERE), 4: folds(HERE / "step4"), 5: folds(HERE / "step5")}
    print("| grid step | " + " | ".join(td.HEADS) + " | T1 pooled | nine pooled (precision / recall) | end-slice |")
    print("|---" * (len(td.HEADS) + 4) + "|")
    summary = {}
    for step, fs in by_step.items():
        t1 = {h: f for h, f in fs.items() if h != EPI}
        nine, eight = td.pooled(fs, cuts(fs)), td.pooled(t1, cuts(t1))
        dice = {h: fs[h]["thresholds"][c]["dice"] for h, c in cuts(fs).items()}
        summary[step] = (dice, eight["dice"], nine)
        print(f"| {step} | " + " | ".join(f"{dice[h]:.4f}" for h in td.HEADS)
              + f" | {eight['dice']:.4f} | {nine['dice']:.4f} ({nine['precision']:.4f} / {nine['recall']:.4f}) | {nine['end_dice']:.4f} |")
    dice3, t1_3, nine3 = summary[3]
    for step in (4, 5):
        dice, t1, nine = summary[step]
        worst = min(dice, key=lambda h: dice[h] - dice3[h])
        checks = {
            f"T1 pooled {t1 - t1_3:+.4f} (at most -{RULE['t1_pooled']})": t1 - t1_3 >= -RULE["t1_pooled"],
            f"worst fold {worst} {dice[worst] - dice3[worst]:+.4f} (at most -{RULE['fold']})": dice[worst] - dice3[worst] >= -RULE["fold"],
            f"end-slice {nine['end_dice'] - nine3['end_dice']:+.4f} (at most -{RULE['end']})": nine["end_dice"] - nine3["end_dice"] >= -RULE["end"],
            f"precision {nine['precision']:.4f}, recall {nine['recall']:.4f} (at least {RULE['rates']})": min(nine["precision"], nine["recall"]) >= RULE["rates"],
        }
        verdict = "passes" if all(checks.values()) else "fails"
        print(f"step {step} {verdict}: " + "; ".join(f"{k} {'ok' if ok else 'FAILS'}" for k, ok in checks.items()))


if __name__ == "__main__":
    main()
