"""Mirror averaging at test time: a slice's logits are the mean of the network's on the slice and
on its left-right mirror (flipped back). Off in the shipped model; ``InferenceSpec.mirror`` turns it on.

One network's errors at the brain's edge are partly noise of its training run (a fold moves by up
to 0.014 Dice from run to run); the mirror is a second look at every slice that costs no training,
but a second pass through the network. Slices the network finds no brain in are not mirrored:
averaging could hardly make them brain at any threshold the node uses (the mirror would need a
probability above 0.97 where the slice itself says below 0.01). In a head's three fused views that
spares only about one slice in seven, and scores what mirroring every slice does
(models/MODEL_CARD.md, "Mirror at test time").
"""

from __future__ import annotations

import math

import torch

from dicom_node.imaging.network import brain_logit
from dicom_node.imaging.triplanar import Runner

MIRROR_MIN_PROBABILITY = 0.01  # a slice whose brain probability stays below this everywhere is not mirrored


def mirrored(run: Runner, min_probability: float = MIRROR_MIN_PROBABILITY) -> Runner:
    """``run`` with the logits of each slice that reaches ``min_probability`` somewhere averaged
    with those of its mirror (0 mirrors every slice)."""
    min_logit = math.log(min_probability / (1 - min_probability)) if min_probability > 0 else -math.inf

    def both(batch: torch.Tensor) -> torch.Tensor:
        out = run(batch)
        chosen = torch.nonzero(brain_logit(out).float().flatten(1).amax(1) >= min_logit).flatten()
        if chosen.numel():
            mirror = run(batch[chosen.to(batch.device)].flip(-1)).flip(-1).to(out)
            out = out.clone()
            out[chosen] = (out[chosen] + mirror) / 2
        return out

    return both
