# usage: flip_tta.py HEAD loo-HEAD.pt [THREADS [CASES.npz]]  (writes tta-HEAD.json beside the checkpoint)
"""Experiment (not shipped): does a left-right flip at test time, or a denser step, help a fold's
held-out head? Scores a fold checkpoint the node's way at each inference, at the CALIBRATION grid."""

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import train_default as td

from dicom_node.imaging.model_info import ModelInfo
from dicom_node.training.evaluate import evaluate_case
from dicom_node.training.metrics import overall

held, ckpt = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
heads, _, _, _ = td.load_heads(Path(sys.argv[4]) if len(sys.argv) > 4 else None)  # the pack, or the data folders
net, info = td.load_weights(ckpt)
out = {}
for name, spec, model in [
    ("step3", td.INFERENCE, net),
    ("step3+flip", td.INFERENCE, td.EverySliceMirrored(net)),
    ("step6+flip", replace(td.INFERENCE, step=6), td.EverySliceMirrored(net)),
    ("step1", replace(td.INFERENCE, step=1), net),
]:
    t = time.perf_counter()
    scored = evaluate_case(
        model, ModelInfo(info.name, info.version, info.arch, inference=spec), heads[held], axes="all", thresholds=td.CALIBRATION
    )
    out[name] = {
        "overall": overall({k: v for k, v in scored.items() if "@" not in k}),
        "thresholds": td.by_threshold(scored),
        "seconds": time.perf_counter() - t,
    }
    print(
        held,
        name,
        {k: round(out[name]["thresholds"][k]["dice"], 4) for k in ("0.4", "0.5", "0.55", "0.6", "0.65", "0.7")},
        f"{out[name]['seconds']:.0f}s",
        flush=True,
    )
(ckpt.parent / f"tta-{held}.json").write_text(json.dumps(out, indent=1))
