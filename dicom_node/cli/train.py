"""``dicom-node train`` and ``dicom-node evaluate``: plain functions the CLI wires in.

    dicom-node train DATA... --out weights.pt [--epochs N] [--init PARENT.pt] [--curve curve.png]
    dicom-node evaluate WEIGHTS DATA... [--json]

DATA are folders or files: DICOM series with SEG files that reference them (a SEG may sit in
another folder than its series), NIfTI folders holding an image and a mask named like
``--mask-name`` (default ``brainmask_deepbet``), or ``IMAGE.nii.gz:MASK.nii.gz`` pairs.

Exit status: 0 done; 1 no usable case was found; 2 unusable arguments or weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_NO_DATA = 1
EXIT_UNUSABLE = 2


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mask-name", default="brainmask_deepbet", help="NIfTI mask file name part (default: brainmask_deepbet)")
    parser.add_argument("--negative", metavar="DIR", type=Path, action="append", default=[], help="DICOM series with no brain (all background), e.g. a phantom; repeatable")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options left out keep the trainer's defaults (``TrainConfig``, ``ArchSpec``), read only when training
    starts so that ``--help`` does not import torch."""
    parser.description = "Train the brain DeepLabv3+ on DICOM series with SEG masks and/or NIfTI image+mask pairs."
    parser.add_argument("data", metavar="DATA", nargs="+", type=Path, help="folders/files: DICOM series + SEG, NIfTI folders or IMAGE:MASK pairs")
    parser.add_argument("--out", metavar="WEIGHTS", type=Path, required=True, help="weights file to write (a resumable checkpoint goes to WEIGHTS.ckpt)")
    parser.add_argument("--epochs", type=int, help="epochs (default: TrainConfig.epochs)")
    parser.add_argument("--samples-per-epoch", type=int, help="augmented slices per epoch (default: TrainConfig.samples_per_epoch)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate (default: TrainConfig.lr; use ~3e-4 to fine-tune)")
    parser.add_argument("--init", metavar="PARENT", type=Path, help="fine-tune from this weights file (its architecture is kept)")
    parser.add_argument("--resume", action="store_true", help="continue from WEIGHTS.ckpt when it exists")
    parser.add_argument("--val", metavar="DATA", type=Path, action="append", default=[], help="held-out cases for the per-epoch validation Dice (default: the training cases)")
    parser.add_argument("--curve", metavar="PNG", type=Path, help="write the training curve (loss and Dice per epoch)")
    parser.add_argument("--name", default="dicom-node-brain", help="model name written into the weights and every SEG")
    parser.add_argument("--version", default="0.0.0", help="model version written into the weights and every SEG")
    parser.add_argument("--input-size", type=int, help="network input size (default: ArchSpec.input_size)")
    parser.add_argument("--encoder", help="smp encoder (default: ArchSpec.encoder_name)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: TrainConfig.threads)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where the network trains (default: auto, CUDA when present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_data_arguments(parser)


def _given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """The options the user set, renamed to the dataclass fields they override."""
    return {field: getattr(args, option) for field, option in names.items() if getattr(args, option) is not None}


def run_train(args: argparse.Namespace) -> int:
    from dicom_node.imaging.model_info import ArchSpec
    from dicom_node.imaging.network import ModelWeightsError, resolve_device
    from dicom_node.outputs.common import OutputBuildError
    from dicom_node.training.curves import plot_history
    from dicom_node.training.data import discover_cases
    from dicom_node.training.train import TrainConfig, train

    try:
        arch = ArchSpec(**_given(args, encoder_name="encoder", input_size="input_size"))
        config = replace(TrainConfig(), seed=args.seed, arch=arch,
                         **_given(args, epochs="epochs", samples_per_epoch="samples_per_epoch", batch_size="batch_size", lr="lr", threads="threads",
                                   device="device"))
        if config.epochs < 1 or config.samples_per_epoch < 1 or config.batch_size < 1:
            raise ValueError("--epochs, --samples-per-epoch and --batch-size must be >= 1.")
        resolve_device(config.device)
    except (ValueError, RuntimeError) as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    try:
        cases = discover_cases(args.data, mask_name=args.mask_name, negatives=args.negative, log=_note)
        val_cases = discover_cases(args.val, mask_name=args.mask_name, log=_note) if args.val else None
    except (OSError, ValueError, OutputBuildError) as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    if not any(not c.negative for c in cases):
        return _fail("No training case found: give DICOM series with SEG files, or NIfTI image + mask folders.", EXIT_NO_DATA)
    _note(f"Training on {len(cases)} case(s): " + ", ".join(f"{c.name} ({c.kind}{', negative' if c.negative else ''})" for c in cases))
    try:
        result = train(cases, config, val_cases=val_cases, out=args.out, init=args.init, resume=args.resume,
                       name=args.name, version=args.version, progress=not args.no_progress, log=_note)
    except ModelWeightsError as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    if args.curve:
        plot_history(result.history, args.curve, title=f"{args.name} {args.version}")
        _note(f"Training curve written to {args.curve}")
    _note(f"Weights written to {args.out} ({result.seconds:.0f} s).")
    return EXIT_OK


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Score a weights file on cases with reference masks: Dice/F1, IoU, precision, recall, AP (paper's Table 2)."
    parser.add_argument("weights", metavar="WEIGHTS", type=Path, help="weights file to score")
    parser.add_argument("data", metavar="DATA", nargs="+", type=Path, help="folders/files: DICOM series + SEG, NIfTI folders or IMAGE:MASK pairs")
    parser.add_argument("--orientations", choices=("native", "all"), default="native",
                        help="native: DICOM series as acquired, NIfTI in all three; all: also reformats of DICOM series")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the network runs (default: auto, CUDA when present)")
    _add_data_arguments(parser)


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from dicom_node.imaging.network import ModelWeightsError, load_weights, resolve_device
    from dicom_node.outputs.common import OutputBuildError
    from dicom_node.training.data import discover_cases
    from dicom_node.training.evaluate import evaluate_case
    from dicom_node.training.metrics import format_table, overall

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        network, info = load_weights(args.weights, resolve_device(args.device))
    except (ModelWeightsError, RuntimeError) as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    try:
        cases = [c for c in discover_cases(args.data, mask_name=args.mask_name, log=_note) if not c.negative]
    except (OSError, ValueError, OutputBuildError) as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    if not cases:
        return _fail("No case with a reference mask found.", EXIT_NO_DATA)
    per_series: dict[str, dict[str, float]] = {}
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    for case in (tqdm(cases, desc="evaluate", disable=args.json, file=sys.stderr) if tqdm else cases):
        per_series.update(evaluate_case(network, info, case, axes=args.orientations))
    total = overall(per_series)
    if args.json:
        json.dump({"model": {"name": info.name, "version": info.version}, "reference": "masks given (deepbet's in the shipped data): a reference, not ground truth",
                   "series": per_series, "overall": total}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"{info.name} {info.version} on {len(per_series)} series (metrics vs the given reference masks)")
        print(format_table(per_series, total))
    return EXIT_OK


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
