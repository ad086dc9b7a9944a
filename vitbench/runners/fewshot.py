"""Few-shot cell runner: one (task, model, shots, seed) on cached frozen features.

`run_cell(cell, ctx)` evaluates one cell: cached frozen features of the task's whole train and test
splits, the seed's n-shot subset, one LSR factorisation solved for every l2 value, accuracy per l2. The
parameters, their defaults and the l2 selection across tasks live in `vitbench/methods/fewshot.py`.
Exercised by `vitbench fewshot` and `vitbench run --method fewshot`.
"""

from __future__ import annotations

import dataclasses

import time
import warnings
from typing import Any

import numpy as np

from vitbench import fewshot as fs
from vitbench.cells import Cell, CellResult, RunContext
from vitbench.data.order import check_class_coverage
from vitbench.features import clear_memo, load_or_extract, memo_model, memo_split


# `precision` -> (solve dtype, prediction-GEMM dtype). "mixed" is float64 solve + float32 prediction, 99.999%
# identical to sklearn (BENCHMARKS.md "Few-shot"); float32 for the solve too agrees only ~98.5% on the l2 grid
# (ill-conditioned dual Gram matrix at small l2). "float64" predictions on CPU run as certified float32 GEMMs
# with float64 for close calls (vitbench/certified_argmax.py): identical to float64, about as fast as "mixed".
# "float32" is what big_vision itself computes (JAX float32 on CPU), in its order of operations
# (docs/preprocessing.md): eigendecomposition for every l2, per-l2 weights, no folding or certification.
SOLVE_AND_PREDICT = {"float64": ("float64", None), "float32": ("float32", None), "mixed": ("float64", "float32")}


def l2_key(l2: float) -> str:
    """JSON key of an l2 value in `acc_per_l2` (exact: `repr` of the float, e.g. '0.0009765625')."""
    return repr(float(l2))


_model, _split, clear_memo = memo_model, memo_split, clear_memo  # shared with the other frozen-feature methods


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
    fixed_l2 = float(p["l2"])
    mode = fs.check_l2_select(p["l2_select"])
    precision = p["precision"]
    grid = [float(v) for v in p["l2_grid"]]  # empty for l2_select = fixed: only the fixed value is solved
    l2_values = sorted(set(grid) | {fixed_l2})
    task = cell.task
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    model = _model(cell.model, cell.weights, cell.img_size, cell.pos_interp)
    prep = preprocessing_for(model.data_config, size=cell.img_size, resize=p["resize"],
                             interpolation=p["interpolation"], crop_pct=p["crop_pct"],
                             resize_impl=p.get("resize_impl", "tf"))
    prep = dataclasses.replace(prep, train_crop="none", hflip=False)  # frozen features: no augmentation
    train = _split(task, task.train_split, ctx.data_root, ctx.skip_corrupt)
    test = _split(task, task.test_split, ctx.data_root, ctx.skip_corrupt)
    coverage = check_class_coverage(task, task.train_split, train.labels, task.test_split, test.labels)
    names = {"model_name": cell.model, "task_name": task.name}
    # the model is shared with other methods' cells (memo_model): choose the feature layer for these
    # extractions only, then put back the class token every other method reads
    layer_used = model.set_feature_layer(p.get("feature_layer", "cls"))
    try:
        f_train = load_or_extract(model, train, prep, ctx, split_name=task.train_split, **names)
        f_test = load_or_extract(model, test, prep, ctx, split_name=task.test_split, **names)
    finally:
        model.set_feature_layer("cls")
    timings["features_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    k = task.num_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fs.FewShotWarning)  # recorded as `unbalanced` below
        subset = fs.sample_shots(train.labels, [shots], cell.seed, num_classes=k)[shots]
    short = fs.short_classes(train.labels, shots, k)
    x, y = np.asarray(f_train.array[subset]), train.labels[subset]
    solve_dtype, predict_dtype = SOLVE_AND_PREDICT[precision]
    if precision == "float32":  # big_vision's own float32 computation, for matching its l2-selection numbers
        factors = fs.lsr_factorize_big_vision_float32(x, y, k, device=ctx.device)
        predictions = fs.lsr_predict_big_vision_float32(factors, f_test.array, l2_values)
        solver = ("primal" if factors.primal else "dual") + " eigh in float32, big_vision's order of operations"
        prediction = "float32, per l2: W = (lhs * 1 / (eigs + l2)) @ rhs, scores = standardised features @ W"
    else:
        clf = fs.lsr_fit(x, y, k, l2_values, precision=solve_dtype, predict_precision=predict_dtype, device=ctx.device)
        predictions = fs.classify(clf, f_test.array)
        solver, prediction = clf.solver, clf.prediction
    metric, acc, top1 = _metric_per_l2(task, test, predictions)
    timings["solve_s"] = time.perf_counter() - t0

    details: dict[str, Any] = {}
    if mode == "cv":
        folds = int(p["cv_folds"])
        cv_acc = fs.cv_accuracy_per_l2(x, y, l2_values, k, folds=folds, precision=solve_dtype, device=ctx.device)
        chosen: float | None = fs.best_l2(dict(zip(l2_values, cv_acc.tolist())), prefer=fixed_l2)
        details["cv_acc_per_l2"] = {l2_key(v): float(a) for v, a in zip(l2_values, cv_acc)}
        details["cv_folds"] = max(2, min(folds, len(y)))
        if shots < 2:  # each held-out example is its class's only one: every l2 scores 0, the tie-break keeps the fixed l2
            details["cv_degenerate"] = "1-shot: no class keeps a training example in any fold; the fixed l2 was used"
    elif mode == "fixed":
        chosen = fixed_l2
    else:
        chosen = None  # chosen across the suite's tasks by vitbench.methods.fewshot; top1 below is at the fixed l2
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
        "solver": solver,
        "prediction": prediction,
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
