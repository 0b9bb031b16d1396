# usage: pair_fold.py HEAD A.pt B.pt [THREADS [CASES.npz]]  (writes loo-HEAD-pair.json and loo-HEAD-pair-step6.json beside this script)
"""Experiment: two networks of the same fold, trained in separate runs, averaged (the mean of their
logits for every slice), scored on the held-out head as a fold is (``train_default.score_fold``):
at the node's every third grid slice, which costs two network passes, and at every sixth, which
costs what one network costs at every third."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # models/, for train_default
import train_default as td

held, a_path, b_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
heads, _, _, _ = td.load_heads(Path(sys.argv[5]) if len(sys.argv) > 5 else None)
(a, a_info), (b, b_info) = td.load_weights(a_path), td.load_weights(b_path)
for info, path in ((a_info, a_path), (b_info, b_path)):
    if not info.name.startswith(f"{td.NAME}-loo-{held}") or info.arch != a_info.arch:
        raise SystemExit(f"{path}: {info.name}, not a network of the fold that held out {held} with the same arch as {a_path}")
pair = td.NetworkMean([a, b]).eval()
here = Path(__file__).resolve().parent
for suffix, step in (("pair", 3), ("pair-step6", 6)):
    spec = replace(td.INFERENCE, step=step)
    variants = {k: replace(v, step=step) for k, v in td.VARIANTS.items()}
    scored = td.score_fold(pair, a_info.arch, spec, heads[held], variants)
    scored["networks"] = [f"{a_path.parent.name}/{a_path.name}", f"{b_path.parent.name}/{b_path.name}"]
    scored["step"] = step
    (here / f"loo-{held}-{suffix}.json").write_text(json.dumps(scored, indent=1))
    print(f"wrote loo-{held}-{suffix}.json", flush=True)
