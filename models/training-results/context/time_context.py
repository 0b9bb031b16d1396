"""CPU time of the node's network pass (three views, every third grid slice) on the Siemens
series: the shipped 1-channel network against a 3-channel context network, timed in turn.

    .venv/bin/python models/training-results/context/time_context.py CONTEXT_WEIGHTS.pt [ROUNDS]

Only ``predict_probabilities`` is timed (normalising, the views, the network, the fusion): the
steps after it do not depend on the input channels.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from bench.timing import best_of_interleaved  # noqa: E402
from dicom_node.imaging.loading import load_series, scan_folder, volume_directions  # noqa: E402
from dicom_node.imaging.segmenter import Segmenter, volume_slice_spacing  # noqa: E402
from dicom_node.models.shipped import default_weights_path  # noqa: E402
from dicom_node.series.pipeline import warm_up  # noqa: E402

SERIES = REPO.parent / "shared" / "data" / "dicom" / "sag-t1-siemens-skyra"


def main(context_weights: Path, rounds: int) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    (paths,) = scan_folder(SERIES).series.values()
    series = load_series(paths)
    spacing, depth, directions = series.slices[0].pixel_spacing, volume_slice_spacing(series), volume_directions(series)
    segmenters = {"1 channel (1.4.2)": Segmenter.from_weights(default_weights_path(), "cpu"), "3 channels, 3 mm": Segmenter.from_weights(context_weights, "cpu")}
    warm_up()
    for round_ in range(rounds):
        times = best_of_interleaved(3, {name: (lambda s=s: s.predict_probabilities(series.pixels, spacing, depth, directions)) for name, s in segmenters.items()})
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in times.items()), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3)
