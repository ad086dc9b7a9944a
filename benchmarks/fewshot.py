"""Benchmark: few-shot LSR sweep (vitbench vs a scikit-learn RidgeClassifier loop) and feature-cache reuse.

Run by hand from the repo root:  PYTHONPATH=. python benchmarks/fewshot.py [--threads 2] [--device cuda]
(a) Synthetic features, K=100 classes, D=768, 10,000 test points, shots 1/5/10/25 x seeds 0/1/2 x 30 l2 values
    (2^-10..2^19), accuracy for every (shots, seed, l2). vitbench: one float64 factorisation per (shots, seed)
    and batched float32 prediction GEMMs for all l2 at once; sklearn: RidgeClassifier(alpha=l2).fit + predict
    per cell on the same hand-standardised float64 features. Prints the agreement of predictions, the GFLOP/s
    of vitbench's prediction GEMMs beside a plain torch matmul of the same shape, and ends with
    `ratio_vs_sklearn=<x>`.
(b) Feature extraction on the embedded digits task with a random-init ViT-Ti/16 at 32 px: a whole sweep
    (4 shots x 3 seeds) extracts each split once; a second run with other seeds does no forward pass.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from vitbench import fewshot as fs


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


def vitbench_sweep(x_train, y_train, x_test, y_test, shots, seeds, grid, k, device, solve_precision, predict_precision):
    preds, t_predict, flops = {}, 0.0, 0.0
    x_test_t = torch.from_numpy(x_test).to(device)
    for seed in seeds:
        subsets = fs.sample_shots(y_train, shots, seed, num_classes=k)
        for n in shots:
            idx = subsets[n]
            factors = fs.lsr_factorize(x_train[idx], y_train[idx], k, precision=solve_precision, device=device)
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            p = fs.lsr_predict_factored(factors, x_test_t, grid, precision=predict_precision)
            if device != "cpu":
                torch.cuda.synchronize()
            t_predict += time.perf_counter() - t0
            d1, r = factors.lhs.shape
            lk = len(grid) * k
            flops += 2 * len(x_test) * min(d1 * r + r * lk, d1 * lk)  # the strategy lsr_predict_factored picks
            preds[(n, seed)] = p
    return preds, t_predict, flops


def sklearn_sweep(x_train, y_train, x_test, shots, seeds, grid, k):
    from sklearn.linear_model import RidgeClassifier

    preds = {}
    for seed in seeds:
        subsets = fs.sample_shots(y_train, shots, seed, num_classes=k)
        for n in shots:
            idx = subsets[n]
            x = x_train[idx].astype(np.float64)
            mean, std = x.mean(0), x.std(0) + fs.STD_EPS  # by hand, as big_vision (fewshot_and_paper.md §1.5)
            xs, xt = (x - mean) / std, (x_test.astype(np.float64) - mean) / std
            preds[(n, seed)] = np.stack(
                [RidgeClassifier(alpha=l2).fit(xs, y_train[idx]).predict(xt) for l2 in grid]
            )
    return preds


def matmul_gflops(m, kdim, n, device, dtype=torch.float32, reps=3):
    a = torch.randn(m, kdim, device=device, dtype=dtype)
    b = torch.randn(kdim, n, device=device, dtype=dtype)
    a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * m * kdim * n * reps / (time.perf_counter() - t0) / 1e9


def part_a(args) -> float:
    k, dim, n_test = 100, 768, args.n_test
    shots, seeds, grid = [1, 5, 10, 25], [0, 1, 2], list(fs.DEFAULT_L2_GRID)
    x_train, y_train, x_test, y_test = synthetic(k, dim, n_test=n_test)
    print(f"(a) K={k} D={dim} n_test={n_test} shots={shots} seeds={seeds} l2 grid={len(grid)} values; "
          f"torch threads={torch.get_num_threads()} device={args.device}")
    results = {}
    variants = {  # name -> (factorisation precision, prediction precision); the first is the headline
        "f64 solve, f32 predict": ("float64", "float32"),
        "f64 solve, f64 predict": ("float64", "float64"),
        "f32 solve, f32 predict": ("float32", "float32"),
    }
    for solve, pred in set(variants.values()):  # warm-up (BLAS/LAPACK initialisation), untimed
        vitbench_sweep(x_train, y_train, x_test[:500], y_test[:500], [1, 25], [0], grid, k, args.device, solve, pred)
    for name, (solve, pred) in variants.items():
        t0 = time.perf_counter()
        preds, t_pred, flops = vitbench_sweep(x_train, y_train, x_test, y_test, shots, seeds, grid, k, args.device, solve, pred)
        results[name] = (time.perf_counter() - t0, preds, t_pred, flops)
        print(f"  vitbench {name:24s} {results[name][0]:7.2f} s  (prediction {t_pred:.2f} s, "
              f"{flops / 1e9:.0f} GFLOP, {flops / t_pred / 1e9:.1f} GFLOP/s)")
    ref_gflops = matmul_gflops(n_test, dim + 1, len(grid) * k, args.device)
    print(f"  plain torch matmul [{n_test}x{dim + 1}]@[{dim + 1}x{len(grid) * k}] float32: {ref_gflops:.1f} GFLOP/s")
    t0 = time.perf_counter()
    ref = sklearn_sweep(x_train, y_train, x_test, shots, seeds, grid, k)
    t_sk = time.perf_counter() - t0
    print(f"  sklearn RidgeClassifier loop f64 {t_sk:7.2f} s  ({len(ref) * len(grid)} fit + predict)")
    ratios = {}
    for name, (t, preds, _, _) in results.items():
        same = np.mean([np.mean(preds[c] == ref[c]) for c in ref])
        acc_gap = max(abs(fs.accuracy_per_l2(preds[c], y_test) - fs.accuracy_per_l2(ref[c], y_test)).max() for c in ref)
        ratios[name] = (t_sk / t, same)
        print(f"  {name:24s}: identical predictions {100 * same:.4f}%  max |acc diff| {acc_gap:.1e}  "
              f"speed-up {t_sk / t:.1f}x")
    first = next(iter(results))
    accs = {n: np.mean([fs.accuracy_per_l2(results[first][1][(n, s)], y_test).max() for s in seeds]) for n in shots}
    print("  best-l2 accuracy per shots (sanity):", {n: round(float(a), 3) for n, a in accs.items()})
    ratio, same = ratios[first]
    print(f"  headline: {first} ({100 * same:.4f}% identical to sklearn)")
    return ratio


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
    ap.add_argument("--n-test", type=int, default=10_000)
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    ratio = part_a(args)
    if not args.skip_b:
        part_b(args)
    print(f"ratio_vs_sklearn={ratio:.2f}")


if __name__ == "__main__":
    main()
