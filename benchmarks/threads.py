"""Benchmark: `vitbench run --suite smoke` end to end with the default threads vs `--threads 1`, under load.

Run by hand from the repo root:  PYTHONPATH=. python benchmarks/threads.py [--reps 3] [--load 1]
Starts `--load` busy-loop processes (other work sharing the cores), then runs the smoke suite in fresh
folders (no feature cache, no records) alternating the variants, `--reps` times each:
- `default`: no --threads, OMP_NUM_THREADS / OMP_WAIT_POLICY / KMP_BLOCKTIME removed from the environment, so
  vitbench picks the thread count and the OpenMP wait policy itself;
- `1-thread`: `--threads 1`;
- `spinning` (only with `--variants ...,spinning`): the default thread count with OMP_WAIT_POLICY=ACTIVE,
  i.e. idle OpenMP threads busy-wait (what a bare `import torch` risks on a shared machine).
Prints each run's wall time, the medians, the largest metric difference between variants (threads may only
change float rounding), and ends with `ratio_default_vs_1thread=<median default / median 1-thread>`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def variant_env_args(name: str) -> tuple[dict[str, str], list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    if name == "1-thread":
        return env, ["--threads", "1"]
    if name == "spinning":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    return env, []


def smoke_once(name: str, suite: str) -> tuple[float, dict[str, float]]:
    env, extra = variant_env_args(name)
    with tempfile.TemporaryDirectory(prefix="vitbench-threads-") as tmp:
        out, cache = Path(tmp) / "results", Path(tmp) / "cache"
        cmd = [sys.executable, "-m", "vitbench.cli", "run", "--suite", suite, "--out", str(out),
               "--cache-dir", str(cache), "--no-report", *extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"{name}: `{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        metrics, threads = {}, set()
        for path in out.rglob("*.json"):
            rec = json.loads(path.read_text())
            threads.add(json.dumps(rec["hardware"].get("threads"), sort_keys=True))
            for metric, value in rec["metrics"].items():
                metrics[f"{rec['key']}:{metric}"] = value
    print(f"  {name:9s} {wall:7.1f} s  ({len(metrics)} metrics; recorded threads {', '.join(sorted(threads))})",
          flush=True)
    return wall, metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--load", type=int, default=1, help="busy-loop processes running meanwhile")
    ap.add_argument("--variants", default="default,1-thread", help="comma-separated: default, 1-thread, spinning")
    ap.add_argument("--suite", default="smoke")
    args = ap.parse_args()
    variants = args.variants.split(",")
    print(f"smoke end to end, {args.reps} interleaved reps of {variants}, {args.load} busy-loop process(es); "
          f"cores available: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}",
          flush=True)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    times: dict[str, list[float]] = {v: [] for v in variants}
    metrics: dict[str, dict[str, float]] = {}
    try:
        for rep in range(args.reps):
            for name in variants if rep % 2 == 0 else variants[::-1]:  # alternate the order: drifting load cancels
                wall, m = smoke_once(name, args.suite)
                times[name].append(wall)
                metrics.setdefault(name, m)
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    med = {v: statistics.median(t) for v, t in times.items()}
    for v in variants:
        print(f"median {v:9s} {med[v]:7.1f} s  (runs: {', '.join(f'{t:.1f}' for t in times[v])})")
    base = metrics[variants[0]]
    for v in variants[1:]:
        common = base.keys() & metrics[v].keys()
        gap = max((abs(base[k] - metrics[v][k]) for k in common), default=float("nan"))
        print(f"max |metric difference| {variants[0]} vs {v}: {gap:.4f} over {len(common)} metrics")
    if "default" in med and "1-thread" in med:
        print(f"ratio_default_vs_1thread={med['default'] / med['1-thread']:.2f}")


if __name__ == "__main__":
    main()
