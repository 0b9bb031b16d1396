"""Threshold calibration on the leave-one-head-out folds (``models/train_default.py calibrate``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace

import pytest

from dicom_node.imaging.network import load_weights
from dicom_node.training.metrics import Counts, overall, scores
from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("train_default", REPO / "models" / "train_default.py")
assert spec and spec.loader
train_default = importlib.util.module_from_spec(spec)
sys.modules["train_default"] = train_default
spec.loader.exec_module(train_default)


def _row(tp: int, fp: int, fn: int, tn: int = 10_000) -> dict[str, float]:
    return {**scores(Counts(tp, fp, fn, tn)), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "ap": 0.9, "end_dice": 0.5}


def _fold(by_threshold: dict[float, list[tuple[int, int, int]]], shipped: float = 0.6) -> dict:
    """A fold's JSON as run_loo writes it: per-series rows at the shipped threshold, pooled rates per threshold."""
    rows = {t: {f"head/{i}": _row(*c) for i, c in enumerate(counts)} for t, counts in by_threshold.items()}
    return {"series": rows[shipped], "thresholds": {f"{t:g}": overall(r) for t, r in rows.items()}}


def test_pooled_counts_match_the_series_counts_of_every_fold() -> None:
    # Two heads of different sizes: a fold keeps rates, not counts, so the pooling must weigh them by size.
    a = {0.5: [(900, 30, 100), (880, 40, 120)], 0.6: [(850, 10, 150), (840, 20, 160)]}
    b = {0.5: [(9000, 900, 100)], 0.6: [(8500, 400, 600)]}
    folds = {"a": _fold(a), "b": _fold(b)}
    got = train_default.pooled(folds, {"a": "0.5", "b": "0.6"})
    truth = overall({"a0": _row(*a[0.5][0]), "a1": _row(*a[0.5][1]), "b0": _row(*b[0.6][0])})
    assert got["dice"] == pytest.approx(truth["dice"], abs=1e-9)
    assert got["precision"] == pytest.approx(truth["precision"], abs=1e-9)
    assert got["recall"] == pytest.approx(truth["recall"], abs=1e-9)
    assert got["min_dice"] == pytest.approx(min(folds["a"]["thresholds"]["0.5"]["dice"], folds["b"]["thresholds"]["0.6"]["dice"]))


def test_calibration_takes_the_best_dice_that_meets_precision_and_recall() -> None:
    # At 0.4 the Dice is highest but precision is 0.93; 0.5 meets both targets with a lower Dice.
    fold = _fold({0.4: [(990, 75, 10)], 0.5: [(955, 40, 45)], 0.6: [(900, 5, 100)]})
    threshold, table = train_default.calibrate({"head": fold})
    assert table["0.4"]["dice"] > table["0.5"]["dice"] and table["0.4"]["precision"] < 0.95
    assert threshold == "0.5"
    # None meets both: the best Dice.
    fold = _fold({0.4: [(985, 80, 15)], 0.5: [(930, 70, 70)], 0.6: [(800, 5, 200)]})
    assert train_default.calibrate({"head": fold})[0] == "0.4"


def test_calibration_weighs_post_processing_variants_beside_the_thresholds() -> None:
    # A fold's variants (postprocess_variants.py --node) share its thresholds' table; the best Dice
    # that meets both targets wins whatever its kind, and the table keeps thresholds first.
    fold = _fold({0.5: [(955, 40, 45)], 0.6: [(900, 5, 100)]})
    fold["thresholds"]["ends0.6/0.5"] = overall({"head/0": _row(960, 30, 40)})
    threshold, table = train_default.calibrate({"head": fold})
    assert threshold == "ends0.6/0.5"
    assert list(table) == ["0.5", "0.6", "ends0.6/0.5"]


