"""Mirror averaging at test time, with the shipped network on a real series."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from dicom_node.imaging.mirror import MIRROR_MIN_PROBABILITY, mirrored
from dicom_node.imaging.model_info import ArchSpec, InferenceSpec
from dicom_node.imaging.network import ModelWeightsError, brain_logit, build_network, load_weights, save_weights
from dicom_node.imaging.normalize import Letterbox, intensity_window, normalize
from dicom_node.imaging.segmenter import Segmenter
from dicom_node.training.metrics import batch_dice


@torch.inference_mode()
def test_brain_slices_average_with_their_mirror_and_empty_slices_are_run_once(shipped_segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    series = load_named("sag-t1-siemens-skyra")
    volume = normalize(torch.from_numpy(series.pixels.astype(np.float32)), intensity_window(series.pixels))
    box = Letterbox.fit(series.pixels.shape[1], series.pixels.shape[2], 160, series.slices[0].pixel_spacing)
    batch = box.to_network(volume[[0, 96, 100]])  # the first slice is lateral to the head: air and scalp
    run = shipped_segmenter.runner
    seen: list[int] = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return run(x)

    plain = run(batch)
    both = mirrored(counted)(batch)
    assert torch.sigmoid(brain_logit(plain[:1])).max() < MIRROR_MIN_PROBABILITY  # no brain in the first
    assert seen == [3, 2]  # the two brain slices were run a second time, mirrored
    assert torch.equal(both[0], plain[0])
    expected = (plain[1:] + run(batch[1:].flip(-1)).flip(-1)) / 2
    assert torch.allclose(both[1:], expected, atol=1e-5)
    assert not torch.allclose(both[1:], plain[1:], atol=1e-2)  # the mirror is a second look, not the same one
    assert mirrored(run, min_probability=0.0)(batch[:1]).shape == plain[:1].shape  # 0 mirrors every slice


def test_the_mirror_moves_the_shipped_mask_at_its_edge_only(shipped_segmenter: Segmenter, load_named) -> None:  # type: ignore[no-untyped-def]
    series = load_named("sag-t1-siemens-skyra")
    info = shipped_segmenter.info
    mirrored_segmenter = Segmenter(shipped_segmenter.network, replace(info, inference=replace(info.inference, mirror=True)), "cpu")
    plain, mirror = shipped_segmenter.segment(series), mirrored_segmenter.segment(series)
    assert 0.98 < batch_dice(mirror.mask, plain.mask) < 1.0
    assert mirror.volume_ml == pytest.approx(plain.volume_ml, rel=0.02)


def test_weights_carry_the_mirror_and_older_files_run_without_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    arch = ArchSpec(input_size=64)
    spec = InferenceSpec(views=3, grid_size=48, step=3, threshold=0.55, mirror=True)
    _, info = load_weights(save_weights(tmp_path / "w.pt", build_network(arch), arch, name="n", version="1", inference=spec))
    assert info.inference.mirror is True
    payload = torch.load(tmp_path / "w.pt", weights_only=True)
    del payload["inference"]["mirror"]  # a file written before 1.4.3
    torch.save(payload, tmp_path / "old.pt")
    assert load_weights(tmp_path / "old.pt")[1].inference.mirror is False
    payload["inference"]["mirror"] = "yes"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelWeightsError, match="inference mirror must be true or false"):
        load_weights(tmp_path / "bad.pt")
