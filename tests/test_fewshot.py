"""Tests for vitbench.fewshot: LSR vs scikit-learn, sampling, l2 selection."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from vitbench.errors import VitbenchError
from vitbench.fewshot import (
    DEFAULT_L2_GRID,
    FewShotWarning,
    accuracy_per_l2,
    best_l2,
    cv_accuracy_per_l2,
    cv_fold_ids,
    lsr_factorize,
    lsr_predict,
    sample_shots,
    select_l2_leave_self_out,
    select_l2_mean_rank,
    short_classes,
)


def blobs(num_classes, per_class, dim, n_test, seed=0, spread=3.0):
    """Gaussian class blobs with an offset and uneven scales per dimension (like real pre-logits)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim)) * spread / np.sqrt(dim) * 4
    scale = rng.uniform(0.2, 5.0, size=dim)
    offset = rng.normal(size=dim) * 10

    def draw(labels):
        return ((centers[labels] + rng.normal(size=(len(labels), dim))) * scale + offset).astype(np.float32)

    y_train = np.repeat(np.arange(num_classes), per_class)
    y_test = rng.integers(0, num_classes, size=n_test)
    return draw(y_train), y_train, draw(y_test), y_test


def sklearn_predictions(x_train, y_train, x_test, l2):
    x = x_train.astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-5  # by hand: StandardScaler adds no 1e-5 (docs/fewshot.md#scikit-learn-reference)
    clf = RidgeClassifier(alpha=l2).fit((x - mean) / std, y_train)
    return clf.predict((x_test.astype(np.float64) - mean) / std)


