"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one warm-up call (CUDA kernels, ONNX export)."""
    return best_of_interleaved(repeats, {"work": work})["work"]


def best_of_interleaved(repeats: int, works: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds of the fastest call of each of ``works``, run in turn ``repeats`` times after one
    warm-up call each. A ratio of two works timed in turn is not skewed by the shared machine
    being slow while one of them ran and fast while the other did."""
    import torch

    for work in works.values():
        work()
    times: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    return {name: min(seconds) for name, seconds in times.items()}
