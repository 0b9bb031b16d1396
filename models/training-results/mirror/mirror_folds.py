# usage: mirror_folds.py HEAD loo-HEAD.pt [THREADS [CASES.npz]]  (writes mirror-HEAD.json beside this script)
"""Experiment: does the mirror at test time (``InferenceSpec.mirror``) help a fold's held-out head on
top of the shipped cut (1.4.2: smoothed 1 mm, 0.55; EPI 0.4); does mirroring only the
brain-bearing slices (the node's way) score what mirroring every slice does; and how much of it
is left at every 4th or 5th grid slice, which costs less, or with every other slice mirrored
instead of run twice, which costs nothing?"""

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import train_default as td

from dicom_node.imaging.model_info import ModelInfo
from dicom_node.imaging.network import load_weights
from dicom_node.training.evaluate import evaluate_case
from dicom_node.training.metrics import overall


class MirrorAlternate(nn.Module):
    """Every other slice of each batch mirrored (and its logits flipped back): a second look at no
    extra cost, spread over neighbouring slices and the three views instead of one slice twice."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[1::2] = x[1::2].flip(-1)
        out = self.net(x)
        out[1::2] = out[1::2].flip(-1)
        return out


held, ckpt = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
heads, _, _, _ = td.load_heads(Path(sys.argv[4]) if len(sys.argv) > 4 else None)
net, info = td.load_weights(ckpt)
shipped = load_weights(td.WEIGHTS)[1].inference  # 1.4.2's cut
cuts = {f"smooth1mm/{t:g}": t for t in (0.5, 0.55, 0.6, 0.65)}
out = {"inference": str(shipped)}
for name, spec, model in [
    ("shipped", shipped, net),
    ("shipped+mirror", replace(shipped, mirror=True), net),
    ("shipped+mirror-every-slice", shipped, td.EverySliceMirrored(net)),
    ("step4+mirror", replace(shipped, mirror=True, step=4), net),
    ("step5+mirror", replace(shipped, mirror=True, step=5), net),
    ("mirror-alternate", shipped, MirrorAlternate(net)),
]:
    variants = {} if heads[held].echo_planar else {k: replace(spec, threshold=t) for k, t in cuts.items()}
    started = time.perf_counter()
    scored = evaluate_case(model, ModelInfo(info.name, info.version, info.arch, inference=spec), heads[held], axes="all", thresholds=td.CALIBRATION, variants=variants)
    out[name] = {
        "overall": overall({k: v for k, v in scored.items() if "@" not in k}),
        "thresholds": td.by_threshold(scored, variants),
        "seconds": time.perf_counter() - started,
    }
    row = out[name]["thresholds"]
    print(held, name, f"at the cut {out[name]['overall']['dice']:.4f}", {k: round(row[k]["dice"], 4) for k in ("0.5", "0.55", "0.6", *variants)}, f"{out[name]['seconds']:.0f}s", flush=True)
(Path(__file__).parent / f"mirror-{held}.json").write_text(json.dumps(out, indent=1))
