"""Benchmark: `vitbench report` on N synthetic records vs reading the same records with json + pandas.

Writes N records in the record schema (README.md "Result records": the fields `vitbench.results.make_record`
writes, with realistic cell, params, details and provenance) for a VTAB-style study (19 tasks x models x
few-shot shots / fine-tuning x seeds), then times, in the same run, interleaved (the order alternating each
round), the medians compared:

- reference: `json.load` of every file + `pandas.json_normalize` (reading the records into a table);
- report: `vitbench.results.load_records` + `vitbench.report.build_report` into a fresh folder (all tables,
  figures, HTML, Markdown, CSV), as `vitbench report` does (matplotlib's import falls in the first round,
  pandas' before the first reference round).

Prints `ratio_report_vs_json_pandas=X` (ratio of medians) per N, every round's times, the breakdown (load /
tables / figures + files) and the HTML size. Usage:

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


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def run(n: int, keep: Path | None, repeat: int) -> float:
    from vitbench import results
    from vitbench.report import analyse, build_report

    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="vitbench-report-bench-"))
    try:
        if not any(folder.rglob("*.json")):
            t0 = time.perf_counter()
            write_records(folder, n)
            print(f"n={n}: wrote records in {time.perf_counter() - t0:.1f} s")
        reference_read(folder)  # warm the page cache and pandas for both sides
        out = folder.parent / (folder.name + "-report")
        ref: list[float] = []
        rep: list[float] = []
        cpu: dict[str, list[float]] = {"ref": [], "rep": []}  # process CPU seconds: less sensitive to other jobs
        parts: dict[str, list[float]] = {"load": [], "tables": [], "figures + files": []}
        for i in range(repeat):  # interleaved, the order alternating each round: the machine is shared
            for side in (("ref", "rep") if i % 2 == 0 else ("rep", "ref")):
                shutil.rmtree(out, ignore_errors=True)  # every report is written into a fresh folder
                c0, t0 = time.process_time(), time.perf_counter()
                if side == "ref":
                    frame = reference_read(folder)
                    ref.append(time.perf_counter() - t0)
                    cpu["ref"].append(time.process_time() - c0)
                    continue
                recs = results.load_records(folder)
                t1 = time.perf_counter()
                analysis = analyse(recs)
                t2 = time.perf_counter()
                paths = build_report(recs, out, title="benchmark", analysis=analysis)
                t3 = time.perf_counter()
                rep.append(t3 - t0)
                cpu["rep"].append(time.process_time() - c0)
                for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                    parts[k].append(v)
        size = paths["html"].stat().st_size
        breakdown = ", ".join(f"{k} {_median(v):.2f} s" for k, v in parts.items())
        print(f"n={n}: {repeat} interleaved rounds, medians: json+pandas {_median(ref):.2f} s ({frame.shape[1]} columns); "
              f"report {_median(rep):.2f} s ({breakdown}); index.html {size / 1e6:.2f} MB")
        print(f"n={n}: per round, json+pandas: {' '.join(f'{t:.2f}' for t in ref)}; report: {' '.join(f'{t:.2f}' for t in rep)}")
        print(f"n={n}: best: json+pandas {min(ref):.2f} s, report {min(rep):.2f} s, ratio {min(rep) / min(ref):.2f}")
        print(f"n={n}: CPU seconds, medians: json+pandas {_median(cpu['ref']):.2f}, report {_median(cpu['rep']):.2f}, "
              f"ratio {_median(cpu['rep']) / _median(cpu['ref']):.2f}")
        print(f"n={n}: ratio_report_vs_json_pandas={_median(rep) / _median(ref):.2f} (medians)")
        shutil.rmtree(out, ignore_errors=True)
        return _median(rep)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="number of records (repeatable; default 5000 and 100000)")
    ap.add_argument("--keep", type=Path, help="write / reuse the records in this folder (one --n only)")
    ap.add_argument("--repeat", type=int, default=7, help="interleaved rounds at N <= 20000 (medians are compared)")
    args = ap.parse_args()
    for n in args.n or [5000, 100000]:
        t = run(n, args.keep, args.repeat if n <= 20000 else 1)
        if n >= 100000:
            print(f"n={n}: report_under_60s={'yes' if t < 60 else 'no'} ({t:.1f} s)")


if __name__ == "__main__":
    main()
