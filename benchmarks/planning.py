"""Planning at study scale: `--dry-run` of ~5,000 cells against `validate`, and the resume check of 100,000 cells.

Run by hand: `python benchmarks/planning.py` (add `--records 20000` for a shorter resume part). Prints, among
its last lines, `ratio_dry_run_vs_validate=X` (target <= 1.5) and `resume_check_s=Y` for the 100,000-cell
resume check (target: seconds), with the per-cell reference (`results.is_done` per cell, what `plan` did
before) measured in the same run. Wall times are the best of `--repeat` runs; CPU times (user + sys of the
child process) are printed beside them because other load on a shared machine inflates wall time only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed_cli(args: list[str], repeat: int, cwd: Path) -> tuple[float, float, str]:
    """(best wall s, best CPU s, stdout) of `python -m vitbench.cli ARGS`."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    walls, cpus, out = [], [], ""
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vitbench.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"`vitbench {' '.join(args)}` failed: {proc.stderr.strip()}")
        out = proc.stdout
    return min(walls), min(cpus), out


def dry_run_vs_validate(repeat: int, work: Path) -> None:
    from vitbench.models import list_models

    # the registry's models whose patch divides the paper suite's 384 px (ViT-H/14 needs 378 or 392 there)
    models = ",".join(m.name for m in list_models() if 384 % (getattr(m, "patch_size", None) or 16) == 0)
    v_wall, v_cpu, _ = timed_cli(["validate", "paper"], repeat, work)
    d_wall, d_cpu, out = timed_cli(["run", "--suite", "paper", "--model", models, "--dry-run", "-o", str(work / "empty")], repeat, work)
    first = out.strip().splitlines()[0]
    print(f"(a) {first}")
    print(f"    validate paper: {v_wall:.2f} s wall, {v_cpu:.2f} s CPU; run --dry-run: {d_wall:.2f} s wall, {d_cpu:.2f} s CPU; "
          f"dry-run output {len(out) / 1e3:.1f} kB")
    print(f"ratio_dry_run_vs_validate={d_wall / v_wall:.2f} (CPU: {d_cpu / v_cpu:.2f})")


def resume_check(n_records: int, work: Path) -> None:
    from vitbench import planner, results
    from vitbench.cells import Cell
    from vitbench.methods.fewshot import FewshotParams
    from vitbench.suites import SourceSpec, TaskSpec

    task = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:1200]", "test": "all[1200:]"})
    base = {**FewshotParams().key_params(), "l2_grid": []}
    per_seed = 1000
    t0 = time.perf_counter()
    cells = [Cell("bench", task, "vit_ti16", "none", "fewshot", {**base, "shots": 1 + i % per_seed}, i // per_seed, 32)
             for i in range(n_records)]
    keys_s = _time(lambda: [c.key for c in cells])
    build_s = time.perf_counter() - t0
    out = work / "records"
    template = _template_record()
    t0 = time.perf_counter()
    folder = results.record_dir(out, cells[0])
    folder.mkdir(parents=True, exist_ok=True)
    for c in cells:  # plain writes: the atomic fsync'd writer would make this part minutes long
        (folder / f"{c.key}.json").write_text(json.dumps({**template, "key": c.key}, indent=2, sort_keys=True) + "\n")
    write_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in list(folder.iterdir())[:100]) / 100
    corrupt = cells[::1000]
    for c in corrupt:  # truncated records must not count as done
        p = results.record_path(out, c)
        p.write_text(p.read_text()[:200])
    plans = []
    for _ in range(2):  # first check reads every record; the second uses the resume index of the first
        fresh = [Cell(c.suite, c.task, c.model, c.weights, c.method, c.params, c.seed, c.img_size) for c in cells]  # keys uncached
        t0 = time.perf_counter()
        the_plan = planner.plan(fresh, out)
        plans.append(time.perf_counter() - t0)
        assert len(the_plan.todo) == len(corrupt) and len(the_plan.done) == n_records - len(corrupt), (len(the_plan.todo), len(corrupt))
    first_s, plan_s = plans
    ref_cells = cells[: max(1, n_records // 10)]
    ref_s = _time(lambda: [results.is_done(out, c) for c in ref_cells]) * (n_records / len(ref_cells))
    print(f"(b) {n_records} cells, {n_records} records of {size / 1e3:.1f} kB ({len(corrupt)} truncated): cells built in "
          f"{build_s:.2f} s (keys {keys_s:.2f} s), records written in {write_s:.1f} s")
    print(f"    plan (keys + dependency order + resume check): {first_s:.2f} s reading every record, {plan_s:.2f} s "
          f"with the resume index; per-cell is_done reference (extrapolated from {len(ref_cells)} cells): {ref_s:.2f} s")
    print(f"resume_check_s={plan_s:.2f} first_check_s={first_s:.2f} ratio_vs_per_cell={ref_s / plan_s:.2f}")


def _template_record() -> dict:
    """A record shaped like a real few-shot record (about 5 kB)."""
    return {
        "schema_version": 1, "suite": "bench", "task": "digits", "method": "fewshot", "model": "vit_ti16", "seed": 0,
        "metrics": {"top1": 0.5}, "cell": {"task": {"name": "digits", "metric": "top1"}},
        "details": {"acc_per_l2": {repr(2.0**e): 0.5 for e in range(-10, 20)}, "timings": {"features_s": 0.1, "solve_s": 0.01},
                    "short_classes": [], "l2_grid": [2.0**e for e in range(-10, 20)]},
        "provenance": {"weights": {"weights_id": "none", "weights_sha256": "0" * 64},
                       "preprocessing": {"size": 32, "resize": "squash_crop", "crop_pct": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3},
                       "train": {"n": 1200, "fingerprint": "f" * 64}, "test": {"n": 597, "fingerprint": "e" * 64},
                       "feature_cache": {"train": {"path": "/" + "x" * 120, "key": "k" * 24, "hit": True, "shape": [1200, 192]},
                                         "test": {"path": "/" + "y" * 120, "key": "k" * 24, "hit": True, "shape": [597, 192]}}},
        "versions": {"vitbench": "0.1", "python": "3.11", "torch": "2", "timm": "1", "numpy": "2"},
        "hardware": {"platform": "Linux-" + "z" * 60, "cpu_count": 2, "device": "cpu"}, "wall_time_s": 0.01,
        "timestamp": "2026-01-01T00:00:00+00:00",
    }


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitbench-planning-"))
    try:
        dry_run_vs_validate(args.repeat, work)
        resume_check(args.records, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
