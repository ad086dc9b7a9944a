"""Few-shot cell runner and the cross-record summary (tasks x shots, mean ± std over seeds).

`run_cell(cell, ctx)` evaluates one (task, model, shots, seed): cached frozen features of the task's whole
train and test splits, the seed's n-shot subset, one LSR factorisation solved for every l2 value, accuracy
per l2. `summarize_fewshot(records)` applies the l2 selection that needs several tasks (`mean-rank`,
`leave-self-out`) and aggregates over seeds; `fewshot_table(summary)` formats it for printing.
Exercised by `vitbench fewshot` and `vitbench run --method fewshot`.
"""

from __future__ import annotations

import dataclasses

import functools
import time
import warnings
from typing import Any

import numpy as np

from vitbench import fewshot as fs
from vitbench.cells import Cell, CellResult, RunContext
from vitbench.data.order import check_class_coverage
from vitbench.features import load_or_extract


# `precision` -> (factorisation dtype, prediction-GEMM dtype). "mixed" is the fast setting measured in
# BENCHMARKS.md "Few-shot": float64 eigh + float32 prediction, 99.999% identical to sklearn; float32 for the
# factorisation too agrees only ~98.6% (ill-conditioned dual Gram matrix at small l2). "float32" is what
# big_vision itself computes (JAX float32 on CPU), in its order of operations (docs/preprocessing.md).
SOLVE_AND_PREDICT = {"float64": ("float64", None), "float32": ("float32", None), "mixed": ("float64", "float32")}


def l2_key(l2: float) -> str:
    """JSON key of an l2 value in `acc_per_l2` (exact: `repr` of the float, e.g. '0.0009765625')."""
    return repr(float(l2))


@functools.lru_cache(maxsize=1)
def _model(name: str, weights: str, img_size: int | None, pos_interp: str = "bilinear"):
    """The backbone, kept across consecutive cells of one sweep (they share a model).

    Random init (`weights="none"`) is drawn under a fixed torch seed, so a rerun gets the same weights hash
    and reuses its cached features; the global RNG state is left untouched.
    """
    import torch

    from vitbench import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return models.create(name, weights=weights, img_size=img_size, pos_interp=pos_interp)


@functools.lru_cache(maxsize=4)
def _split(task, split_name: str, data_root, skip_corrupt: bool):
    from vitbench.data import load_split

    return load_split(task, split_name, data_root=data_root, skip_corrupt=skip_corrupt)


def clear_memo() -> None:
    """Forget the model and splits kept between cells (tests; or after the data on disk changed)."""
    _model.cache_clear()
    _split.cache_clear()


