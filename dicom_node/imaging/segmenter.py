"""Brain segmentation of a whole series with a loaded DeepLabv3+.

Load once per process with :func:`get_segmenter` (cached by weights file and device), then call
:meth:`Segmenter.segment` per series. On CUDA the whole series is moved to the GPU once, inference
runs in fp16 autocast and only the final bool mask comes back.

On the CPU the network is exported to ONNX in memory when it loads (0.6 s) and run by ONNX
Runtime: 0.83 s for the 192 slices of the Siemens series on this project's 2-core CPU, against
1.34 s for a frozen TorchScript graph and 2.7 s eager, with the same logits to 1e-3
(``bench/bench_segment.py``). If the export fails the frozen graph is used, and if freezing fails
too the eager network; :attr:`Segmenter.runtime` says which runs.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dicom_node.imaging.context import context_offset, network_input
from dicom_node.imaging.loading import MRSeries, position_key, volume_directions
from dicom_node.imaging.mirror import mirrored
from dicom_node.imaging.model_info import ModelInfo
from dicom_node.imaging.network import NoModelWeightsError, brain_logit, load_weights, resolve_device
from dicom_node.imaging.normalize import Letterbox, intensity_window, normalize
from dicom_node.imaging.postprocess import MIN_BRAIN_ML
from dicom_node.imaging.thresholding import cut_and_clean
from dicom_node.imaging.triplanar import Direction, triplanar_probabilities

DEFAULT_BATCH_CPU = 8
DEFAULT_BATCH_CUDA = 64

log = logging.getLogger(__name__)


Runner = Callable[[torch.Tensor], torch.Tensor]  # (n, channels, size, size) float32 -> logits


class OnnxRunner:
    """The network exported to ONNX (in memory) and run by ONNX Runtime on every CPU core."""

    def __init__(self, network: nn.Module, input_size: int, in_channels: int = 1, threads: int | None = None) -> None:
        import onnxruntime as ort

        example = torch.zeros(1, in_channels, input_size, input_size)
        graph = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated; the new one needs onnxscript
            torch.onnx.export(
                copy.deepcopy(network).eval(), (example,), graph, dynamo=False, opset_version=17,  # type: ignore[arg-type]
                input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        # Idle worker threads sleep instead of spinning, so the listener next to them keeps its
        # CPU between series; it costs about 2 % of network time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"image": batch.float().contiguous().numpy()})
        return torch.from_numpy(logits)


def cpu_runner(network: nn.Module, batch_size: int, input_size: int, in_channels: int = 1) -> tuple[Runner, str]:
    """The fastest way to run ``network`` on this CPU that works here, and its name."""
    try:
        return OnnxRunner(network, input_size, in_channels), "onnxruntime"
    except Exception as exc:  # no onnxruntime, or an operator the exporter cannot write
        log.warning("ONNX Runtime unavailable for the network (%s): trying a frozen graph", type(exc).__name__)
    frozen = freeze_for_cpu(network, batch_size, input_size, in_channels)
    return frozen, "torchscript" if frozen is not network else "eager"


def freeze_for_cpu(network: nn.Module, batch_size: int, input_size: int, in_channels: int = 1) -> nn.Module:
    """The eval-mode ``network`` traced and frozen for CPU inference, or itself when that fails.

    The input is always ``(n, in_channels, input_size, input_size)`` (letterboxed), so a trace
    is exact for any batch size ``n``.
    """
    example = torch.zeros(batch_size, in_channels, input_size, input_size)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # TorchScript is deprecated in favour of torch.compile, which needs minutes to start
            traced = torch.jit.trace(copy.deepcopy(network).eval(), example)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception as exc:  # an architecture TorchScript cannot trace still runs eagerly
        log.warning("running the network eagerly: freezing it failed (%s)", type(exc).__name__)
        return network


@dataclass
class BrainMask:
    """A series' brain mask (bool, same shape and order as ``series.pixels``) and what was noted."""

    mask: np.ndarray
    volume_ml: float | None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    mean_probability: float | None = None  # the network's mean probability inside the mask

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask.any())