@pytest.mark.parametrize("per_class,dim", [(20, 16), (3, 64)], ids=["primal_N>D", "dual_N<D"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_lsr_predict_matches_sklearn_ridge_classifier(per_class, dim, precision):
    k = 6
    x_train, y_train, x_test, _ = blobs(k, per_class, dim, n_test=400, seed=per_class)
    n = len(y_train)
    assert (n >= dim + 1) == (per_class == 20)
    l2_regs = [2.0**-3, 1.0, 2.0**10, 2.0**15]
    preds = lsr_predict(x_train, y_train, x_test, l2_regs, num_classes=k, precision=precision)
    assert preds.shape == (len(l2_regs), len(x_test)) and preds.dtype == np.int64
    for row, l2 in zip(preds, l2_regs):
        np.testing.assert_array_equal(row, sklearn_predictions(x_train, y_train, x_test, l2))
    assert lsr_factorize(x_train, y_train, k, precision=precision).primal == (per_class == 20)


def test_lsr_predict_float32_prediction_after_float64_factorisation_agrees():
    x_train, y_train, x_test, _ = blobs(10, 5, 48, n_test=500, seed=3)
    grid = list(DEFAULT_L2_GRID)
    full = lsr_predict(x_train, y_train, x_test, grid)
    mixed = lsr_predict(x_train, y_train, x_test, grid, predict_precision="float32")
    assert (full == mixed).mean() >= 0.999


def test_lsr_predict_chunked_equals_unchunked(monkeypatch):
    import vitbench.fewshot as fs

    x_train, y_train, x_test, _ = blobs(4, 10, 8, n_test=333, seed=5)
    whole = lsr_predict(x_train, y_train, x_test, [1.0, 1024.0])
    monkeypatch.setattr(fs, "_SCORE_BUDGET", 50)  # 50 // (2 * 4) = 6 rows per chunk
    np.testing.assert_array_equal(lsr_predict(x_train, y_train, x_test, [1.0, 1024.0]), whole)


def test_lsr_predict_is_accurate_and_validates_inputs():
    x_train, y_train, x_test, y_test = blobs(5, 10, 12, n_test=300, seed=9, spread=6.0)
    acc = accuracy_per_l2(lsr_predict(x_train, y_train, x_test, [1024.0]), y_test)
    assert acc.shape == (1,) and acc[0] > 0.9
    with pytest.raises(VitbenchError):
        lsr_predict(x_train[:3], y_train, x_test, [1.0])
    with pytest.raises(VitbenchError):
        lsr_predict(x_train, y_train, x_test, [1.0], precision="float16")


def test_sample_shots_deterministic_nested_and_per_class_counts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=500)
    a = sample_shots(labels, [1, 5, 10, 25], seed=1, num_classes=7)
    b = sample_shots(labels, [25, 1, 10, 5], seed=1, num_classes=7)
    c = sample_shots(labels, [1, 5, 10, 25], seed=2, num_classes=7)
    for n in (1, 5, 10, 25):
        np.testing.assert_array_equal(a[n], b[n])
        assert np.bincount(labels[a[n]], minlength=7).tolist() == [n] * 7
        assert len(set(a[n].tolist())) == len(a[n])
    assert not np.array_equal(a[25], c[25])
    for small, big in ((1, 5), (5, 10), (10, 25)):  # nested per class, in class order
        for cls in range(7):
            s = a[small][labels[a[small]] == cls]
            assert a[big][labels[a[big]] == cls][:small].tolist() == s.tolist()


def test_sample_shots_matches_big_vision_recipe():
    labels = np.array([2, 0, 1, 0, 2, 2, 1, 0, 0, 1])
    rng = np.random.default_rng(4)  # big_vision: one generator, per class in order, permutation of indices
    perms = [rng.permutation(np.where(labels == c)[0]) for c in range(3)]
    expected = np.concatenate([p[:2] for p in perms])
    np.testing.assert_array_equal(sample_shots(labels, 2, seed=4)[2], expected)


def test_sample_shots_unbalanced_warns_and_takes_all():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    with pytest.warns(FewShotWarning, match="unbalanced"):
        subset = sample_shots(labels, [5], seed=0, num_classes=3)[5]
    assert np.bincount(labels[subset]).tolist() == [5, 2, 5]
    assert short_classes(labels, 5, 3) == [1] and short_classes(labels, 2, 3) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_shots(labels, [2], seed=0)
    assert short_classes(labels, 1, 4) == [3]  # a class absent from the split


def test_mean_rank_and_leave_self_out():
    acc = {
        "a": {1.0: 0.50, 2.0: 0.60, 4.0: 0.55},
        "b": {1.0: 0.30, 2.0: 0.20, 4.0: 0.40},
        "c": {1.0: 0.70, 2.0: 0.80, 4.0: 0.75},
    }
    # ranks: a -> (1,3,2), b -> (2,1,3), c -> (1,3,2); means 1.33, 2.33, 2.33 -> tie 2.0 / 4.0
    assert select_l2_mean_rank(acc, prefer=2.0) == 2.0
    assert select_l2_mean_rank(acc, prefer=4.0) == 4.0
    lso = select_l2_leave_self_out(acc, prefer=1.0)
    assert lso == {"a": 4.0, "b": 2.0, "c": 4.0}
    import pandas as pd

    assert select_l2_mean_rank(pd.DataFrame(acc).T, prefer=2.0) == 2.0
    with pytest.raises(VitbenchError):
        select_l2_leave_self_out({"a": acc["a"]})
    with pytest.raises(VitbenchError):
        select_l2_mean_rank({"a": acc["a"], "b": {1.0: 0.1}})


def test_best_l2_tie_break_prefers_default():
    assert best_l2({1.0: 0.5, 1024.0: 0.5, 2.0**15: 0.4}) == 1024.0
    assert best_l2({2.0**9: 0.5, 2.0**11: 0.5}) == 2.0**9


def test_cv_uses_subset_only_and_picks_reasonable_l2():
    x_train, y_train, _, _ = blobs(4, 10, 6, n_test=1, seed=11, spread=5.0)
    folds = cv_fold_ids(y_train, 5)
    assert set(folds.tolist()) == set(range(5))
    assert cv_fold_ids(np.arange(5), 5).tolist() == [0, 1, 2, 3, 4]  # 1-shot: classes spread over folds
    acc = cv_accuracy_per_l2(x_train, y_train, [2.0**-5, 1.0, 2.0**10, 2.0**30], 4, folds=5)
    assert acc.shape == (4,) and acc[:3].max() > 0.8 and acc[3] <= acc[:3].max()


# ------------------------------------------------------------------------------ runner (real digits, tiny ViT)
def digits_cell(shots, seed, mode="fixed", grid=()):
    from vitbench.cells import Cell
    from vitbench.suites import SourceSpec, TaskSpec

    task = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),),
                    splits={"train": "all[:1200]", "test": "all[1200:]"})
    from vitbench.methods.fewshot import FewshotParams

    params = {**FewshotParams().key_params(), "shots": shots, "l2": 1024.0, "l2_grid": list(grid), "l2_select": mode}
    return Cell(suite="smoke", task=task, model="vit_ti16", weights="none", method="fewshot", params=params,
                seed=seed, img_size=32)


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fewshot-cache")


