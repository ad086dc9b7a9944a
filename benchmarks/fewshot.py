"""Benchmark: few-shot LSR (vitbench vs big_vision's algorithm written plainly in numpy) and feature-cache reuse.

Run by hand from the repo root:  PYTHONPATH=. python benchmarks/fewshot.py [--quick] [--threads 1] [--device cuda]
(a) Synthetic features like pre-logits, K=100 classes, D=768, shots 1/5/10/25 (dual for 1 and 5 shots, primal
    for 10 and 25) x seeds, for the default single l2 (1024) and the 30-value grid (2^-10..2^19).
    Fair baseline: big_vision `big_vision/evaluators/fewshot_lsr.py` in float64 numpy, as plainly as written
    there: standardise the train subset and the test set, append the bias column, eigh once, then per l2 form
    W and predict. vitbench: `fewshot.lsr_fit` + `fewshot.classify` (one l2: Cholesky; grid: one eigh), with
    the standardisation folded into the weights. Each line names its precision (solve / prediction dtype).
    Baseline and vitbench alternate, `--reps` times; ratios are of medians. Ends with
    `ratio_vs_fair_single_l2=<x>` and `ratio_vs_fair_grid=<y>` (vitbench float64 vs the float64 baseline, whose
    predictions must be identical).
(b) Feature extraction on the embedded digits task with a random-init ViT-Ti/16 at 32 px: a whole sweep
    (4 shots x 3 seeds) extracts each split once; a second run with other seeds does no forward pass.
`--quick` (about a minute on 2 shared CPU cores): 2,000 test points, seed 0, 3 reps, no part (b).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from vitbench import fewshot as fs

# precision mode -> (solve dtype, prediction dtype), as `vitbench fewshot --precision` maps them
MODES = {"float64": ("float64", None), "mixed": ("float64", "float32"), "float32": ("float32", None)}


def synthetic(k=100, dim=768, per_class=40, n_test=10_000, seed=0):
    """Class blobs with per-dimension offsets/scales (like pre-logits), hard enough that l2 matters."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)).astype(np.float32) * 0.22
    scale = rng.uniform(0.3, 3.0, size=dim).astype(np.float32)
    offset = rng.normal(size=dim).astype(np.float32) * 5
    y_train = np.repeat(np.arange(k), per_class)
    y_test = rng.integers(0, k, size=n_test)

    def draw(y):
        return (centers[y] + rng.normal(size=(len(y), dim)).astype(np.float32)) * scale + offset

    return draw(y_train), y_train, draw(y_test), y_test


def fair_baseline(x_train, y_train, x_test, l2_regs, k) -> np.ndarray:
    """big_vision's fewshot_lsr in float64 numpy: standardise, bias 100, eigh once, W and argmax per l2."""
    x = x_train.astype(np.float64)
    mean, std = x.mean(0), x.std(0) + fs.STD_EPS
    xb = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=fs.BIAS_CONSTANT)
    xt = np.pad((x_test.astype(np.float64) - mean) / std, ((0, 0), (0, 1)), constant_values=fs.BIAS_CONSTANT)
    y = 2.0 * np.eye(k)[y_train] - 1.0
    if len(xb) >= xb.shape[1]:
        eigs, q = np.linalg.eigh(xb.T @ xb)
        lhs, rhs = q, q.T @ (xb.T @ y)
    else:
        eigs, q = np.linalg.eigh(xb @ xb.T)
        lhs, rhs = xb.T @ q, q.T @ y
    return np.stack([np.argmax(xt @ ((lhs / (eigs + l2)) @ rhs), axis=1) for l2 in l2_regs])


def subsets(y_train, shots, seeds, k):
    return [(n, s, idx) for s in seeds for n, idx in fs.sample_shots(y_train, shots, s, num_classes=k).items()]


