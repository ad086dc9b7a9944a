"""Benchmark: `vitbench report` on N synthetic records vs reading the same records with json + pandas.

Writes N records in the record schema (README.md "Result records": the fields `vitbench.results.make_record`
writes, with realistic cell, params, details and provenance) for a VTAB-style study (19 tasks x models x
few-shot shots / fine-tuning x seeds), then times, in the same run:

- reference: `json.load` of every file + `pandas.json_normalize` (reading the records into a table);
- report: `vitbench.results.load_records` + `vitbench.report.build_report` (all tables, figures, HTML, Markdown).

Prints `ratio_report_vs_json_pandas=X` per N and the HTML size. Usage:

    python benchmarks/report.py                 # N = 5000 and 100000
    python benchmarks/report.py --n 5000 --keep /tmp/records
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VTAB = [("caltech101", "natural"), ("cifar100", "natural"), ("dtd", "natural"), ("flowers102", "natural"), ("pets", "natural"),
        ("sun397", "natural"), ("svhn", "natural"), ("patch_camelyon", "specialized"), ("eurosat", "specialized"),
        ("resisc45", "specialized"), ("retinopathy", "specialized"), ("clevr_count", "structured"), ("clevr_dist", "structured"),
        ("dmlab", "structured"), ("dsprites_loc", "structured"), ("dsprites_ori", "structured"), ("kitti_dist", "structured"),
        ("smallnorb_azi", "structured"), ("smallnorb_ele", "structured")]
MODELS = [("vit_b16", "timm/vit_base_patch16_224.orig_in21k"), ("vit_l16", "timm/vit_large_patch16_224.orig_in21k"),
          ("vit_b32", "timm/vit_base_patch32_224.orig_in21k"), ("vit_s16", "timm/vit_small_patch16_224.augreg_in21k")]


def synthetic_record(i: int, task: str, group: str, model: str, weights: str, method: str, shots: int, seed: int, rng) -> dict:
    split = {"classes_present": 10, "expression": "train[:800]", "label_transform": "", "lossy": False, "n": 1000,
             "num_classes": 10, "ranges": [{"split": "train", "start": 0, "stop": 800}], "split": "train800val200",
             "source": {"id": f"vtab-1k/{task}", "kind": "vtab1k_folder", "lossy": False}, "substitutions": [], "task": task}
    if method == "fewshot":
        params = {"shots": shots, "l2": 1024.0, "l2_select": "fixed", "l2_grid": [], "precision": "float64",
                  "resize": "squash_crop", "interpolation": "bilinear", "crop_pct": 0.875}
        details = {"acc_per_l2": {"1024.0": rng.uniform(0.3, 0.9)}, "chosen_l2": 1024.0, "l2_select": "fixed", "metric": "top1",
                   "n_train": shots * 10, "n_test": 1000, "unbalanced": False, "feature_dim": 768}
        value = details["acc_per_l2"]["1024.0"]
    else:
        params = {"steps": 2500, "lr": 0.01, "batch_size": 512, "warmup_steps": 500, "momentum": 0.9, "weight_decay": 0.0,
                  "grad_clip": 1.0, "train_crop": "inception", "hflip": True, "interpolation": "bilinear", "dropout": 0.0,
                  "lr_select": "none", "select_train_split": "", "select_eval_split": ""}
        value = rng.uniform(0.4, 0.95)
        details = {"loss_curve": [{"step": s, "lr": 0.01, "loss": 2.0 / s ** 0.3} for s in range(125, 2501, 125)],
                   "n_train": 1000, "n_test": 1000, "epochs": 1280.0}
    cell = {"protocol_version": 1, "task": {"name": task, "group": group, "metric": "top1", "num_classes": 10,
                                            "splits": {"train800val200": "train[:800]+val[:200]", "test": "test"},
                                            "sources": [{"kind": "vtab1k_folder", "id": f"vtab-1k/{task}", "options": {}}]},
            "model": model, "weights_id": weights, "method": method, "params": params, "seed": seed, "img_size": 224,
            "pos_interp": "bilinear"}
    return {
        "schema_version": 1, "key": f"{i:020x}", "suite": "vtab", "task": task, "group": group, "model": model,
        "weights_id": weights, "weights_sha256": "0" * 64, "random_init": False, "method": method, "params": params,
        "seed": seed, "metrics": {"top1": value}, "details": details, "cell": cell,
        "provenance": {"weights": {"pretrained_data": "ImageNet-21k", "random_init": False, "weights_id": weights},
                       "train": split, "test": {**split, "split": "test", "expression": "test"}},
        "versions": {"vitbench": "0.1.0", "torch": "2.4.0", "timm": "1.0.9", "numpy": "2.0"},
        "git_commit": "abc123", "hardware": {"device": "cuda", "cuda": "NVIDIA H100", "cpu_count": 32},
        "command": "vitbench run --suite vtab", "wall_time_s": 12.5,
        "timestamp": f"2026-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}+00:00",
    }


def write_records(folder: Path, n: int) -> None:
    rng = random.Random(0)
    i = 0
    cells = []
    seeds_needed = max(1, n // (len(VTAB) * len(MODELS) * 5) + 1)
    for seed in range(seeds_needed):
        for model, weights in MODELS:
            for task, group in VTAB:
                for method, shots in (("fewshot", 1), ("fewshot", 5), ("fewshot", 10), ("fewshot", 25), ("finetune", 0)):
                    cells.append((task, group, model, weights, method, shots, seed))
    for task, group, model, weights, method, shots, seed in cells[:n]:
        rec = synthetic_record(i, task, group, model, weights, method, shots, seed, rng)
        path = folder / "vtab" / task / method / f"{rec['key']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec, indent=2, sort_keys=True))
        i += 1


def reference_read(folder: Path):
    import pandas as pd

    recs = [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]
    return pd.json_normalize(recs)


def run(n: int, keep: Path | None, repeat: int) -> float:
    import matplotlib.pyplot  # noqa: F401 - imported before timing, as pandas is for the reference

    from vitbench import results
    from vitbench.report import build_report

    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="vitbench-report-bench-"))
    try:
        if not any(folder.rglob("*.json")):
            t0 = time.perf_counter()
            write_records(folder, n)
            print(f"n={n}: wrote records in {time.perf_counter() - t0:.1f} s")
        reference_read(folder)  # warm the page cache for both timings; both sides' modules are imported already
        out = folder.parent / (folder.name + "-report")
        t_ref = t_rep = float("inf")
        for _ in range(repeat):  # best of `repeat` for both sides: the machine is shared
            t0 = time.perf_counter()
            frame = reference_read(folder)
            t_ref = min(t_ref, time.perf_counter() - t0)
            t0 = time.perf_counter()
            paths = build_report(results.load_records(folder), out, title="benchmark")
            t_rep = min(t_rep, time.perf_counter() - t0)
        from vitbench.report import analyse

        t0 = time.perf_counter()
        recs = results.load_records(folder)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        analysis = analyse(recs)
        t_tables = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_report(recs, out, title="benchmark", analysis=analysis)
        t_write = time.perf_counter() - t0
        print(f"n={n}: breakdown: load {t_load:.2f} s, tables {t_tables:.2f} s, figures + files {t_write:.2f} s; "
              f"ratio_load_and_tables_vs_json_pandas={(t_load + t_tables) / t_ref:.2f}")
        size = paths["html"].stat().st_size
        print(f"n={n}: best of {repeat}: json+pandas {t_ref:.2f} s ({frame.shape[1]} columns); report {t_rep:.2f} s; index.html {size / 1e6:.2f} MB")
        print(f"n={n}: ratio_report_vs_json_pandas={t_rep / t_ref:.2f}")
        shutil.rmtree(out, ignore_errors=True)
        return t_rep
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="number of records (repeatable; default 5000 and 100000)")
    ap.add_argument("--keep", type=Path, help="write / reuse the records in this folder (one --n only)")
    ap.add_argument("--repeat", type=int, default=3, help="timings per side at N <= 20000 (best is kept)")
    args = ap.parse_args()
    for n in args.n or [5000, 100000]:
        t = run(n, args.keep, args.repeat if n <= 20000 else 1)
        if n >= 100000:
            print(f"n={n}: report_under_60s={'yes' if t < 60 else 'no'} ({t:.1f} s)")


if __name__ == "__main__":
    main()
