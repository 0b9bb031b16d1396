"""``dicom-node segment INPUT_DIR --out OUTPUT_DIR``: segment every MR series in a folder, offline.

Exit status: 0 when at least one series was written; 1 when nothing could be segmented (every
file skipped or refused, each reason printed); 2 when no usable model weights exist or the
arguments are wrong. Messages name series by a short hash, never by patient data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from dicom_node.config import Settings
from dicom_node.imaging.loading import SeriesLoadError, scan_folder
from dicom_node.imaging.pseudocolor import PAPER_BINS, PseudocolorSettings
from dicom_node.uids import short_hash

EXIT_OK = 0
EXIT_NOTHING_DONE = 1
EXIT_UNUSABLE = 2
JOB_VERSION = "segment-cli"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Segment the brain in every MR series under INPUT_DIR; write SEG and pseudocolor SC."
    parser.add_argument("input_dir", metavar="INPUT_DIR", type=Path, help="folder of DICOM files (searched recursively)")
    parser.add_argument("--out", dest="out_dir", metavar="OUTPUT_DIR", type=Path, required=True, help="where SEG and SC files go (one subfolder per series)")
    parser.add_argument("--preview", metavar="PNG", type=Path, help="write an overlay picture (one per series, suffixed when several)")
    parser.add_argument("--weights", metavar="PATH", type=Path, help="model weights file (default: DICOM_NODE_MODEL_WEIGHTS or the shipped model)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="where to run the network (default: auto)")
    parser.add_argument("--bins", type=int, default=PAPER_BINS, help=f"pseudocolor gray-level bins (default: {PAPER_BINS}, the paper's)")
    parser.add_argument("--colormap", default="JET", help="OpenCV colormap name for the pseudocolor (default: JET)")
    parser.add_argument("--multiframe-sc", action="store_true", help="write the pseudocolor series as one multi-frame SC object")
    parser.add_argument("--all-series", action="store_true",
                        help="segment every series, not only those the selection rules (DICOM_NODE_SERIES_RULES) pick")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # torch and highdicom load here, not at import: `dicom-node --help` and `jobs` stay quick.
    from dicom_node.imaging.network import ModelWeightsError
    from dicom_node.imaging.preview import write_preview
    from dicom_node.imaging.segmenter import get_segmenter
    from dicom_node.models.shipped import configured_weights
    from dicom_node.outputs.common import OutputBuildError
    from dicom_node.series.pipeline import process_series, uid_seed_for, warm_up
    from dicom_node.series.selection import RulesError, load_rules

    try:
        colors = PseudocolorSettings(bins=args.bins, colormap=args.colormap)
    except ValueError as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    weights = args.weights or configured_weights(settings)
    try:
        segmenter = get_segmenter(weights, args.device)
    except (ModelWeightsError, RuntimeError, ValueError) as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    try:
        rules = load_rules(settings.series_rules)
    except RulesError as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    try:
        scan = scan_folder(args.input_dir)
    except SeriesLoadError as exc:
        return _fail(str(exc), EXIT_UNUSABLE)
    warm_up()  # as the node does at start-up

    for skipped in scan.skipped:
        tqdm.write(f"skipped {skipped.path}: {skipped.reason}", file=sys.stderr)
    done = 0
    refused: list[str] = []
    several = len(scan.series) > 1
    bar = tqdm(scan.series.items(), desc="segment", unit="series", file=sys.stderr, disable=None)
    for series_uid, paths in bar:
        name = short_hash(series_uid)
        bar.set_postfix_str(f"series {name}")
        preview = _preview_path(args.preview, name, several)
        try:
            result = process_series(
                paths,
                args.out_dir / name,
                segmenter,
                uid_seed_for(series_uid, JOB_VERSION, segmenter.info.version),
                rules=None if args.all_series else rules,
                pseudocolor_settings=colors,
                multiframe_sc=args.multiframe_sc,
                with_preview=preview is not None,
            )
            if preview is not None and result.preview is not None:
                write_preview(preview, result.preview)
        except (SeriesLoadError, OutputBuildError, OSError) as exc:
            refused.append(f"series {name}: {exc}")
            tqdm.write(f"refused series {name}: {exc}", file=sys.stderr)
            continue
        if result.state != "segmented":
            refused.append(f"series {name}: {result.reason}")
            tqdm.write(f"{result.state} series {name}: {result.reason}", file=sys.stderr)
            continue
        done += 1
        volume = f"{result.brain_volume_ml:.0f} ml" if result.brain_volume_ml is not None else "unknown volume"
        notes = f" ({'; '.join(result.notes)})" if result.notes else ""
        tqdm.write(
            f"series {name}: {result.n_slices} slices, brain {volume}, {result.total_seconds:.1f} s, "
            f"{len(result.seg_paths)} SEG + {len(result.sc_paths)} SC -> {args.out_dir / name}{notes}"
        )
    bar.close()
    if done == 0:
        reasons = len(scan.skipped) + len(refused)
        return _fail(
            f"Nothing could be segmented in {args.input_dir}: {len(scan.series)} series found, "
            f"{reasons} files or series skipped or refused (reasons above).",
            EXIT_NOTHING_DONE,
        )
    return EXIT_OK


def _preview_path(preview: Path | None, name: str, several: bool) -> Path | None:
    if preview is None or not several:
        return preview
    return preview.with_name(f"{preview.stem}-{name}{preview.suffix or '.png'}")


def _fail(message: str, code: int) -> int:
    print(f"dicom-node segment: error: {message}", file=sys.stderr)
    return code