def clock() -> float:
    """Process CPU time with one thread (immune to other jobs sharing the cores), else wall time."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def run_fair(data, cells, l2_regs, k):
    x_train, y_train, x_test, _ = data
    t0 = clock()
    preds = {(n, s): fair_baseline(x_train[idx], y_train[idx], x_test, l2_regs, k) for n, s, idx in cells}
    return clock() - t0, preds


def run_vitbench(data, cells, l2_regs, k, mode, device):
    x_train, y_train, x_test, _ = data
    solve, predict = MODES[mode]
    preds, solvers, redone = {}, set(), 0
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    t0 = clock()
    for n, s, idx in cells:
        clf = fs.lsr_fit(x_train[idx], y_train[idx], k, l2_regs, precision=solve, predict_precision=predict, device=device)
        preds[(n, s)] = fs.classify(clf, x_test)
        solvers.add(clf.solver.split(" ", 1)[1])
        solvers.add(f"{'certified float32' if clf.fast is not None else str(clf.weight.dtype)[6:]} prediction GEMM")
        redone += clf.rechecked
    sync()
    t = clock() - t0
    if redone:
        solvers.add(f"{100 * redone / (len(x_test) * len(cells) * len(l2_regs)):.2f}% of (row, l2) redone in float64")
    return t, preds, solvers


def part_a(args) -> tuple[float, float]:
    k, dim = 100, 768
    shots, seeds = [1, 5, 10, 25], ([0] if args.quick else [0, 1, 2])
    data = synthetic(k, dim, n_test=args.n_test or (2_000 if args.quick else 10_000))
    cells = subsets(data[1], shots, seeds, k)
    reps = args.reps or (3 if args.quick else 5)
    print(f"(a) K={k} D={dim} n_test={len(data[2])} shots={shots} seeds={seeds}; {reps} interleaved reps; "
          f"torch threads={torch.get_num_threads()} device={args.device}; times are "
          f"{'process CPU seconds' if torch.get_num_threads() == 1 else 'wall seconds'}", flush=True)
    headline = {}
    for label, l2_regs in (("single l2 (1024)", [fs.DEFAULT_L2]), ("30-value grid", list(fs.DEFAULT_L2_GRID))):
        run_fair(data, cells[:1], l2_regs, k), run_vitbench(data, cells[:1], l2_regs, k, "float64", args.device)  # warm-up
        times: dict[str, list[float]] = {"fair": [], **{m: [] for m in MODES}}
        preds, solvers = {}, {}
        for rep in range(reps):
            order = ["fair", *MODES] if rep % 2 == 0 else [*MODES][::-1] + ["fair"]  # alternate: drifting load cancels
            for name in order:
                if name == "fair":
                    t, p = run_fair(data, cells, l2_regs, k)
                else:
                    t, p, solvers[name] = run_vitbench(data, cells, l2_regs, k, name, args.device)
                times[name].append(t)
                preds.setdefault(name, p)
        fair = statistics.median(times["fair"])
        print(f"  {label}: fair baseline, numpy float64 (solve and predict): median {fair:.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times['fair'])})")
        for mode, (solve, predict) in MODES.items():
            t = statistics.median(times[mode])
            same = np.mean([np.mean(preds[mode][c] == preds["fair"][c]) for c in preds["fair"]])
            print(f"    vitbench --precision {mode:7s} (solve {solve}, predict {predict or solve}; "
                  f"{'; '.join(sorted(solvers[mode]))}): median {t:.2f} s, {fair / t:.2f}x, "
                  f"identical predictions {100 * same:.4f}%")
        headline[label] = fair / statistics.median(times["float64"])
        same64 = all(np.array_equal(preds["float64"][c], preds["fair"][c]) for c in preds["fair"])
        print(f"    float64 predictions identical to the fair baseline: {same64}")
    acc = {n: np.mean([fs.accuracy_per_l2(preds["float64"][(n, s)], data[3]).max() for s in seeds]) for n in shots}
    print("  best-l2 accuracy per shots (sanity):", {n: round(float(a), 3) for n, a in acc.items()})
    return headline["single l2 (1024)"], headline["30-value grid"]


def part_b(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vitbench import features
    from vitbench.cells import Cell, RunContext
    from vitbench.methods.fewshot import FewshotParams
    from vitbench.runners import fewshot as runner
    from vitbench.suites import SourceSpec, TaskSpec

    task = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),),
                    splits={"train": "all[:1200]", "test": "all[1200:]"})
    ctx = RunContext(cache_dir=tempfile.mkdtemp(prefix="vitbench-bench-"), device=args.device, eval_batch_size=256)

    def sweep(seeds):
        before, t0 = features.forward_pass_count(), time.perf_counter()
        for shots in (1, 5, 10, 25):
            for seed in seeds:
                params = {**FewshotParams().key_params(), "shots": shots, "l2": 1024.0, "l2_select": "mean-rank"}
                runner.run_cell(Cell("smoke", task, "vit_ti16", "none", "fewshot", params, seed, 32), ctx)
        return features.forward_pass_count() - before, features.COUNTERS["extractions"], time.perf_counter() - t0

    features.reset_counters()
    fwd, ext, t = sweep([0, 1, 2])
    print(f"(b) digits, vit_ti16 random init @32px, 12 cells: {ext} extractions (train+test), {fwd} forward batches, {t:.2f} s")
    runner.clear_memo()  # as a new process would
    fwd2, ext2, t2 = sweep([3, 4])
    print(f"    second run, seeds 3,4 (8 cells): {fwd2} forward batches, {ext2 - ext} extractions, {t2:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="2,000 test points, 1 seed, 3 reps, no part (b)")
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch and numpy BLAS threads (default 1: stable timings)")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    single, grid = part_a(args)
    if not (args.skip_b or args.quick):
        part_b(args)
    print(f"ratio_vs_fair_single_l2={single:.2f}")
    print(f"ratio_vs_fair_grid={grid:.2f}")


if __name__ == "__main__":
    main()