def _metric_per_l2(task, test, predictions: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """(metric name, metric per l2, top-1 per l2); ReaL when the task asks for it and the split has label sets."""
    top1 = fs.accuracy_per_l2(predictions, test.labels)
    label_sets = getattr(test, "real_labels", None)
    if task.metric == "real" and label_sets is not None:
        from vitbench.data.real import real_accuracy

        return "real", np.array([real_accuracy(p, label_sets) for p in predictions], dtype=np.float64), top1
    return "top1", top1, top1


def run_cell(cell: Cell, ctx: RunContext) -> CellResult:
    """Few-shot LSR accuracy of `cell.model` on `cell.task` for `cell.params["shots"]` and `cell.seed`."""
    from vitbench.data.transforms import preprocessing_for

    p = cell.params
    shots = int(p["shots"])
    fixed_l2 = float(p.get("l2", fs.DEFAULT_L2))
    mode = fs.check_l2_select(p.get("l2_select", "fixed"))
    precision = p.get("precision", "float64")
    grid = [float(v) for v in (p.get("l2_grid") or [])]
    if mode != "fixed" and not grid:
        grid = list(fs.DEFAULT_L2_GRID)
    l2_values = sorted(set(grid) | {fixed_l2})
    task = cell.task
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    model = _model(cell.model, cell.weights, cell.img_size, cell.pos_interp)
    layer_used = model.set_feature_layer(p.get("feature_layer", "cls"))
    prep = preprocessing_for(model.data_config, size=cell.img_size, resize=p.get("resize", "squash_crop"),
                             interpolation=p.get("interpolation", "bilinear"), crop_pct=p.get("crop_pct", 0.875),
                             resize_impl=p.get("resize_impl", "tf"))
    prep = dataclasses.replace(prep, train_crop="none", hflip=False)  # frozen features: no augmentation
    train = _split(task, task.train_split, ctx.data_root, ctx.skip_corrupt)
    test = _split(task, task.test_split, ctx.data_root, ctx.skip_corrupt)
    coverage = check_class_coverage(task, task.train_split, train.labels, task.test_split, test.labels)
    names = {"model_name": cell.model, "task_name": task.name}
    f_train = load_or_extract(model, train, prep, ctx, split_name=task.train_split, **names)
    f_test = load_or_extract(model, test, prep, ctx, split_name=task.test_split, **names)
    timings["features_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    k = task.num_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.FewShotWarning)  # recorded as `unbalanced` below
        subset = fs.sample_shots(train.labels, [shots], cell.seed, num_classes=k)[shots]
    short = fs.short_classes(train.labels, shots, k)
    x, y = np.asarray(f_train.array[subset]), train.labels[subset]
    solve_dtype, predict_dtype = SOLVE_AND_PREDICT[precision]
    factors = fs.lsr_factorize(x, y, k, precision=solve_dtype, device=ctx.device)
    if precision == "float32":  # big_vision's own float32 order of operations, for matching its l2-selection numbers
        predictions = fs.lsr_predict_big_vision_float32(factors, f_test.array, l2_values)
    else:
        predictions = fs.lsr_predict_factored(factors, f_test.array, l2_values, precision=predict_dtype)
    metric, acc, top1 = _metric_per_l2(task, test, predictions)
    timings["solve_s"] = time.perf_counter() - t0

    details: dict[str, Any] = {}
    if mode == "cv":
        folds = int(p.get("cv_folds", 5))
        cv_acc = fs.cv_accuracy_per_l2(x, y, l2_values, k, folds=folds, precision=solve_dtype, device=ctx.device)
        chosen: float | None = fs.best_l2(dict(zip(l2_values, cv_acc.tolist())), prefer=fixed_l2)
        details["cv_acc_per_l2"] = {l2_key(v): float(a) for v, a in zip(l2_values, cv_acc)}
        details["cv_folds"] = max(2, min(folds, len(y)))
        if shots < 2:  # each held-out example is its class's only one: every l2 scores 0, the tie-break keeps the fixed l2
            details["cv_degenerate"] = "1-shot: no class keeps a training example in any fold; the fixed l2 was used"
    elif mode == "fixed":
        chosen = fixed_l2
    else:
        chosen = None  # chosen across the suite's tasks by summarize_fewshot; top1 below is at the fixed l2
    at = l2_values.index(chosen if chosen is not None else fixed_l2)
    metrics = {"top1": float(top1[at])}
    if metric == "real":
        metrics["real"] = float(acc[at])
    details.update({
        "metric": metric,
        "acc_per_l2": {l2_key(v): float(a) for v, a in zip(l2_values, acc)},
        "chosen_l2": chosen,
        "reported_at_l2": l2_values[at],
        "l2_select": mode,
        "l2_grid": l2_values,
        "precision": precision,
        "solve_order": "big_vision float32 (per-l2 W = (lhs * 1/(eigs + l2)) @ rhs)" if precision == "float32" else "factored, all l2 at once",
        "solver": "primal (eigh of X^T X)" if factors.primal else "dual (eigh of X X^T)",
        "n_train": int(len(subset)),
        "n_train_split": int(len(train)),
        "n_test": int(len(test)),
        "unbalanced": bool(short),
        "short_classes": short[:50],
        "classes_present": int(len(np.unique(y))),
        "class_coverage": coverage,
        "feature_dim": int(x.shape[1]),
        "feature_layer": {"requested": p.get("feature_layer", "cls"), "used": layer_used},
        "timings": {k_: round(v, 4) for k_, v in timings.items()},
    })
    provenance = {
        "weights": dict(model.weights_info),
        "preprocessing": prep.to_dict(),
        "train": train.provenance,
        "test": test.provenance,
        "feature_cache": {"train": f_train.provenance(), "test": f_test.provenance()},
        "sampling": {"rng": "numpy.random.default_rng", "seed": cell.seed, "shots": shots, "nested": True},
    }
    return CellResult(metrics=metrics, details=details, provenance=provenance)


# ------------------------------------------------------------------------------------------- summarising
def _flat_rows(records) -> list[dict[str, Any]]:
    if hasattr(records, "columns"):  # results.records_frame(...) keeps the raw record in column "record"
        records = list(records["record"]) if "record" in records.columns else records.to_dict("records")
    rows = []
    for rec in records:
        if rec.get("method") != "fewshot":
            continue
        d, prm = rec.get("details") or {}, rec.get("params") or {}
        rows.append({
            "model": rec.get("model"), "weights_id": rec.get("weights_id"), "task": rec.get("task"),
            "shots": int(prm.get("shots")), "seed": rec.get("seed"), "l2_select": d.get("l2_select", prm.get("l2_select", "fixed")),
            "metric": d.get("metric", "top1"), "fixed_l2": float(prm.get("l2", fs.DEFAULT_L2)),
            "acc_per_l2": {float(k): float(v) for k, v in (d.get("acc_per_l2") or {}).items()},
            "chosen_l2": d.get("chosen_l2"), "value": (rec.get("metrics") or {}).get(d.get("metric", "top1")),
        })
    return rows


def summarize_fewshot(records) -> "pd.DataFrame":  # noqa: F821
    """Few-shot records -> one row per (model, weights_id, l2_select, task, shots): mean and std over seeds.

    `records`: a list of record dicts or `vitbench.results.records_frame(...)`. For `mean-rank` the l2 is
    chosen per (model, shots) from the seed-averaged per-l2 accuracies of all tasks present;
    `leave-self-out` chooses per task from the other tasks; `fixed` and `cv` use each record's own choice.
    Columns: model, weights_id, l2_select, task, shots, metric, mean, std (sample std, 0 for one seed),
    n_seeds, l2 (the chosen value, or 'cv' when it varies by seed). Accuracies are fractions.
    """
    import pandas as pd

    rows = _flat_rows(records)
    cols = ["model", "weights_id", "l2_select", "task", "shots", "metric", "mean", "std", "n_seeds", "l2"]
    if not rows:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame(rows)
    out = []
    for (model, wid, mode, shots), grp in frame.groupby(["model", "weights_id", "l2_select", "shots"], sort=True, dropna=False):
        chosen: dict[str, float] = {}
        if mode in ("mean-rank", "leave-self-out"):
            table = {
                task: pd.DataFrame(list(g["acc_per_l2"])).mean(axis=0).to_dict() for task, g in grp.groupby("task")
            }
            prefer = float(grp["fixed_l2"].iloc[0])
            if mode == "mean-rank":
                best = fs.select_l2_mean_rank(table, prefer=prefer)
                chosen = {task: best for task in table}
            elif len(table) >= 2:
                chosen = fs.select_l2_leave_self_out(table, prefer=prefer)
            else:  # no other task to choose from: a task's own test accuracy must never pick its l2
                chosen = {task: prefer for task in table}
        for task, g in grp.groupby("task", sort=False):
            if task in chosen:
                values = [r[chosen[task]] for r in g["acc_per_l2"]]
                l2_shown: Any = chosen[task]
            else:
                values = list(g["value"])
                used = set(g["chosen_l2"])
                l2_shown = used.pop() if len(used) == 1 else "cv"
            arr = np.asarray(values, dtype=np.float64)
            out.append({
                "model": model, "weights_id": wid, "l2_select": mode, "task": task, "shots": int(shots),
                "metric": g["metric"].iloc[0], "mean": float(arr.mean()),
                "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n_seeds": int(len(arr)), "l2": l2_shown,
            })
    return pd.DataFrame(out, columns=cols).sort_values(["model", "l2_select", "task", "shots"], ignore_index=True)


def fewshot_table(summary) -> "pd.DataFrame":  # noqa: F821
    """Printable tasks x shots table of 'mean ± std' in percent, plus a 'mean' row per model (over tasks)."""
    import pandas as pd

    if summary.empty:
        return pd.DataFrame()
    many_models = summary[["model", "weights_id", "l2_select"]].drop_duplicates().shape[0] > 1
    rows = []
    for (model, wid, mode), grp in summary.groupby(["model", "weights_id", "l2_select"], sort=False, dropna=False):
        shots = sorted(grp["shots"].unique())
        for task, g in list(grp.groupby("task", sort=False)) + [("mean", None)]:
            row: dict[str, Any] = {"model": f"{model} ({mode})"} if many_models else {}
            row["task"] = task
            for s in shots:
                if g is None:
                    cell = grp[grp["shots"] == s]
                    row[f"{s}-shot"] = f"{100 * cell['mean'].mean():.2f}" if len(cell) else ""
                    continue
                hit = g[g["shots"] == s]
                if not len(hit):
                    row[f"{s}-shot"] = ""
                elif int(hit["n_seeds"].iloc[0]) > 1:
                    row[f"{s}-shot"] = f"{100 * hit['mean'].iloc[0]:.2f} ± {100 * hit['std'].iloc[0]:.2f}"
                else:
                    row[f"{s}-shot"] = f"{100 * hit['mean'].iloc[0]:.2f}"
            rows.append(row)
    return pd.DataFrame(rows).fillna("")
