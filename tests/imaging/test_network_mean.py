"""Several networks in one weights file, run as the mean of their logits (``NetworkMean``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_node.imaging.model_info import ArchSpec, InferenceSpec
from dicom_node.imaging.network import ModelWeightsError, NetworkMean, build_network, load_weights, save_weights
from dicom_node.imaging.segmenter import Segmenter

REPO = Path(__file__).resolve().parents[2]
ARCH = ArchSpec(input_size=64)


def two_networks() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [build_network(ARCH).eval(), build_network(ARCH).eval()]


def test_a_file_of_two_networks_loads_as_the_mean_of_their_logits(tmp_path: Path) -> None:
    first, second = two_networks()
    path = save_weights(tmp_path / "pair.pt", NetworkMean([first, second]), ARCH, name="n", version="2.0", inference=InferenceSpec(views=3, step=6, grid_size=64))
    assert "state_dicts" in torch.load(path, weights_only=True)
    loaded, info = load_weights(path)
    assert isinstance(loaded, NetworkMean) and len(loaded.members) == 2 and info.inference.step == 6
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        expected = (first(x) + second(x)) / 2
        assert torch.allclose(loaded(x), expected, atol=1e-6)
        assert not torch.allclose(first(x), second(x), atol=1e-3)  # the two differ, so the mean is a new network


def test_the_cpu_segmenter_runs_the_mean_in_onnx_runtime_with_the_same_logits(tmp_path: Path) -> None:
    pair = NetworkMean(two_networks())
    segmenter = Segmenter(pair, load_weights(save_weights(tmp_path / "p.pt", pair, ARCH, name="n", version="2"))[1], "cpu")
    assert segmenter.runtime == "onnxruntime"
    x = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(segmenter.runner(x), pair(x), atol=1e-3)


def test_a_file_whose_second_network_does_not_fit_says_which(tmp_path: Path) -> None:
    good = build_network(ARCH).state_dict()
    wrong = build_network(ArchSpec(input_size=64, decoder_channels=64)).state_dict()
    path = tmp_path / "bad.pt"
    torch.save({"state_dicts": [good, wrong], "arch": {"input_size": 64}, "name": "n", "version": "1"}, path)
    with pytest.raises(ModelWeightsError, match="network 2 of 2 does not fit"):
        load_weights(path)
    torch.save({"state_dicts": [], "arch": {"input_size": 64}, "name": "n", "version": "1"}, path)
    with pytest.raises(ModelWeightsError, match="1 to 8 state dicts"):
        load_weights(path)


def test_join_writes_one_file_run_at_the_step_times_the_count(tmp_path: Path, trained_weights: Path) -> None:
    """``train_default.py join``: the mean of two files' networks, run as the first at twice its
    step; joined with itself, a network segments a real series as it does alone."""
    from dicom_node.imaging.loading import load_folder

    single, info = load_weights(trained_weights)
    spec = InferenceSpec(views=3, grid_size=info.arch.input_size, step=2, threshold=0.5)
    first = save_weights(tmp_path / "a.pt", single, info.arch, name=info.name, version="1.0", inference=spec)
    out = tmp_path / "joined.pt"
    done = subprocess.run([sys.executable, str(REPO / "models" / "train_default.py"), "join", str(first), str(trained_weights), "--weights", str(out), "--apply", "9.9"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    joined, joined_info = load_weights(out)
    assert isinstance(joined, NetworkMean) and len(joined.members) == 2
    assert (joined_info.version, joined_info.inference.step, joined_info.inference.threshold) == ("9.9", 4, 0.5)
    assert "mean of the logits of 2 networks" in joined_info.card["networks"]
    (series,), _ = load_folder(REPO.parent / "shared" / "data" / "dicom" / "sag-t1-siemens-skyra")
    alone = Segmenter(single, joined_info, "cpu").segment(series).mask  # the same step, one network
    both = Segmenter(joined, joined_info, "cpu").segment(series).mask
    assert alone.sum() > 10_000
    assert np.logical_xor(alone, both).sum() <= 1e-3 * alone.sum()


def test_join_refuses_networks_of_another_architecture(tmp_path: Path, trained_weights: Path) -> None:
    other = save_weights(tmp_path / "other.pt", build_network(ArchSpec(input_size=64, decoder_channels=64)), ArchSpec(input_size=64, decoder_channels=64), name="test-brain", version="1")
    done = subprocess.run([sys.executable, str(REPO / "models" / "train_default.py"), "join", str(trained_weights), str(other), "--weights", str(tmp_path / "j.pt"), "--apply", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "not a network of the recipe" in done.stderr and not (tmp_path / "j.pt").exists()