@pytest.mark.slow
def test_run_cell_digits_sweep_extracts_once_and_summarizes(digits_cache):
    from vitbench import features, results
    from vitbench.cells import RunContext
    from vitbench.methods import fewshot as fewshot_method
    from vitbench.runners import fewshot as runner

    runner.clear_memo()
    features.reset_counters()
    seen = []
    ctx = RunContext(cache_dir=digits_cache, eval_batch_size=256, progress=lambda d, i, n: seen.append((d, i, n)))
    grid = [2.0**e for e in (-2, 4, 10, 16)]
    cells = [digits_cell(s, seed, "mean-rank", grid) for s in (1, 5) for seed in (0, 1)]
    records = []
    for n, cell in enumerate(cells):
        res = runner.run_cell(cell, ctx)
        if n == 0:
            first_pass = features.forward_pass_count()
            assert first_pass == 8  # ceil(1200/256) + ceil(597/256): both splits, once
        records.append(results.make_record(cell, res, 0.0, "cpu"))
    assert features.forward_pass_count() == first_pass  # later shots / seeds: no forward pass at all
    assert any(d.startswith("features vit_ti16 digits train") and i == n == 1200 for d, i, n in seen)
    d = res.details
    assert d["n_train"] == 50 and d["n_test"] == 597 and d["n_train_split"] == 1200
    assert d["unbalanced"] is False and d["classes_present"] == 10 and d["chosen_l2"] is None
    assert set(d["acc_per_l2"]) == {repr(v) for v in grid} and 0.3 < res.metrics["top1"] <= 1.0
    assert res.metrics["top1"] == d["acc_per_l2"][repr(1024.0)]
    prov = res.provenance
    assert prov["weights"]["random_init"] and prov["preprocessing"]["size"] == 32
    assert prov["feature_cache"]["test"]["hit"] and prov["train"] and prov["test"]

    # a fresh run (new process: memo cleared) with another seed reuses the cached features
    runner.clear_memo()
    res2 = runner.run_cell(digits_cell(5, 2), ctx)
    assert features.forward_pass_count() == first_pass
    assert res2.details["chosen_l2"] == 1024.0 and list(res2.details["acc_per_l2"]) == [repr(1024.0)]

    summary = fewshot_method.summarize_fewshot(results.records_frame(records))
    assert len(summary) == 2 and set(summary["shots"]) == {1, 5} and (summary["n_seeds"] == 2).all()
    best = summary.set_index("shots").loc[5, "l2"]
    accs = [r["details"]["acc_per_l2"][repr(float(best))] for r in records if r["params"]["shots"] == 5]
    assert summary.set_index("shots").loc[5, "mean"] == pytest.approx(np.mean(accs))
    table = fewshot_method.fewshot_table(summary)
    assert list(table.columns) == ["task", "1-shot", "5-shot"] and list(table["task"]) == ["digits", "mean"]
    assert "±" in table.iloc[0]["5-shot"]


