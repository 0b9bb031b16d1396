# usage: int8_probe.py  (prints network seconds and mask agreement; writes nothing)
"""Experiment: would an int8 network pay for a second look (two networks, or the mirror)? The
shipped network exported to ONNX as the node exports it, quantized statically (QDQ, per-channel
int8 weights, uint8 activations) on the network inputs of the Siemens series, then timed against
the float network on the same batches, and both run through the node's whole segment step on the
Siemens and Philips series: Dice between the two masks says how far int8 moves the calibrated cut."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import copy
import os
import tempfile
import time
import warnings

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from dicom_node.imaging.loading import MRSeries, load_series, scan_folder
from dicom_node.imaging.segmenter import get_segmenter
from dicom_node.models.shipped import default_weights_path

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "dicom"


def series_of(name: str) -> MRSeries:
    (paths,) = scan_folder(DATA / name).series.values()
    return load_series(paths)


class Batches(CalibrationDataReader):
    def __init__(self, batches: list[np.ndarray]) -> None:
        self.left = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.left, None)
        return None if batch is None else {"image": batch}


class Session:
    """An ONNX Runtime session as the segmenter's runner."""

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"image": batch.float().contiguous().numpy()})
        return torch.from_numpy(logits)


torch.set_num_threads(2)
work = Path(tempfile.mkdtemp(prefix="int8-"))
segmenter = get_segmenter(default_weights_path(), "cpu")
siemens, philips = series_of("sag-t1-siemens-skyra"), series_of("sag-t1-philips-ingenia")
batches: list[np.ndarray] = []
node_runner = segmenter.runner
segmenter.runner = lambda batch: (batches.append(batch.numpy().copy()), node_runner(batch))[1]
segmenter.segment(siemens)
size = segmenter.info.arch.input_size
with warnings.catch_warnings(), torch.no_grad():
    warnings.simplefilter("ignore")
    torch.onnx.export(copy.deepcopy(segmenter.network).eval(), (torch.zeros(1, 1, size, size),), str(work / "fp32.onnx"),
                      dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
os.chdir(work)  # the quantizer leaves scratch files in the working folder
quant_pre_process(str(work / "fp32.onnx"), str(work / "pre.onnx"), skip_symbolic_shape=True)
quantize_static(str(work / "pre.onnx"), str(work / "int8.onnx"), Batches(batches[::2]), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
runners = {name: Session(work / f"{name}.onnx") for name in ("fp32", "int8")}
for round_ in range(3):
    for name, runner in runners.items():
        started = time.perf_counter()
        for batch in batches:
            runner(torch.from_numpy(batch))
        print(f"round {round_ + 1}: {name} network {time.perf_counter() - started:.3f} s for {sum(len(b) for b in batches)} slices")
for label, series in (("siemens", siemens), ("philips", philips)):
    masks = {}
    for name, runner in runners.items():
        segmenter.runner = runner
        masks[name] = segmenter.segment(series).mask
    a, b = masks["fp32"], masks["int8"]
    print(f"{label}: Dice int8 against fp32 {2 * (a & b).sum() / (a.sum() + b.sum()):.4f}, volume ratio {b.sum() / a.sum():.4f}")