def test_a_lone_epi_fold_is_calibrated_blind_among_its_own_thresholds() -> None:
    # The T1 folds carry a winning variant; the only EPI fold has thresholds alone, so its blind
    # choice (made on the T1 folds) must come from what it was scored with.
    t1 = {h: _fold({0.5: [(955, 40, 45)], 0.6: [(900, 5, 100)]}) for h in ("a", "b")}
    for fold in t1.values():
        fold["thresholds"]["ends0.6/0.5"] = overall({"head/0": _row(960, 30, 40)})
    epi = _fold({0.4: [(950, 20, 50)], 0.5: [(930, 10, 70)], 0.6: [(900, 5, 100)]})
    chosen, summary = train_default.calibrate_folds({**t1, "epi": epi}, {"a": "t1", "b": "t1", "epi": "epi"})
    assert chosen == {"t1": "ends0.6/0.5", "epi": "0.4"}
    assert summary["per_head"]["epi"]["blind_threshold"] == "0.5"  # the T1 folds' best among 0.5 and 0.6
    assert summary["per_head"]["a"]["blind_threshold"] == "ends0.6/0.5"


def test_a_contrast_enhanced_fold_chooses_its_own_threshold_on_the_t1_steps() -> None:
    # The T1 folds choose smoothing at 0.55. The contrast-enhanced fold over-segments: alone it
    # would take ends0.7/0.5 (the best Dice meeting both targets), but a model has one set of 3D
    # steps, so it chooses among the smoothed cuts only, and sits out of the T1 choice.
    def t1_fold() -> dict:
        fold = _fold({0.55: [(955, 40, 45)], 0.6: [(930, 20, 70)], 0.7: [(900, 5, 100)]})
        fold["thresholds"] |= {"smooth1mm/0.55": overall({"h/0": _row(960, 30, 40)}), "smooth1mm/0.7": overall({"h/0": _row(910, 5, 90)}),
                               "ends0.7/0.5": overall({"h/0": _row(940, 30, 60)})}
        return fold

    contrast = _fold({0.55: [(990, 120, 10)], 0.6: [(980, 80, 20)], 0.7: [(965, 45, 35)]})
    contrast["thresholds"] |= {"smooth1mm/0.55": overall({"h/0": _row(990, 110, 10)}), "smooth1mm/0.7": overall({"h/0": _row(962, 40, 38)}),
                               "ends0.7/0.5": overall({"h/0": _row(975, 30, 25)})}
    folds = {"a": t1_fold(), "b": t1_fold(), "c": contrast}
    chosen, summary = train_default.calibrate_folds(folds, {"a": "t1", "b": "t1", "c": "contrast"})
    assert chosen["t1"] == "smooth1mm/0.55" and chosen["contrast"] == "smooth1mm/0.7"
    assert train_default.calibrate({"c": contrast})[0] == "ends0.7/0.5"  # what it would take alone
    assert summary["groups"]["t1"]["heads"] == ["a", "b"] and summary["per_head"]["c"]["threshold"] == "smooth1mm/0.7"
    assert summary["per_head"]["c"]["blind_threshold"] == "smooth1mm/0.55"  # the only one of its class: chosen on all the others
    spec = train_default.chosen_inference({**chosen, "epi": "0.4"})
    assert (spec.threshold, spec.smooth_mm, spec.contrast_threshold, spec.epi_threshold) == (0.55, 1.0, 0.7, 0.4)
    assert train_default.chosen_inference({"t1": "0.55", "epi": "0.4"}).contrast_threshold is None  # no such fold: no own threshold


