"""Weights files, the cached segmenter, and segmentation of real series with weights trained here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicom_node.config import Settings
from dicom_node.imaging.network import (
    ArchSpec,
    ModelWeightsError,
    NoModelWeightsError,
    build_network,
    load_weights,
    resolve_device,
    save_weights,
)
from dicom_node.imaging.segmenter import freeze_for_cpu, get_segmenter
from dicom_node.models.shipped import configured_weights, default_weights_path


def test_weights_round_trip(tmp_path):
    arch = ArchSpec(input_size=64)
    network = build_network(arch)
    path = save_weights(tmp_path / "w.pt", network, arch, name="n", version="1.2", metrics={"dice": 0.9}, card={"data": "x"})
    loaded, info = load_weights(path)
    assert (info.name, info.version, info.arch, info.metrics["dice"]) == ("n", "1.2", arch, 0.9)
    for key, value in network.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_missing_weights_say_where_and_what_to_do(tmp_path):
    with pytest.raises(NoModelWeightsError, match=r"No model weights at .*nope\.pt.*DICOM_NODE_MODEL_WEIGHTS"):
        get_segmenter(tmp_path / "nope.pt", "cpu")


def test_corrupt_and_mismatched_weights_are_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ModelWeightsError, match="corrupt"):
        load_weights(corrupt)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"state_dict": {}}, incomplete)
    with pytest.raises(ModelWeightsError, match="lacks arch, name, version"):
        load_weights(incomplete)
    mismatched = tmp_path / "mismatched.pt"
    payload = {"state_dict": build_network(ArchSpec(encoder_name="resnet18", input_size=64)).state_dict(), "arch": {"encoder_name": "mobilenet_v2", "input_size": 64}, "name": "n", "version": "1"}
    torch.save(payload, mismatched)
    with pytest.raises(ModelWeightsError, match="does not fit a mobilenet_v2"):
        load_weights(mismatched)


def test_default_weights_path_and_setting(tmp_path):
    assert default_weights_path().name == "brain-deeplabv3plus.pt" and default_weights_path().is_file()
    assert configured_weights(Settings()) == default_weights_path()
    config = tmp_path / "node.env"  # the setting goes through Settings, from a config file too
    config.write_text(f"DICOM_NODE_MODEL_WEIGHTS={tmp_path / 'site.pt'}\n")
    assert configured_weights(Settings(_env_file=config)) == tmp_path / "site.pt"  # type: ignore[call-arg]


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="cpu, cuda or auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_segmenter_is_cached_per_weights_and_device(trained_weights):
    assert get_segmenter(trained_weights, "cpu") is get_segmenter(trained_weights, "cpu")


def test_cpu_segmenter_runs_onnx_runtime_and_its_fallback_gives_the_same_logits(trained_weights):
    segmenter = get_segmenter(trained_weights, "cpu")
    assert segmenter.runtime == "onnxruntime", "the CPU path should run the network in ONNX Runtime"
    size = segmenter.info.arch.input_size
    frozen = freeze_for_cpu(segmenter.network, segmenter.batch_size, size)  # used when the export fails
    assert isinstance(frozen, torch.jit.ScriptModule)
    for batch in (1, 3, segmenter.batch_size + 5):  # neither graph may be tied to its example's batch size
        x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            eager = segmenter.network(x)
            for name, runner in (("onnxruntime", segmenter.runner), ("torchscript", frozen)):
                out = runner(x)
                assert out.shape == eager.shape, name
                assert torch.allclose(out, eager, atol=1e-3), (name, float((out - eager).abs().max()))


def test_brain_found_on_siemens(trained_weights, load_named, siemens_reference_mask):
    segmenter = get_segmenter(trained_weights, "cpu")
    result = segmenter.segment(load_named("sag-t1-siemens-skyra"))
    dice = 2 * (result.mask & siemens_reference_mask).sum() / (result.mask.sum() + siemens_reference_mask.sum())
    assert dice > 0.8, f"Dice with deepbet's mask {dice:.3f} (weights trained for seconds, in the test)"
    assert 800 < result.volume_ml < 2500
    assert result.notes == []


def test_phantom_gives_empty_mask_and_a_note(trained_weights, load_named):
    result = get_segmenter(trained_weights, "cpu").segment(load_named("t1-phantom-ge-signa"))
    assert result.mask.sum() < 0.001 * result.mask.size
    assert any(note.startswith("No brain found") for note in result.notes)


@pytest.mark.parametrize("folder", ["enhanced-t1-siemens-xa30", "epi-ge-discovery"])
def test_other_matrices_segment_at_their_own_size(trained_weights, load_named, folder):
    series = load_named(folder)
    result = get_segmenter(trained_weights, "cpu").segment(series)
    assert result.mask.shape == series.pixels.shape and result.mask.dtype == np.bool_
