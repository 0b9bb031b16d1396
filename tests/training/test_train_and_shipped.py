"""A tiny training run, a checkpoint that loads, and the shipped weights guarded by a Dice."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_node.imaging.model_info import ArchSpec
from dicom_node.imaging.network import load_weights
from dicom_node.models.shipped import default_weights_path
from dicom_node.training.augment import AugmentConfig
from dicom_node.training.data import Case
from dicom_node.training.train import TrainConfig, checkpoint_path, train

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
SIEMENS = SHARED / "dicom" / "sag-t1-siemens-skyra"
SIEMENS_SEG = SHARED / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm"


def _toy_case() -> Case:
    """A 3D 'head' (ellipsoid shell around a brighter ellipsoid brain) with its mask."""
    zz, yy, xx = np.mgrid[:24, :48, :48].astype(np.float32)
    head = ((zz - 12) / 11) ** 2 + ((yy - 24) / 22) ** 2 + ((xx - 24) / 20) ** 2 < 1
    brain = ((zz - 12) / 8) ** 2 + ((yy - 22) / 16) ** 2 + ((xx - 24) / 14) ** 2 < 1
    volume = np.where(brain, 300.0, np.where(head, 120.0, 0.0)).astype(np.float32)
    volume += np.random.default_rng(0).normal(0, 5, volume.shape).astype(np.float32).clip(0)
    return Case("toy", volume, brain, (2.0, 1.0, 1.0), kind="nifti")


def test_tiny_training_reduces_loss_and_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mild = AugmentConfig(p_spatial=0.5, rotate_deg=10, p_rot90=0.0, p_cut=0.0, p_curve=0.0, p_classes=0.0,
                         p_bias=0.0, p_gamma=0.0, p_blur=0.0, p_lowres=0.0, p_noise=0.0, p_window_jitter=0.0)
    config = TrainConfig(epochs=2, samples_per_epoch=48, batch_size=8, lr=3e-3, warmup_steps=2, val_slices_per_case=6,
                         arch=ArchSpec(input_size=48, decoder_channels=32), augment=mild)
    out = tmp_path / "tiny.pt"
    torch.set_num_threads(1)  # a training round must give the process its thread count back
    result = train([_toy_case()], replace(config, threads=2), out=out, name="tiny", version="0.0.1", progress=False, log=lambda _m: None)
    assert torch.get_num_threads() == 1
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[1]["loss"] < result.history[0]["loss"]
    network, info = load_weights(out)
    assert (info.name, info.version, info.arch.input_size) == ("tiny", "0.0.1", 48)
    assert {"train_loss", "train_dice", "train_val_dice", "epochs"} <= set(info.metrics)
    assert info.metrics["epochs"] == 2.0
    assert checkpoint_path(out).is_file()
    # resuming a finished run trains no further epochs and keeps the history
    again = train([_toy_case()], config, out=out, resume=True, progress=False, log=lambda _m: None)
    assert [h["epoch"] for h in again.history] == [1, 2]


def test_curve_png(tmp_path: Path) -> None:
    from dicom_node.training.curves import plot_history

    history = [{"epoch": 1, "loss": 1.0, "dice": 0.5, "val_loss": 0.9, "val_dice": 0.6},
               {"epoch": 2, "loss": 0.5, "dice": 0.8, "val_loss": 0.6, "val_dice": 0.85}]
    path = plot_history(history, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_weights_load_through_the_segmenter() -> None:
    from dicom_node.imaging.segmenter import get_segmenter

    segmenter = get_segmenter(default_weights_path(), "cpu")
    assert segmenter.info.name == "dicom-node-brain"
    assert segmenter.info.version
    assert segmenter.info.metrics


def test_evaluate_shipped_weights_on_the_siemens_series(capsys: pytest.CaptureFixture[str]) -> None:
    if not SIEMENS.is_dir():
        pytest.fail(f"shared data not found at {SIEMENS}")
    from dicom_node.cli.train import add_evaluate_arguments, run_evaluate

    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    args = parser.parse_args([str(default_weights_path()), str(SIEMENS), str(SIEMENS_SEG), "--json"])
    assert run_evaluate(args) == 0
    report = json.loads(capsys.readouterr().out)
    (name,) = report["series"]
    assert report["series"][name]["dice"] > 0.9
    assert report["overall"]["dice"] > 0.9
    assert set(report["overall"]) >= {"dice", "iou", "precision", "recall", "ap"}


def test_scoring_can_leave_out_the_ends_of_a_slab() -> None:
    """``min_reference_fraction`` scores only slices whose reference is at least that share of its
    largest slice (a slab's ends, where a 3D reference tool fails); the network still sees all."""
    from dicom_node.imaging.network import build_network
    from dicom_node.training.data import oriented_stack
    from dicom_node.training.evaluate import evaluate_case

    case = _toy_case()
    network = build_network(ArchSpec(input_size=64))
    whole = evaluate_case(network, ArchSpec(input_size=64), case, axes=[0])["toy/sagittal"]
    middle = evaluate_case(network, ArchSpec(input_size=64), case, axes=[0], min_reference_fraction=0.5)["toy/sagittal"]
    ref, _ = oriented_stack(case.mask, case.spacing, 0)
    areas = ref.reshape(len(ref), -1).sum(axis=1)
    kept = areas >= 0.5 * areas.max()
    assert 0 < kept.sum() < (areas > 0).sum()
    assert whole["tp"] + whole["fn"] == ref.sum()
    assert middle["tp"] + middle["fn"] == ref[kept].sum()
    assert middle["tp"] + middle["fn"] + middle["fp"] + middle["tn"] == ref[kept].size


def test_moving_average_follows_its_decay_and_copies_the_batch_count() -> None:
    from dicom_node.training.train import moving_average

    net = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    ema = moving_average(net, decay=0.2)
    expected = None
    for step, value in enumerate([1.0, 3.0, 7.0, 15.0]):
        with torch.no_grad():
            net[0].weight.fill_(value)
        net[1].num_batches_tracked.fill_(10 * step)
        ema.update_parameters(net)
        d = min(0.2, (1 + step) / (10 + step))  # the first copies; then the ramp (2/11), then the decay
        expected = value if expected is None else d * expected + (1 - d) * value
    assert float(ema.module[0].weight.detach()) == pytest.approx(expected) == pytest.approx(13.2255, abs=1e-4)
    assert int(ema.module[1].num_batches_tracked) == 30


def test_training_with_a_moving_average_writes_both_networks(tmp_path: Path) -> None:
    from dicom_node.training.train import ema_path

    config = TrainConfig(epochs=2, samples_per_epoch=16, batch_size=8, warmup_steps=1, val_slices_per_case=6,
                         arch=ArchSpec(input_size=48, decoder_channels=32), augment=AugmentConfig(p_spatial=0.0))
    plain = tmp_path / "plain.pt"
    train([_toy_case()], config, out=plain, progress=False, log=lambda _m: None)
    assert not ema_path(plain).exists()
    with pytest.raises(ValueError, match="without a moving average"):  # a checkpoint without one cannot grow one
        train([_toy_case()], replace(config, ema_decay=0.9), out=plain, resume=True, progress=False, log=lambda _m: None)

    out = tmp_path / "fold.pt"
    result = train([_toy_case()], replace(config, ema_decay=0.9), out=out, name="tiny", version="0.0.1", progress=False, log=lambda _m: None)
    assert result.ema_network is not None and ema_path(out) == tmp_path / "fold-ema.pt"
    averaged, info = load_weights(ema_path(out))
    final, _ = load_weights(out)
    assert (info.name, info.arch) == ("tiny", result.arch) and info.metrics["ema_decay"] == 0.9
    moved = [not torch.equal(a, b) for a, b in zip(averaged.state_dict().values(), final.state_dict().values()) if a.is_floating_point()]
    assert any(moved)  # four steps at a ramped decay: the average lags the last weights
    for a, b in zip(averaged.state_dict().values(), result.ema_network.state_dict().values()):
        assert torch.equal(a, b)
    # resuming the finished run returns the same average from the checkpoint
    again = train([_toy_case()], replace(config, ema_decay=0.9), out=out, resume=True, progress=False, log=lambda _m: None)
    assert again.ema_network is not None
    for a, b in zip(again.ema_network.state_dict().values(), result.ema_network.state_dict().values()):
        assert torch.equal(a, b)


def test_fine_tuning_a_file_of_two_networks_tunes_both_and_keeps_how_they_run(tmp_path: Path) -> None:
    """Expert retraining starts from the production file; when that holds a pair, the candidate is a
    pair, each network moved, run as its parent is (the same step and cut)."""
    from dicom_node.imaging.model_info import InferenceSpec
    from dicom_node.imaging.network import NetworkMean, build_network, save_weights

    arch = ArchSpec(input_size=48, decoder_channels=32)
    torch.manual_seed(0)
    parent = NetworkMean([build_network(arch), build_network(arch)])
    spec = InferenceSpec(views=3, grid_size=48, step=6, threshold=0.55)
    init = save_weights(tmp_path / "pair.pt", parent, arch, name="dicom-node-brain", version="2.0", inference=spec)
    config = TrainConfig(epochs=1, samples_per_epoch=16, batch_size=8, warmup_steps=1, val_slices_per_case=6, augment=AugmentConfig(p_spatial=0.0))
    out = tmp_path / "tuned.pt"
    train([_toy_case()], config, out=out, init=init, name="dicom-node-brain", version="2.0-r1", progress=False, log=lambda _m: None)
    tuned, info = load_weights(out)
    assert isinstance(tuned, NetworkMean) and len(tuned.members) == 2 and info.inference == spec
    for before, after in zip(parent.members, tuned.members):
        weights = [(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()) if a.is_floating_point()]
        assert any(not torch.equal(a, b) for a, b in weights)


def test_bfloat16_training_runs_the_convolutions_in_bfloat16_and_saves_float32(tmp_path: Path) -> None:
    """Recipe 1.6.0 trains under bfloat16 autocast (more steps an hour on this CPU): the network's
    convolutions see bfloat16, while the loss falls and the saved weights stay float32."""
    seen: set[torch.dtype] = set()
    original = torch.nn.Conv2d.forward

    def spy(self: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        out = original(self, x)
        seen.add(out.dtype)
        return out

    mild = AugmentConfig(p_spatial=0.5, rotate_deg=10, p_rot90=0.0, p_cut=0.0, p_curve=0.0, p_classes=0.0,
                         p_bias=0.0, p_gamma=0.0, p_blur=0.0, p_lowres=0.0, p_noise=0.0, p_window_jitter=0.0)
    config = TrainConfig(epochs=2, samples_per_epoch=48, batch_size=8, lr=3e-3, warmup_steps=2, val_slices_per_case=6,
                         arch=ArchSpec(input_size=48, decoder_channels=32), augment=mild, bf16=True, device="cpu")
    out = tmp_path / "bf16.pt"
    torch.nn.Conv2d.forward = spy  # type: ignore[method-assign]
    try:
        result = train([_toy_case()], config, out=out, progress=False, log=lambda _m: None)
    finally:
        torch.nn.Conv2d.forward = original  # type: ignore[method-assign]
    assert torch.bfloat16 in seen  # the training steps (validation runs in float32)
    assert result.history[1]["loss"] < result.history[0]["loss"]
    network, _ = load_weights(out)
    assert {t.dtype for t in network.state_dict().values() if t.is_floating_point()} == {torch.float32}


def test_kept_probabilities_score_as_the_network_did(tmp_path: Path) -> None:
    """A fold keeps its held-out head's probabilities (``loo-HEAD-probabilities.npz``) so that a
    cut or 3D step is scored on every fold without training again: the kept probabilities must give
    ``evaluate_case``'s rows, every threshold and variant, and survive the file to 1/255."""
    from dicom_node.imaging.model_info import InferenceSpec, ModelInfo
    from dicom_node.imaging.network import build_network
    from dicom_node.training.evaluate import evaluate_case, load_probabilities, save_probabilities, score_kept

    torch.manual_seed(0)
    case = _toy_case()
    inference = InferenceSpec(views=3, grid_size=48, step=1, threshold=0.5)
    info = ModelInfo("toy", "0", ArchSpec(input_size=48, decoder_channels=32), inference=inference)
    variants = {"smooth": replace(inference, smooth_mm=1.0), "ends": replace(inference, end_threshold=0.4)}
    kept: dict[str, np.ndarray] = {}
    rows = evaluate_case(build_network(info.arch), info, case, axes="all", thresholds=(0.4, 0.6), variants=variants, kept=kept)
    assert set(kept) == {"sagittal", "axial", "coronal"}
    assert kept["axial"].shape == (48, 48, 24)  # the stack oriented_stack makes along the second stored axis
    assert score_kept(kept, inference, case, thresholds=(0.4, 0.6), variants=variants) == rows
    path = save_probabilities(tmp_path / "loo-toy-probabilities.npz", kept)
    loaded = load_probabilities(path)
    assert set(loaded) == set(kept)
    for name, prob in kept.items():
        assert loaded[name].dtype == np.float32 and np.abs(loaded[name] - prob).max() <= 0.5 / 255 + 1e-6
