"""A recipe's always-trained heads and how often the trainer draws them (``train_default.py --recipe``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_node.imaging.network import build_network
from dicom_node.training.data import NIFTI_DIRECTIONS, Case, save_cases
from dicom_node.training.train import SlicePool
from tests.training.test_calibration import train_default


def _head(name: str, radius: float = 14.0, weight: float = 1.0) -> Case:
    """A small 'head': a bright ellipsoid brain in a dimmer shell."""
    zz, yy, xx = np.mgrid[:16, :32, :32].astype(np.float32)
    brain = ((zz - 8) / 6) ** 2 + ((yy - 16) / radius) ** 2 + ((xx - 16) / radius) ** 2 < 1
    volume = np.where(brain, 300.0, 80.0).astype(np.float32)
    return Case(name, volume, brain, (2.0, 1.0, 1.0), kind="nifti", draw_weight=weight)


def test_heads_are_drawn_in_proportion_to_their_weight() -> None:
    cases = [_head("a"), _head("b"), _head("c", weight=1 / 3), _head("d", weight=1 / 3)]
    pool = SlicePool(cases, 32)
    rng = np.random.default_rng(0)
    index = {id(h): i for i, h in enumerate(pool.heads)}
    draws = [index[id(pool.draw_head(rng))] for _ in range(8000)]
    share = np.bincount(draws, minlength=4) / len(draws)
    # a and b: 3/8 each; c and d, at a third of a head's weight: 1/8 each (binomial sd about 0.004)
    assert share == pytest.approx([3 / 8, 3 / 8, 1 / 8, 1 / 8], abs=0.02)


def test_even_weights_keep_the_random_stream_of_earlier_recipes() -> None:
    pool = SlicePool([_head("a"), _head("b"), _head("c")], 32)
    ours, before = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(50):  # the draw a 1.4.0 run made: rng.integers over the heads
        assert pool.draw_head(ours) is pool.heads[before.integers(3)]


def test_a_weight_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="draw weight 0"):
        _head("a", weight=0.0)


def _pack(tmp_path: Path, names: list[str]) -> Path:
    cases = [_head(n) for n in names] + [replace(_head("phantom"), mask=np.zeros((16, 32, 32), bool), negative=True)]
    return save_cases(tmp_path / "cases.npz", cases)


def test_recipe_1_5_0_trains_six_epi_at_a_third_of_a_heads_weight(tmp_path: Path) -> None:
    td = train_default
    names = [*td.HEADS, *td.ALWAYS_TRAINED, *td.NEVER_SEEN, *td.EPI_SLABS]
    heads, always, _, _ = td.load_heads(_pack(tmp_path, names), td.RECIPES["1.5.0"])
    assert list(heads) == list(td.HEADS) and all(c.draw_weight == 1.0 for c in heads.values())
    drawn = {c.name: c.draw_weight for c in always if not c.negative}
    assert drawn == dict.fromkeys(["heudiconv-fmri", "heudiconv-b0", *td.MORE_EPI], pytest.approx(1 / 3))
    assert sum(drawn.values()) == pytest.approx(2.0)  # as often, together, as 1.4.0's two mosaics
    assert [c.name for c in always if c.negative] == ["phantom"]
    # the shipped recipe trains the two mosaics at a head's weight, as before
    _, always_140, _, _ = td.load_heads(tmp_path / "cases.npz")
    assert {c.name: c.draw_weight for c in always_140 if not c.negative} == {"heudiconv-fmri": 1.0, "heudiconv-b0": 1.0}


def test_a_pack_without_the_recipes_heads_names_them(tmp_path: Path) -> None:
    td = train_default
    names = [*td.HEADS, "heudiconv-fmri", "heudiconv-b0", *td.NEVER_SEEN, *td.EPI_SLABS]
    with pytest.raises(SystemExit, match="recipe 1.5.0 trains on nireports-bold, .*brainiak-bold, not in the cases read: run models/fetch_heads.py"):
        td.load_heads(_pack(tmp_path, names), td.RECIPES["1.5.0"])


def test_recipe_1_7_0_trains_thick_copies_of_the_t1_heads_it_trains_on_and_never_of_the_held_out_one(tmp_path: Path) -> None:
    td = train_default
    names = [*td.HEADS, *td.ALWAYS_TRAINED, *td.NEVER_SEEN, *td.EPI_SLABS]
    cases = [replace(_head(n), directions=NIFTI_DIRECTIONS, echo_planar=n == "sdcflows-epi") for n in names]
    pack = save_cases(tmp_path / "cases.npz", cases)
    recipe = td.RECIPES["1.7.0"]
    heads, always, _, _ = td.load_heads(pack, recipe)
    trained = td.training_cases(heads, always, recipe, held="radiomics-brain1")
    copies = {c.name: c for c in trained if c.name.endswith("-axial6mm")}
    t1_trained = [n for n in td.HEADS if n not in ("radiomics-brain1", "sdcflows-epi")]
    assert sorted(copies) == sorted(f"{n}-axial6mm" for n in t1_trained)  # not the held-out head, not the EPI
    assert all(c.draw_weight == 0.5 and c.spacing[1] == 6.0 for c in copies.values())
    assert [c.name for c in trained if c.name in td.HEADS] == [n for n in td.HEADS if n != "radiomics-brain1"]
    # 1.8.0 draws the same copies a quarter as often as a head
    quarter = [c for c in td.training_cases(heads, always, td.RECIPES["1.8.0"], held="radiomics-brain1") if c.name.endswith("-axial6mm")]
    assert sorted(c.name for c in quarter) == sorted(copies) and all(c.draw_weight == 0.25 for c in quarter)
    # the shipped recipe trains on no copy
    assert not [c for c in td.training_cases(heads, always, td.RECIPES["1.4.0"], held="siemens") if "axial" in c.name]


def test_recipes_1_10_0_and_1_11_0_train_smaller_networks_and_earlier_recipes_keep_theirs() -> None:
    small, large = (train_default.recipe_config(train_default.RECIPES[v]).arch for v in ("1.10.0", "1.4.0"))
    assert (small.encoder_name, large.encoder_name) == ("tu-mobilenetv3_small_100", "tu-mobilenetv3_large_100")
    assert replace(small, encoder_name=large.encoder_name) == large  # nothing else of the network changes
    narrow = train_default.recipe_config(train_default.RECIPES["1.11.0"]).arch
    assert replace(narrow, encoder_name=large.encoder_name, decoder_channels=large.decoder_channels) == large
    assert (narrow.encoder_name, narrow.decoder_channels) == ("tu-mobilenetv3_large_075", 64)
    networks = [build_network(a).eval() for a in (small, large)]
    sizes = [sum(p.numel() for p in n.parameters()) for n in networks]
    assert sizes[0] < sizes[1] / 2  # 1.44 M against 3.74 M parameters
    with torch.no_grad():
        assert networks[0](torch.zeros(1, 1, small.input_size, small.input_size)).shape == (1, 1, small.input_size, small.input_size)