class Segmenter:
    """A DeepLabv3+ brain segmenter bound to one device."""

    def __init__(self, network: nn.Module, info: ModelInfo, device: str | torch.device = "auto", batch_size: int | None = None) -> None:
        self.device = resolve_device(device)
        self.info = info
        self.network = network.to(self.device).eval()
        cuda = self.device.type == "cuda"
        self.batch_size = batch_size or (DEFAULT_BATCH_CUDA if cuda else DEFAULT_BATCH_CPU)
        self.runner: Runner = self.network
        self.runtime = "cuda"
        if not cuda:
            torch.set_num_threads(os.cpu_count() or 1)
            self.runner, self.runtime = cpu_runner(self.network, self.batch_size, info.arch.input_size, info.arch.in_channels)

    @classmethod
    def from_weights(cls, path: Path | str, device: str | torch.device = "auto", batch_size: int | None = None) -> Segmenter:
        resolved = resolve_device(device)
        network, info = load_weights(path, resolved)
        return cls(network, info, resolved, batch_size)

    def predict(self, pixels: np.ndarray, pixel_spacing: tuple[float, float] | None = None, slice_spacing: float | None = None) -> np.ndarray:
        """Raw brain mask (bool ``(n, rows, cols)``) at the model's T1 threshold alone: no EPI
        threshold, no 3D steps (``segment`` has them); the bench's raw pass."""
        return self.predict_probabilities(pixels, pixel_spacing, slice_spacing) >= self.info.inference.threshold

    def predict_probabilities(
        self, pixels: np.ndarray, pixel_spacing: tuple[float, float] | None = None, slice_spacing: float | None = None,
        directions: Sequence[Direction] | None = None,
    ) -> np.ndarray:
        """The brain probability per pixel (float32 ``(n, rows, cols)``), see :func:`brain_probabilities`."""
        return brain_probabilities(self._run, pixels, pixel_spacing, slice_spacing, self.info, self.batch_size, self.device, directions)

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            return self.runner(batch)

    def segment(self, series: MRSeries, min_brain_ml: float = MIN_BRAIN_ML) -> BrainMask:
        """Predict, keep the plausible brain, and measure its volume and the network's confidence."""
        started = time.perf_counter()
        pixel_spacing, slice_spacing = series.slices[0].pixel_spacing, volume_slice_spacing(series)
        probs = self.predict_probabilities(series.pixels, pixel_spacing, slice_spacing, volume_directions(series))
        voxel_ml = series.voxel_volume_ml()
        spacing = (slice_spacing, pixel_spacing[0], pixel_spacing[1]) if slice_spacing and pixel_spacing else None
        cleaned = cut_and_clean(probs, series.pixels, self.info.inference, series.echo_planar, series.contrast_enhanced, spacing, voxel_ml, min_brain_ml)
        volume = None
        if voxel_ml is not None:
            repeats = series.n_slices / max(series.n_positions, 1)  # time series: mean over time points
            volume = float(cleaned.mask.sum()) * voxel_ml / repeats
        notes = list(cleaned.notes)
        if voxel_ml is None:
            notes.append("Brain volume unknown: the series lacks pixel spacing or slice positions.")
        confidence = mean_probability(probs, cleaned.mask)
        return BrainMask(cleaned.mask, volume, notes, time.perf_counter() - started, confidence)


