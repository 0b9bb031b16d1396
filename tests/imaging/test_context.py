"""Through-plane context: a network of 3 input channels sees each slice between its neighbours,
at inference (the node's path, ONNX Runtime on the CPU) as in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicom_node.imaging.context import context_indices, context_offset, network_input
from dicom_node.imaging.model_info import ArchSpec, InferenceSpec
from dicom_node.imaging.network import ModelWeightsError, build_network, load_weights, save_weights
from dicom_node.imaging.normalize import Letterbox
from dicom_node.imaging.segmenter import Segmenter, brain_probabilities
from dicom_node.training.data import case_slices, dicom_case


def test_neighbours_lie_context_mm_away_and_at_least_one_slice() -> None:
    assert context_offset(1.0, 3.0) == 3  # a 1 mm stack: three slices either side
    assert context_offset(0.86, 3.0) == 3
    assert context_offset(6.5, 3.0) == 1  # thick slices: the next slice, not the slice itself
    assert context_offset(None, 3.0) == 0  # a time series: each slice its own context
    assert context_offset(1.0, 0.0) == 0
    rows = context_indices(np.array([0, 1, 5, 9]), 10, 2, 3)
    assert rows.tolist() == [[0, 0, 2], [0, 1, 3], [3, 5, 7], [7, 9, 9]]  # the nearest slice at the stack's ends
    assert context_indices(np.array([4]), 10, 2, 1).tolist() == [[4]]


def test_network_input_stacks_each_slice_between_its_neighbours() -> None:
    stack = torch.arange(12, dtype=torch.float32)[:, None, None].expand(12, 20, 30).contiguous()  # slice i holds i
    box = Letterbox.fit(20, 30, 32)
    x = network_input(stack, np.array([0, 6, 11]), box, 3, 2)
    assert x.shape == (3, 3, 32, 32)
    inner = x[:, :, box.top + 5, box.left + 5]
    assert inner.tolist() == [[0, 0, 2], [4, 6, 8], [9, 11, 11]]
    assert torch.equal(network_input(stack, np.array([6]), box, 1, 0), box.to_network(stack[6:7]))


def test_three_channel_arch_needs_its_context_and_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="context_mm"):
        ArchSpec(in_channels=3)
    with pytest.raises(ValueError, match="context_mm"):
        ArchSpec(context_mm=3.0)
    with pytest.raises(ValueError, match="in_channels must be 1"):
        ArchSpec(in_channels=2, context_mm=3.0)
    arch = ArchSpec(input_size=64, in_channels=3, context_mm=3.0)
    path = save_weights(tmp_path / "w.pt", build_network(arch), arch, name="n", version="1")
    assert load_weights(path)[1].arch == arch
    payload = torch.load(path, weights_only=True)
    payload["arch"]["in_channels"] = 1  # the 3-channel weights under a 1-channel arch
    payload["arch"]["context_mm"] = 0.0
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ModelWeightsError, match="does not fit"):
        load_weights(tmp_path / "mismatch.pt")


def test_node_runs_a_three_channel_network_on_a_real_series(tmp_path, load_named) -> None:  # type: ignore[no-untyped-def]
    """The CPU segmenter (ONNX Runtime) takes 3 channels, in three fused views and in one view, and
    its probabilities are the network's own in fp32 (the evaluation's path)."""
    series = load_named("sag-t1-siemens-skyra")
    arch = ArchSpec(in_channels=3, context_mm=3.0)
    torch.manual_seed(0)
    path = save_weights(tmp_path / "w.pt", build_network(arch), arch, name="n", version="1",
                        inference=InferenceSpec(views=3, grid_size=160, step=3, threshold=0.5))
    segmenter = Segmenter.from_weights(path, "cpu")
    assert segmenter.runtime == "onnxruntime"
    spacing = series.slices[0].pixel_spacing
    fused = segmenter.predict_probabilities(series.pixels, spacing, series.slice_spacing_mm)
    network, info = load_weights(path)
    with torch.no_grad():
        reference = brain_probabilities(network, series.pixels, spacing, series.slice_spacing_mm, info)
    assert fused.shape == series.pixels.shape
    assert float(np.abs(fused - reference).max()) < 1e-3
    one_view = segmenter.predict_probabilities(series.pixels[:20], spacing, None)  # no regular spacing: no neighbours
    assert one_view.shape == (20, *series.pixels.shape[1:])
    mask = segmenter.segment(series).mask
    assert mask.shape == series.pixels.shape


def test_training_slices_show_the_same_neighbours_as_the_node(load_named) -> None:  # type: ignore[no-untyped-def]
    series = load_named("sag-t1-siemens-skyra")
    case = dicom_case(series, np.zeros(series.pixels.shape, dtype=bool), "siemens")
    (native,) = case_slices(case, 160, axes=(0,))
    offset = context_offset(series.slice_spacing_mm, 3.0)
    assert native.depth_mm == pytest.approx(series.slice_spacing_mm) and offset == 3  # 0.9 mm sagittal slices
    x = native.inputs(np.array([100]), 3, 3.0)
    assert x.shape == (1, 3, 160, 160)
    assert np.array_equal(x[0], native.images[[100 - offset, 100, 100 + offset]])
    assert np.array_equal(native.inputs(np.array([100]), 1, 0.0)[0, 0], native.images[100])
