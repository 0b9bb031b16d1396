"""Segmentation metrics as in the paper's Table 2: Dice (= F1), IoU, precision, recall, AP.

Counts are pixel-wise over a whole series (3D), so a series is one sample; ``overall`` pools the
pixels of all series (micro average) and also reports the mean over series. Average precision is
the area under the pixel-wise precision-recall curve of the network's brain probabilities, as
step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over descending score thresholds (scikit-learn's
``average_precision_score``); with hard scores (0/1) it is computed from that single threshold.
Scores are against a reference mask (deepbet's in this project), not against ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

METRIC_NAMES = ("dice", "iou", "precision", "recall", "ap")


@dataclass(frozen=True)
class Counts:
    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def confusion(pred: np.ndarray, ref: np.ndarray) -> Counts:
    p = np.asarray(pred, dtype=bool).ravel()
    r = np.asarray(ref, dtype=bool).ravel()
    if p.shape != r.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape.")
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(r)) - tp
    return Counts(tp, fp, fn, p.size - tp - fp - fn)


def _ratio(num: float, den: float, empty: float = 1.0) -> float:
    return float(num) / float(den) if den else empty


def scores(counts: Counts) -> dict[str, float]:
    """Dice, IoU, precision, recall from counts (1.0 when both masks are empty)."""
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp, empty=1.0 if fn == 0 else 0.0),
        "recall": _ratio(tp, tp + fn),
    }


def average_precision(probabilities: np.ndarray, ref: np.ndarray) -> float:
    """Area under the precision-recall curve of ``probabilities`` against the bool ``ref``."""
    s = np.asarray(probabilities, dtype=np.float32).ravel()
    r = np.asarray(ref, dtype=bool).ravel()
    positives = int(r.sum())
    if positives == 0:
        return float("nan")
    # Histogram the scores of positives and of all pixels on exact distinct values when few,
    # else on 4096 bins (exact for quantised network outputs, <1e-3 off otherwise).
    uniq = np.unique(s) if s.size <= 5_000_000 or np.unique(s[:: max(1, s.size // 100_000)]).size < 4096 else None
    if uniq is not None and uniq.size <= 65536:
        idx = np.searchsorted(uniq, s)
        n_bins = uniq.size
    else:
        idx = np.clip((s * 4096).astype(np.int64), 0, 4095)
        n_bins = 4096
    pos = np.bincount(idx[r], minlength=n_bins)[::-1]
    tot = np.bincount(idx, minlength=n_bins)[::-1]
    tp = np.cumsum(pos)
    predicted = np.cumsum(tot)
    keep = tot > 0
    precision = tp[keep] / predicted[keep]
    recall = tp[keep] / positives
    recall_prev = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - recall_prev) * precision))


def series_metrics(pred: np.ndarray, ref: np.ndarray, probabilities: np.ndarray | None = None) -> dict[str, float]:
    """Table-2 metrics of one series (AP from ``probabilities`` when given, else from ``pred``)."""
    counts = confusion(pred, ref)
    out = scores(counts)
    out["ap"] = average_precision(probabilities if probabilities is not None else pred, ref)
    out["end_dice"] = end_slices_dice(pred, ref)
    out.update({"tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "tn": counts.tn})
    return out


def overall(per_series: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Pooled (micro) Dice/IoU/precision/recall over all series' pixels, and means over series."""
    rows = list(per_series.values())
    if not rows:
        return {}
    total = Counts(0, 0, 0, 0)
    for row in rows:
        total = total + Counts(int(row["tp"]), int(row["fp"]), int(row["fn"]), int(row["tn"]))
    out = scores(total)
    aps = [float(row["ap"]) for row in rows if np.isfinite(row.get("ap", float("nan")))]
    out["ap"] = float(np.mean(aps)) if aps else float("nan")
    for name in METRIC_NAMES:
        values = [float(row[name]) for row in rows if np.isfinite(row.get(name, float("nan")))]
        out[f"mean_{name}"] = float(np.mean(values)) if values else float("nan")
    ends = [float(row["end_dice"]) for row in rows if np.isfinite(row.get("end_dice", float("nan")))]
    out["end_dice"] = float(np.mean(ends)) if ends else float("nan")  # a mean over series: slices do not pool
    out["series"] = len(rows)
    return out


def end_slices_dice(pred: np.ndarray, ref: np.ndarray, fraction: float = 0.1) -> float:
    """Mean per-slice Dice of the slices in the first and last ``fraction`` of the reference brain's
    extent along axis 0 (the ends of the brain: skull base and vertex in an axial view, the lateral
    edges in a sagittal one). NaN when the reference holds no brain.

    A slice counts from its index: with the brain on slices 10..109, fraction 0.1 takes 10..19 and
    100..109. A slice whose reference and prediction are both empty cannot occur inside the extent.
    """
    if np.ndim(ref) != 3:
        return float("nan")  # not a stack of slices
    present = np.flatnonzero(np.asarray(ref, dtype=bool).any(axis=(1, 2)))
    if present.size == 0:
        return float("nan")
    first, last = int(present[0]), int(present[-1])
    width = max(1, int(round((last - first + 1) * fraction)))
    chosen = sorted(set(range(first, first + width)) | set(range(last - width + 1, last + 1)))
    return float(np.mean([scores(confusion(pred[z], ref[z]))["dice"] for z in chosen]))


def batch_dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of a batch of slices taken together (used for the per-epoch curve)."""
    return scores(confusion(pred, ref))["dice"]


def format_table(per_series: Mapping[str, Mapping[str, float]], total: Mapping[str, float] | None = None) -> str:
    """A plain-text table: one row per series, then the overall row."""
    header = f"{'series':40s} " + " ".join(f"{n:>9s}" for n in ("dice/f1", "iou", "precision", "recall", "ap", "end dice"))
    lines = [header, "-" * len(header)]
    rows: Iterable[tuple[str, Mapping[str, float]]] = list(per_series.items())
    if total:
        rows = [*rows, ("overall (pooled pixels)", total)]
    for name, row in rows:
        lines.append(f"{name[:40]:40s} " + " ".join(f"{float(row.get(n, float('nan'))):9.4f}" for n in (*METRIC_NAMES, "end_dice")))
    return "\n".join(lines)


__all__ = ["Counts", "confusion", "scores", "average_precision", "series_metrics", "end_slices_dice", "overall", "batch_dice", "format_table", "asdict"]
