"""A context fold's network scored again with a limit on how far apart its neighbours may be.

    .venv/bin/python models/training-results/context/neighbour_limit.py HEAD loo-HEAD.pt heads.npz [LIMIT_MM ...]

The context recipe shows the network neighbours 3 mm away, at least one slice: in a stack of
6.5 mm slices (radiomics-brain1's axial view) they are 6.5 mm away, a distance no other head's
stacks give in training. With a limit, a stack whose slices lie farther apart than LIMIT_MM shows
each slice alone (as 10 % of the training inputs do). Limit 0: every stack alone (no context).
Writes ``neighbour-limit-HEAD.json`` beside this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "models"))

from train_default import INFERENCE, NAME, VARIANTS, VERSION, pooled_rows  # noqa: E402

import dicom_node.imaging.segmenter as segmenter_module  # noqa: E402
import dicom_node.imaging.triplanar as triplanar_module  # noqa: E402
from dicom_node.imaging import context  # noqa: E402
from dicom_node.imaging.model_info import ModelInfo  # noqa: E402
from dicom_node.imaging.network import load_weights  # noqa: E402
from dicom_node.training.data import load_cases  # noqa: E402
from dicom_node.training.evaluate import evaluate_case  # noqa: E402
from dicom_node.training.metrics import overall  # noqa: E402

CUTS = (0.5, 0.55, 0.6, 0.65, 0.7)


def limited(limit_mm: float | None):  # type: ignore[no-untyped-def]
    def offset(spacing_mm: float | None, context_mm: float) -> int:
        if limit_mm is not None and (limit_mm == 0 or (spacing_mm or 0) > limit_mm):
            return 0
        return context.context_offset(spacing_mm, context_mm)

    return offset


def main(head: str, weights: Path, pack: Path, limits: list[float | None]) -> None:
    torch.set_num_threads(2)
    (case,) = [c for c in load_cases(pack) if c.name == head]
    network, info = load_weights(weights)
    model = ModelInfo(NAME, VERSION, info.arch, inference=INFERENCE)
    variants = {k: v for k, v in VARIANTS.items() if k.startswith("smooth1mm")}
    out = {}
    for limit in limits:
        segmenter_module.context_offset = triplanar_module.context_offset = limited(limit)  # type: ignore[attr-defined]
        scored = evaluate_case(network, model, case, axes="all", thresholds=CUTS, variants=variants)
        cuts = pooled_rows(scored, (*(f"{t:g}" for t in CUTS), *variants))
        plain = overall({k: v for k, v in scored.items() if "@" not in k})
        key = "as trained" if limit is None else f"limit {limit:g} mm"
        out[key] = {"0.6": plain, **cuts}
        best = max(cuts, key=lambda k: cuts[k]["dice"])
        c = cuts["smooth1mm/0.55"]
        print(f"{key}: smooth1mm/0.55 {c['dice']:.4f} (precision {c['precision']:.3f}, recall {c['recall']:.3f}, end {c['end_dice']:.3f}), "
              f"0.6 {plain['dice']:.4f}, best {best} {cuts[best]['dice']:.4f}, AP {plain['ap']:.4f}", flush=True)
    (Path(__file__).parent / f"neighbour-limit-{head}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), [None, *(float(a) for a in sys.argv[4:])])