def test_variants_scored_later_join_only_their_own_fold(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fold = _fold({0.5: [(955, 40, 45)], 0.6: [(900, 5, 100)]})
    rows = {"0.5": fold["thresholds"]["0.5"], "ends0.6/0.5": overall({"head/0": _row(960, 30, 40)})}
    path = tmp_path / "variants-a.json"
    path.write_text(json.dumps({"weights": "dicom-node-brain-loo-a 1.4.0", "thresholds": rows}))
    train_default.merge_variants("a", fold, path)
    assert list(fold["thresholds"]) == ["0.5", "ends0.6/0.5", "0.6"]
    with pytest.raises(SystemExit, match="not the network of the fold that held out b"):
        train_default.merge_variants("b", _fold({0.5: [(955, 40, 45)]}, shipped=0.5), path)
    other = {**rows, "0.5": overall({"head/0": _row(950, 40, 50)})}  # another network's 0.5
    path.write_text(json.dumps({"weights": "dicom-node-brain-loo-a 1.4.0", "thresholds": other}))
    with pytest.raises(SystemExit, match="not the same network or path"):
        train_default.merge_variants("a", _fold({0.5: [(955, 40, 45)]}, shipped=0.5), path)
    plain = _fold({0.5: [(955, 40, 45)]}, shipped=0.5)
    train_default.merge_variants("c", plain, tmp_path / "variants-c.json")  # none scored: thresholds alone
    assert list(plain["thresholds"]) == ["0.5"]


def test_a_fold_that_kept_its_probabilities_is_scored_on_variants_added_later(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A fold run before a variant existed: calibration scores the variant from the held-out head's
    kept probabilities (variants-HEAD.json, kept for the next calibration), checked against the
    fold's own rows to the 1/255 steps the probabilities are kept in."""
    import numpy as np
    import torch

    from dicom_node.imaging.model_info import ArchSpec, ModelInfo
    from dicom_node.imaging.network import build_network
    from dicom_node.training.evaluate import evaluate_case, save_probabilities
    from tests.training.test_train_and_shipped import _toy_case

    torch.manual_seed(0)
    case = _toy_case()
    info = ModelInfo("toy", "0", ArchSpec(input_size=48, decoder_channels=32), inference=replace(train_default.INFERENCE, grid_size=48, step=1))
    kept: dict[str, np.ndarray] = {}
    scored = evaluate_case(build_network(info.arch), info, case, axes="all", thresholds=train_default.CALIBRATION, kept=kept)
    fold = {"thresholds": train_default.by_threshold(scored)}  # as a fold run without VARIANTS wrote it
    save_probabilities(tmp_path / "loo-toy-probabilities.npz", kept)
    path = tmp_path / "variants-toy.json"
    train_default.merge_variants("toy", fold, path, case)
    assert set(train_default.VARIANTS) <= set(fold["thresholds"]) and "valley0.45-0.8/w0.1" in fold["thresholds"]
    written = json.loads(path.read_text())
    assert written["kept"] is True
    for t in train_default.CALIBRATION:  # the fold's own rows are kept; the kept probabilities gave the same
        assert abs(written["thresholds"][f"{t:g}"]["dice"] - fold["thresholds"][f"{t:g}"]["dice"]) <= train_default.KEPT_TOLERANCE
    other = {"thresholds": {k: {**v, "dice": v["dice"] - 0.01} for k, v in train_default.by_threshold(scored).items()}}  # another network's
    with pytest.raises(SystemExit, match="not the same network or path"):
        train_default.merge_variants("toy", other, path, case)


def test_what_calibration_chose_becomes_the_node_inference() -> None:
    spec = train_default.chosen_inference({"t1": "ends0.6/0.5", "epi": "0.4"})
    assert (spec.threshold, spec.end_threshold, spec.smooth_mm, spec.epi_threshold) == (0.6, 0.5, 0.0, 0.4)
    assert (spec.views, spec.grid_size, spec.step) == (3, 160, 3)  # the recipe's way of running the network
    spec = train_default.chosen_inference({"t1": "smooth1mm/0.65", "epi": "0.45"})
    assert (spec.threshold, spec.end_threshold, spec.smooth_mm, spec.epi_threshold) == (0.65, None, 1.0, 0.45)
    assert train_default.chosen_inference({"t1": "0.55", "epi": "0.45"}).threshold == 0.55


def test_applying_a_calibration_without_an_epi_fold_is_refused() -> None:
    """Folds without the EPI one choose no EPI threshold; applied, EPI would be cut at T1's."""
    with pytest.raises(SystemExit, match="no EPI fold"):
        train_default.chosen_inference({"t1": "0.55"})


def test_a_fold_is_scored_again_at_a_coarser_grid_step(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``loo --steps``: the held-out head is run again on every N-th grid slice, into stepN/, where
    ``calibrate`` reads it; its rows are those of the node at that step, not at the recipe's."""
    import torch

    from dicom_node.imaging.model_info import ArchSpec, ModelInfo
    from dicom_node.training.evaluate import evaluate_case
    from tests.training.test_train_and_shipped import _toy_case

    case = replace(_toy_case(), spacing=(6.0, 3.0, 3.0))  # 144 mm: a whole head's extent, so its views are fused on the grid
    arch = ArchSpec(input_size=48, decoder_channels=32)
    network = torch.nn.Conv2d(1, 1, 3, padding=1)  # an untrained DeepLabV3+ answers every pixel alike; this follows the image
    torch.nn.init.constant_(network.weight, 1.0)
    torch.nn.init.constant_(network.bias, -4.0)
    inference = replace(train_default.INFERENCE, grid_size=48, step=1)
    train_default.score_step(network, arch, inference, case, 3, tmp_path)
    written = json.loads((tmp_path / "step3" / "loo-toy.json").read_text())
    assert written["step"] == 3 and "one_view" not in written
    assert set(written["thresholds"]) == {f"{t:g}" for t in train_default.CALIBRATION} | set(train_default.STEP_VARIANTS)

    def at(step: int) -> dict:
        info = ModelInfo("toy", "0", arch, inference=replace(inference, step=step))
        rows = train_default.by_threshold(evaluate_case(network, info, case, axes="all", thresholds=train_default.CALIBRATION))
        return [rows[t][k] for t in sorted(rows) for k in ("dice", "end_dice", "ap")]

    mine = [written["thresholds"][t][k] for t in sorted(written["thresholds"]) if t not in train_default.STEP_VARIANTS for k in ("dice", "end_dice", "ap")]
    assert mine == pytest.approx(at(3))
    assert mine != pytest.approx(at(1))  # fewer slices through the network: other masks


def test_the_weights_card_names_the_grid_step() -> None:
    assert [train_default.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22)] == ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"]


def test_the_enhancing_rim_is_written_only_with_a_version(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in ((["calibrate", "--contrast-rim", "1.3"], "written with --apply VERSION"),
                       (["calibrate", "--apply", "9.9.9", "--contrast-rim-below", "0.8"], "--contrast-rim-below goes with --contrast-rim")):
        with pytest.raises(SystemExit) as stopped:
            train_default.main(argv)
        assert stopped.value.code == 2 and says in capsys.readouterr().err


def test_calibrate_apply_writes_the_shipped_steps_and_says_them_on_the_card() -> None:
    spec, card = train_default.applied_inference({"t1": "smooth1mm/0.55", "epi": "0.4"}, step=4, contrast_rim=(1.3, 0.8))
    assert (spec.threshold, spec.smooth_mm, spec.epi_threshold, spec.step, spec.contrast_rim, spec.contrast_rim_below) == (0.55, 1.0, 0.4, 4, 1.3, 0.8)
    assert card["inference"] == ("three views fused on a 160-voxel grid, every 4th grid slice, threshold 0.55, smooth_mm 1, contrast-enhanced series "
                                 "trimmed of 3 mm rim voxels at 1.3 times the mask's median below 0.8 (EPI 0.4)")
    plain, plain_card = train_default.applied_inference({"t1": "smooth1mm/0.55", "epi": "0.4"})
    assert plain.contrast_rim is None and plain.step == train_default.INFERENCE.step and "rim" not in plain_card["inference"]
    shipped = load_weights(train_default.WEIGHTS)[1]
    assert shipped.inference == spec and shipped.card["inference"] == card["inference"]  # 1.4.6 is what this writes