@torch.inference_mode()
def brain_probabilities(
    run: Runner,
    pixels: np.ndarray,
    pixel_spacing: tuple[float, float] | None,
    slice_spacing: float | None,
    info: ModelInfo,
    batch_size: int = DEFAULT_BATCH_CPU,
    device: torch.device | str = "cpu",
    directions: Sequence[Direction] | None = None,
) -> np.ndarray:
    """The brain probability per pixel (float32 ``(n, rows, cols)``) of ``run`` on a stack.

    With the model's three-view inference and a ``slice_spacing`` (the stack is one regular
    volume) the three orthogonal views are fused, each head up when ``directions`` (patient
    directions of the stack's three axes) are known; otherwise each slice is run as acquired. The
    node and the model's evaluation both come here, so a model card's numbers are the node's.
    """
    if pixels.ndim != 3 or pixels.shape[0] == 0:
        raise ValueError(f"pixels must be a non-empty (slices, rows, cols) stack, not shape {pixels.shape}.")
    volume = normalize(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(device), intensity_window(pixels))
    spec, arch = info.inference, info.arch
    if spec.mirror:
        run = mirrored(run)
    if slice_spacing and spec.fuses(pixels.shape[0], slice_spacing):
        row_mm, col_mm = pixel_spacing or (1.0, 1.0)
        return triplanar_probabilities(
            run, volume, (slice_spacing, row_mm, col_mm), spec.grid_size, arch.input_size, spec.step, batch_size, directions, arch.in_channels, arch.context_mm
        ).float().cpu().numpy()
    box = Letterbox.fit(pixels.shape[1], pixels.shape[2], arch.input_size, pixel_spacing)
    offset = context_offset(slice_spacing, arch.context_mm)  # a stack without a regular spacing: each slice its own context
    probs = torch.empty(pixels.shape, dtype=torch.float32, device=volume.device)
    for start in range(0, pixels.shape[0], batch_size):
        out = run(network_input(volume, np.arange(start, min(start + batch_size, pixels.shape[0])), box, arch.in_channels, offset))
        probs[start : start + batch_size] = torch.sigmoid(box.from_network(brain_logit(out).float().to(volume.device)))
    return probs.cpu().numpy()


def volume_slice_spacing(series: MRSeries) -> float | None:
    """The slice spacing when the series is one regular volume (one image per position, evenly
    spaced, pixel spacing known): only then are its reformatted views real anatomy. Else None."""
    keys = [position_key(s) for s in series.slices]
    if series.slices[0].pixel_spacing is None or any(k is None for k in keys) or len(set(keys)) != len(keys) or len(keys) < 2:
        return None
    steps = np.diff(np.asarray(keys, dtype=np.float64))
    spacing = float(np.median(np.abs(steps)))
    if spacing <= 0 or np.any(np.sign(steps) != np.sign(steps[0])) or np.max(np.abs(np.abs(steps) - spacing)) > 0.1 * spacing:
        return None
    return spacing


def mean_probability(probs: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean brain probability of the network inside ``mask``; None for an empty mask.

    A brain the network is sure of sits near 1 inside its mask; on anatomy it has not seen (an
    abdomen, a phantom) its mask is made of voxels that barely passed the threshold.
    """
    inside = probs[mask]
    if inside.size == 0:
        return None
    return float(np.mean(inside, dtype=np.float64))


@functools.lru_cache(maxsize=4)
def _cached_segmenter(path: str, mtime_ns: int, size: int, device: str) -> Segmenter:
    return Segmenter.from_weights(path, device)


def get_segmenter(weights_path: Path | str, device: str | torch.device = "auto") -> Segmenter:
    """The process-wide segmenter for these weights and device (reloaded if the file changes).

    Raises:
        NoModelWeightsError: no file at ``weights_path``.
        ModelWeightsError: the file is corrupt or does not fit its architecture.
    """
    path = Path(weights_path).expanduser().resolve()
    if not path.is_file():
        raise NoModelWeightsError(
            f"No model weights at {path}; train one with `dicom-node train` "
            "or set DICOM_NODE_MODEL_WEIGHTS to a weights file."
        )
    stat = path.stat()
    return _cached_segmenter(str(path), stat.st_mtime_ns, stat.st_size, str(resolve_device(device)))