def test_run_cell_cv_and_unbalanced(digits_cache):
    from vitbench.cells import RunContext
    from vitbench.runners import fewshot as runner

    ctx = RunContext(cache_dir=digits_cache, eval_batch_size=512)
    grid = [2.0**e for e in (-4, 2, 10, 18)]
    res = runner.run_cell(digits_cell(130, 0, "cv", grid), ctx)  # digits has ~120 train images per class
    d = res.details
    assert d["unbalanced"] and d["short_classes"] and d["chosen_l2"] in grid and d["cv_folds"] == 5
    assert res.metrics["top1"] == d["acc_per_l2"][repr(d["chosen_l2"])] and d["solver"].startswith("primal")
    assert d["n_train"] == 1200


def test_summarize_leave_self_out_and_fixed():
    from vitbench.methods.fewshot import summarize_fewshot

    def rec(task, seed, accs, mode, top1=None):
        accs = {repr(k): v for k, v in accs.items()}
        return {"method": "fewshot", "model": "m", "weights_id": "w", "task": task, "seed": seed,
                "params": {"shots": 5, "l2": 2.0, "l2_select": mode},
                "details": {"l2_select": mode, "acc_per_l2": accs, "chosen_l2": None if top1 is None else 2.0},
                "metrics": {"top1": top1 if top1 is not None else accs[repr(2.0)]}}

    acc = {"a": {1.0: 0.5, 2.0: 0.6, 4.0: 0.55}, "b": {1.0: 0.3, 2.0: 0.2, 4.0: 0.4}, "c": {1.0: 0.7, 2.0: 0.8, 4.0: 0.75}}
    recs = [rec(t, 0, a, "leave-self-out") for t, a in acc.items()]
    s = summarize_fewshot(recs).set_index("task")
    assert s.loc["b", "l2"] == 2.0 and s.loc["b", "mean"] == 0.2 and s.loc["a", "l2"] in (2.0, 4.0)
    fixed = summarize_fewshot([rec("a", 0, acc["a"], "fixed", 0.6), rec("a", 1, acc["a"], "fixed", 0.5)])
    assert fixed.loc[0, "mean"] == pytest.approx(0.55) and fixed.loc[0, "std"] == pytest.approx(np.std([0.6, 0.5], ddof=1))
    assert summarize_fewshot([]).empty



def test_real_metric_used_when_split_has_label_sets():
    from types import SimpleNamespace

    from vitbench.runners.fewshot import _metric_per_l2

    test = SimpleNamespace(labels=np.array([0, 1, 2]), real_labels=[[0], [0, 1], []])
    preds = np.array([[0, 0, 2], [1, 1, 1]])
    metric, acc, top1 = _metric_per_l2(SimpleNamespace(metric="real"), test, preds)
    assert metric == "real" and acc.tolist() == [1.0, 0.5] and top1.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert _metric_per_l2(SimpleNamespace(metric="top1"), test, preds)[0] == "top1"


def test_run_cell_mixed_precision_matches_float64(digits_cache):
    import dataclasses

    from vitbench.cells import RunContext
    from vitbench.runners import fewshot as runner

    ctx = RunContext(cache_dir=digits_cache, eval_batch_size=512)
    grid = [2.0**e for e in (-4, 2, 10, 18)]
    base = digits_cell(10, 1, "mean-rank", grid)
    f64 = runner.run_cell(base, ctx).details
    mixed_cell = dataclasses.replace(base, params={**base.params, "precision": "mixed"})
    mixed = runner.run_cell(mixed_cell, ctx).details
    assert mixed["precision"] == "mixed"
    for l2 in grid:  # float64 eigh + float32 prediction: accuracies agree to a test point or so
        assert abs(mixed["acc_per_l2"][repr(l2)] - f64["acc_per_l2"][repr(l2)]) <= 2 / f64["n_test"]
