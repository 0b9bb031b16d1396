"""Segmentation speed on the Siemens series (192 slices): dicom-node against deepbet, same run.

    .venv/bin/python bench/bench_segment.py [--device cpu|cuda] [--repeats 3] [--series DIR] [--weights FILE]

Rows: dicom-node segmentation alone (network + post-processing), dicom-node whole series (load,
segment, pseudocolor, SEG, SC, write), deepbet on a NIfTI of the same series, and deepbet plus
the DICOM load it needs. The shipped model (or ``--weights``): the network's
speed does not depend on its weights, but post-processing, pseudocolor and SEG time depend on the
mask, and a random network's mask is noise of any size. deepbet (``pip install deepbet``) is optional; without it its rows say so. Prints a
table and writes bench/out/segment.json. Best of ``--repeats`` after one warm-up; the whole series
and deepbet are run in turn, so that their ratio compares runs of the same moment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.timing import best_of, best_of_interleaved  # noqa: E402
from dicom_node.imaging.loading import MRSeries, load_series, ras_affine, scan_folder  # noqa: E402
from dicom_node.imaging.segmenter import get_segmenter  # noqa: E402
from dicom_node.models.shipped import default_weights_path  # noqa: E402
from dicom_node.series.pipeline import process_series, warm_up  # noqa: E402

DEFAULT_SERIES = REPO.parent / "shared" / "data" / "dicom" / "sag-t1-siemens-skyra"


def to_nifti(series: MRSeries, path: Path) -> Path:
    """The series as NIfTI (RAS affine from the DICOM geometry), the input deepbet reads."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(series.pixels.transpose(2, 1, 0), ras_affine(series)), path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=default_weights_path(), help="a weights file to time instead of the shipped one")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "segment.json")
    args = parser.parse_args()

    torch.set_num_threads(os.cpu_count() or 1)
    (paths,) = scan_folder(args.series).series.values()
    work = Path(tempfile.mkdtemp(prefix="bench-segment-"))
    segmenter = get_segmenter(args.weights, args.device)
    warm_up()  # as the node does once the model is loaded (its start-up heap out of the collector's reach)
    arch = segmenter.info.arch
    series = load_series(paths)
    n = series.n_slices
    rows: list[dict] = []

    def add(name: str, seconds: float | None, note: str = "") -> None:
        rows.append({"name": name, "seconds": seconds, "slices_per_s": n / seconds if seconds else None, "note": note})

    add("dicom-node load (DICOM -> sorted stack)", best_of(args.repeats, lambda: load_series(paths)))
    add(f"dicom-node segment ({arch.encoder_name} {arch.input_size}px, {segmenter.runtime})", best_of(args.repeats, lambda: segmenter.segment(series)))
    runs = iter(range(args.repeats + 1))
    # Each run writes to a new folder, as each job does: renaming over the files of an earlier
    # run makes ext4 flush them (auto_da_alloc), which no job pays.
    works = {"node": lambda: process_series(paths, work / f"out-{next(runs)}", segmenter, "bench-seed")}
    try:
        from deepbet import BrainExtraction
    except ImportError:
        pass  # its rows say so below
    else:
        nifti = to_nifti(series, work / "in.nii.gz")
        bet = BrainExtraction(no_gpu=args.device == "cpu")
        works["deepbet"] = lambda: bet.run(str(nifti), mask_path=str(work / "mask.nii.gz"))
    best = best_of_interleaved(args.repeats, works)  # in turn: the ratio of two runs of the same moment
    add("dicom-node whole series (load+segment+pseudocolor+SEG+SC+write)", best["node"])
    load_seconds = rows[0]["seconds"]
    if "deepbet" not in best:
        add("deepbet", None, "not installed: pip install deepbet")
    else:
        add("deepbet (NIfTI in, mask out)", best["deepbet"])
        add("deepbet + dicom-node DICOM load", best["deepbet"] + load_seconds, "deepbet reads no DICOM")

    whole = rows[2]["seconds"]
    peer = next((r["seconds"] for r in rows if r["name"].startswith("deepbet (") and r["seconds"]), None)
    print(f"\n{n} slices of {args.series.name}, {args.device}, {os.cpu_count()} CPU threads, torch {torch.__version__}\n")
    print(f"{'stage':<68} {'seconds':>8} {'slices/s':>9}")
    for row in rows:
        seconds = f"{row['seconds']:.2f}" if row["seconds"] else "-"
        rate = f"{row['slices_per_s']:.1f}" if row["slices_per_s"] else "-"
        print(f"{row['name']:<68} {seconds:>8} {rate:>9}  {row['note']}")
    ratio = whole / peer if peer else None
    if ratio:
        print(f"\nwhole series / deepbet = {ratio:.2f} (goal <= 1.0); including deepbet's DICOM load: {whole / (peer + load_seconds):.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "series": args.series.name,
                "slices": n,
                "device": args.device,
                "threads": os.cpu_count(),
                "machine": platform.machine(),
                "torch": torch.__version__,
                "runtime": segmenter.runtime,
                "arch": arch.__dict__,
                "rows": rows,
                "whole_over_deepbet": ratio,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    segment_seconds = rows[1]["seconds"]
    # Last line: the metrics bench/run.py puts in the table and bench/results.json.
    print(json.dumps({
        "segment_ratio_vs_deepbet": round(ratio, 3) if ratio else "deepbet not installed",
        "segment_whole_series_s": round(whole, 3),
        "segment_network_slices_per_s": round(n / segment_seconds, 1),
        "segment_runtime": segmenter.runtime,
        "deepbet_s": round(peer, 3) if peer else "deepbet not installed",
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
