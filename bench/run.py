"""``make bench``: run every benchmark module, print one table, write the results files.

A benchmark module is ``bench/ingest.py``, ``bench/e2e.py`` or any ``bench/bench_*.py``. It exposes
``run(out_dir: Path) -> dict[str, float | str]`` returning named metrics (a string value says why a
metric was skipped), and may expose ``METRICS = {name: (goal, peer)}`` for the table. A module
without ``run`` is run as ``python -m bench.<module>`` in a subprocess; if the last line of its
output is a JSON object, that object is taken as its metrics.

Writes ``bench/out/results.json`` (git-ignored, this run) and ``bench/results.json`` (committed:
the latest numbers with the date, the machine's ``nproc`` and the commit).

    python -m bench.run                 # everything
    python -m bench.run --only ingest   # some modules; results of the others are kept in bench/results.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
COMMITTED = BENCH / "results.json"
# `make bench` must finish in 15 minutes: a module run as a subprocess gets what is left of this.
BUDGET_S = int(os.environ.get("BENCH_BUDGET_S", "840"))
_STARTED = time.monotonic()

# Goals and peers for metrics whose module does not say (issue 6).
DEFAULT_METRICS: dict[str, tuple[str, str]] = {
    "segment_ratio_vs_deepbet": ("<= 1.0", "deepbet brain extraction, CPU"),
    "e2e_latency_s": ("", "Orthanc holds SEG + SC, minus quiet period"),
    "retrain_round_cpu_s": ("minutes", "fine-tune + scoring, one 192-slice series, default settings"),
    "retrain_speedup_cuda_vs_cpu": ("> 1", "the same round on this machine's CPU"),
}


def discover() -> list[str]:
    names = [name for name in ("ingest", "e2e") if (BENCH / f"{name}.py").exists()]
    names += sorted(p.stem for p in BENCH.glob("bench_*.py"))
    return names


def _last_json_object(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def run_module(name: str) -> tuple[dict[str, Any], dict[str, tuple[str, str]], str]:
    """Metrics, goals and a one-line note on how the module ran."""
    started = time.monotonic()
    source = (BENCH / f"{name}.py").read_text(errors="replace")
    if "def run(" not in source:  # don't import (torch, ...) just to find there is no run()
        return _run_subprocess(name, {}, started)
    try:
        module = importlib.import_module(f"bench.{name}")
    except Exception as exc:
        traceback.print_exc()
        return {f"{name}_error": f"import failed: {type(exc).__name__}: {exc}"}, {}, "import failed"
    goals = dict(getattr(module, "METRICS", {}) or {})
    runner = getattr(module, "run", None)
    if callable(runner):
        try:
            metrics = dict(runner(OUT))
        except Exception as exc:
            traceback.print_exc()
            metrics = {f"{name}_error": f"{type(exc).__name__}: {exc}"}
        return metrics, goals, f"run() in {time.monotonic() - started:.0f}s"
    return _run_subprocess(name, goals, started)


def _run_subprocess(name: str, goals: dict[str, tuple[str, str]], started: float) -> tuple[dict[str, Any], dict[str, tuple[str, str]], str]:
    """No run(): run the module as a script and keep what it says."""
    cmd = [sys.executable, "-m", f"bench.{name}"]
    print(f"[bench.run] bench/{name}.py has no run(out_dir); running `{' '.join(cmd[1:])}` as a subprocess", file=sys.stderr, flush=True)
    timeout = max(60, int(BUDGET_S - (time.monotonic() - _STARTED)))
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {f"{name}_error": f"skipped: subprocess ran past {timeout}s (BENCH_BUDGET_S={BUDGET_S})"}, goals, "subprocess timed out"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.log").write_text(proc.stdout + proc.stderr)
    sys.stderr.write(proc.stderr[-4000:])
    parsed = _last_json_object(proc.stdout)
    note = f"subprocess (no run()), rc={proc.returncode}, {time.monotonic() - started:.0f}s, output in bench/out/{name}.log"
    if proc.returncode != 0:
        return {f"{name}_error": f"subprocess exited with {proc.returncode} (see bench/out/{name}.log)"}, goals, note
    if parsed is None:
        return {f"{name}_status": "ran as a subprocess; no JSON metrics on its last line (see bench/out/" + f"{name}.log)"}, goals, note
    return parsed, goals, note


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def print_table(rows: list[dict[str, str]]) -> None:
    """The table; long values (why something was skipped) go below it as numbered notes."""
    headers = ["metric", "value", "goal", "peer"]
    notes = []
    shown = []
    for r in rows:
        if len(r["value"]) > 24:
            notes.append(f"[{len(notes) + 1}] {r['metric']}: {r['value']}")
            r = {**r, "value": f"see [{len(notes)}]"}
        shown.append(r)
    widths = {h: max([len(h), *(len(r[h]) for r in shown)]) for h in headers}
    print("  ".join(h.ljust(widths[h]) for h in headers).rstrip())
    print("  ".join("-" * widths[h] for h in headers))
    for r in shown:
        print("  ".join(r[h].ljust(widths[h]) for h in headers).rstrip())
    for note in notes:
        print(note)


def cpu_description() -> str:
    """The CPU model and the vector extensions the network's speed depends on (shared machines differ)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return f"{model} ({', '.join(f for f in wanted if f in flags) or 'no avx2'})"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="MODULE", help="run only these modules (e.g. ingest bench_segment)")
    args = parser.parse_args(argv)

    modules = discover()
    if args.only:
        unknown = sorted(set(args.only) - set(modules))
        if unknown:
            parser.error(f"unknown benchmark modules {unknown}; have {modules}")
        modules = [m for m in modules if m in args.only]

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    metrics: dict[str, Any] = {}
    goals: dict[str, tuple[str, str]] = dict(DEFAULT_METRICS)
    modules_run: dict[str, str] = {}
    for name in modules:
        print(f"[bench.run] {name} ...", file=sys.stderr, flush=True)
        m, g, note = run_module(name)
        metrics.update(m)
        goals.update(g)
        modules_run[name] = note
        print(f"[bench.run] {name}: {note}", file=sys.stderr, flush=True)

    rows = [
        {"metric": k, "value": _fmt(v), "goal": goals.get(k, ("", ""))[0], "peer": goals.get(k, ("", ""))[1]}
        for k, v in metrics.items()
    ]
    # Headline ratios first, then the rest in the order the modules gave them.
    rows.sort(key=lambda r: 0 if r["goal"] else 1)
    print()
    print_table(rows)
    elapsed = round(time.monotonic() - started, 1)
    print(f"\n{len(modules)} module(s) in {elapsed}s; results in bench/results.json and bench/out/results.json")

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "nproc": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": cpu_description(),
        "python": platform.python_version(),
        "elapsed_s": elapsed,
        "modules": modules_run,
        "metrics": metrics,
        "goals": {k: {"goal": goals[k][0], "peer": goals[k][1]} for k in metrics if k in goals},
    }
    (OUT / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    committed = result
    if args.only and COMMITTED.exists():  # keep the other modules' latest numbers
        try:
            previous = json.loads(COMMITTED.read_text())
            committed = {**result, "metrics": {**previous.get("metrics", {}), **metrics},
                         "goals": {**previous.get("goals", {}), **result["goals"]},
                         "modules": {**previous.get("modules", {}), **modules_run}}
        except ValueError:
            pass
    COMMITTED.write_text(json.dumps(committed, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
