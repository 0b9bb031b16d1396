"""The DeepLabv3+ network and its weights file.

A weights file is a ``torch.save`` dict that holds everything needed to rebuild the network::

    {"format": "dicom-node-weights/1", "state_dict": ..., "arch": {...}, "name": str,
     "version": str, "metrics": {str: float}, "card": {str: str}, "inference": {...}}

``inference`` (optional, :class:`InferenceSpec` as a dict) is how the node runs the network: the
views it fuses and the calibrated decision threshold.

A file may hold ``"state_dicts"`` (a list) in place of ``"state_dict"``: several networks of the
same ``arch``, run as one whose logits are their mean (:class:`NetworkMean`).

``arch`` is :class:`ArchSpec` as a dict. Files are read with ``weights_only=True``: a weights file
can never run code. ``ArchSpec``'s defaults are the recommended network: a MobileNetV3-Large
encoder (timm, random init) at 160x160 with 128 decoder channels, 1 input channel and 1 output
channel (the brain logit). On the 2-core CPU it runs ~70 slices/s, against ~8 for ResNet-18 at
256x256; a brain is a smooth object, and bilinear upsampling of the logits keeps its edge
sub-pixel at the slice's matrix.

"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from dicom_node.imaging.model_info import ArchSpec, InferenceSpec, ModelInfo
from dicom_node.receive.storage import atomic_file

WEIGHTS_FORMAT = "dicom-node-weights/1"
MAX_NETWORKS = 8  # in one file: each is a full pass per sampled slice


class ModelWeightsError(RuntimeError):
    """Weights are missing, unreadable or do not fit the network they describe."""


class NoModelWeightsError(ModelWeightsError):
    """No weights file exists where one was expected."""


def build_network(arch: ArchSpec) -> nn.Module:
    """A DeepLabV3Plus with random weights (never downloads pretrained encoder weights)."""
    return smp.DeepLabV3Plus(
        encoder_name=arch.encoder_name,
        encoder_weights=None,
        encoder_output_stride=arch.encoder_output_stride,
        decoder_channels=arch.decoder_channels,
        in_channels=arch.in_channels,
        classes=arch.classes,
    )


class NetworkMean(nn.Module):
    """Networks of one architecture run as one: the mean of their outputs (logits).

    Two runs of one recipe with different seeds err in different places, and their mean narrows
    the spread between runs (models/MODEL_CARD.md: above both on one held-out fold, between them
    on another). ``models/train_default.py join`` writes such a file with the grid step times the
    count of networks, so that two cost what one does.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not 1 <= len(members) <= MAX_NETWORKS:
            raise ValueError(f"a network mean takes 1 to {MAX_NETWORKS} networks, not {len(members)}.")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x)
        for member in self.members[1:]:
            out = out + member(x)
        return out / len(self.members)


def networks_of(network: nn.Module) -> list[nn.Module]:
    """The networks ``network`` averages (itself when it is one network)."""
    return list(network.members) if isinstance(network, NetworkMean) else [network]


def brain_logit(out: torch.Tensor) -> torch.Tensor:
    """The brain logit ``(n, 1, ...)`` from the network's output, whether it has 1 class (the
    logit) or 2 (background, brain)."""
    return out[:, :1] if out.shape[1] == 1 else out[:, 1:2] - out[:, :1]


def save_weights(
    path: Path | str,
    network: nn.Module,
    arch: ArchSpec,
    name: str,
    version: str,
    metrics: dict[str, float] | None = None,
    card: dict[str, str] | None = None,
    inference: InferenceSpec | None = None,
) -> Path:
    """Write a weights file, whole or not at all; a :class:`NetworkMean` of several networks
    is written as their ``state_dicts``."""
    target = Path(path)
    states = [{k: v.detach().cpu() for k, v in member.state_dict().items()} for member in networks_of(network)]
    payload = {
        "format": WEIGHTS_FORMAT,
        **({"state_dict": states[0]} if len(states) == 1 else {"state_dicts": states}),
        "arch": asdict(arch),
        "name": str(name),
        "version": str(version),
        "metrics": {str(k): float(v) for k, v in (metrics or {}).items()},
        "card": {str(k): str(v) for k, v in (card or {}).items()},
        "inference": asdict(inference or InferenceSpec()),
    }
    with atomic_file(target) as fh:
        torch.save(payload, fh)
    return target


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without a GPU is an error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"Device {name} was requested but torch sees no CUDA GPU; use --device cpu or auto.")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ValueError(f"Device must be cpu, cuda or auto, not {name!r}.")
    return torch.device(name)


def load_weights(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Rebuild the network from a weights file, in eval mode on ``device`` (a :class:`NetworkMean`
    when the file holds several).

    Raises:
        NoModelWeightsError: the file does not exist.
        ModelWeightsError: the file is not a readable dicom-node weights file, or its state dict
            does not fit the architecture it names.
    """
    source = Path(path)
    if not source.is_file():
        raise NoModelWeightsError(
            f"No model weights at {source}; train one with `dicom-node train` "
            "or set DICOM_NODE_MODEL_WEIGHTS to a weights file."
        )
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelWeightsError(f"Model weights file {source} is corrupt or not a torch file: {exc}") from exc
    if not isinstance(payload, dict):
        raise ModelWeightsError(f"Model weights file {source} does not hold a dict.")
    missing = [k for k in ("arch", "name", "version") if k not in payload]
    if "state_dict" not in payload and "state_dicts" not in payload:
        missing.insert(0, "state_dict")
    if missing:
        raise ModelWeightsError(f"Model weights file {source} lacks {', '.join(missing)}.")
    try:
        arch = ArchSpec.from_dict(dict(payload["arch"]))
    except (TypeError, ValueError) as exc:
        raise ModelWeightsError(f"Model weights file {source} has an invalid arch: {exc}") from exc
    states = payload["state_dicts"] if "state_dicts" in payload else [payload["state_dict"]]
    if not isinstance(states, list) or not 1 <= len(states) <= MAX_NETWORKS:
        raise ModelWeightsError(f"Model weights file {source} must hold 1 to {MAX_NETWORKS} state dicts.")
    networks = []
    for index, state in enumerate(states):
        network = build_network(arch)
        try:
            network.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
            which = f"network {index + 1} of {len(states)}" if len(states) > 1 else "its network"
            raise ModelWeightsError(
                f"Model weights file {source}: {which} does not fit a {arch.encoder_name} DeepLabV3Plus: {exc}"
            ) from exc
        networks.append(network)
    network = networks[0] if len(networks) == 1 else NetworkMean(networks)
    try:
        inference = InferenceSpec.from_dict(dict(payload.get("inference") or {}))
    except (TypeError, ValueError) as exc:
        raise ModelWeightsError(f"Model weights file {source} has an invalid inference: {exc}") from exc
    if inference.views == 3 and inference.grid_size > arch.input_size:
        raise ModelWeightsError(f"Model weights file {source} has an invalid inference: its grid of {inference.grid_size} is larger than the network input of {arch.input_size}.")
    metrics = {str(k): float(v) for k, v in dict(payload.get("metrics") or {}).items() if _is_number(v)}
    info = ModelInfo(
        name=str(payload["name"]),
        version=str(payload["version"]),
        arch=arch,
        metrics=metrics,
        card={str(k): str(v) for k, v in dict(payload.get("card") or {}).items()},
        inference=inference,
    )
    network.eval()
    return network.to(device), info


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))
