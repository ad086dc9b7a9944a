"""Linear probe: the L-BFGS softmax fit against scikit-learn, weight-decay choice, held-out split, VTAB shape."""

import numpy as np
import pytest

from vitbench.methods.linear import choose_wd, fit_softmax, holdout, normalized, predict


def blobs(n, d=8, k=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 2
    y = np.arange(n) % k
    return centers[y] + noise * rng.normal(size=(n, d)), y


def test_fit_matches_sklearn_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = blobs(120, noise=2.0)
    wd = 1e-2
    w, b, info = fit_softmax(x, y, 3, wd, max_iter=500)
    # sklearn minimises C * sum(CE) + ||W||^2 / 2 (intercept not penalised): the same optimum at C = 1 / (wd * N)
    ref = sklearn.LogisticRegression(C=1.0 / (wd * len(y)), tol=1e-10, max_iter=5000).fit(x, y)
    logits, ref_logits = x @ w.numpy() + b.numpy(), ref.decision_function(x)
    centred = lambda z: z - z.mean(1, keepdims=True)  # noqa: E731 - softmax is shift-invariant per row
    assert np.abs(centred(logits) - centred(ref_logits)).max() < 1e-3
    assert (predict(w, b, x) == ref.predict(x)).all() and info["iterations"] >= 1


def test_fit_is_deterministic_and_learns():
    x, y = blobs(90)
    a, b = fit_softmax(x, y, 3, 1e-4, 100), fit_softmax(x, y, 3, 1e-4, 100)
    assert np.array_equal(a[0].numpy(), b[0].numpy()) and (predict(a[0], a[1], x) == y).mean() > 0.9


def test_choose_wd_best_then_larger_and_holdout():
    assert choose_wd({1e-6: 0.5, 1e-4: 0.7, 1e-2: 0.7}) == 1e-2
    assert choose_wd({1e-6: 0.9, 1e-2: 0.7}) == 1e-6
    fit, val = holdout(100, 0.2)
    assert len(val) == 20 and len(fit) == 80 and not set(fit) & set(val)
    assert np.array_equal(holdout(100, 0.2)[1], val)  # fixed permutation
    assert len(holdout(3, 0.01)[1]) == 1 and len(holdout(2, 0.99)[0]) == 1


def test_normalisation_uses_the_fitting_set():
    fit = np.array([[0.0, 10.0], [2.0, 30.0]])
    z = normalized(np.array([[1.0, 20.0]]), fit, "standardize")
    assert np.allclose(z, 0.0)
    assert np.allclose(np.linalg.norm(normalized(fit, fit, "l2"), axis=1), 1.0)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*VTAB-1k defines")  # 10x smaller than VTAB-1k on purpose
def test_vtab_shaped_task_selects_on_train800_val200_then_retrains(tmp_path):
    from test_methods import tiny_suite

    from vitbench import planner
    from vitbench.cells import RunContext

    suite = tiny_suite({"linear": {"select_train_split": "train800", "select_eval_split": "val200", "max_iter": 50}})
    cells = planner.expand(suite, ["vit_ti16"], ["linear"], weights="none")
    (_, record, _), = planner.execute(cells, tmp_path, RunContext(cache_dir=tmp_path / "cache", eval_batch_size=64))
    d = record["details"]
    assert d["selection"] == {"train_split": "train800", "eval_split": "val200"}
    assert (d["n_select_train"], d["n_select_eval"], d["n_train"], d["n_test"]) == (80, 20, 100, 100)
    assert d["chosen_wd"] == choose_wd({float(k): v for k, v in d["val_acc_per_wd"].items()})
    assert record["provenance"]["select_eval"]["n"] == 20 and record["provenance"]["train"]["n"] == 100


def test_fit_says_whether_it_converged():
    """A fit stopped by its iteration budget with a steep gradient says so; one given room converges."""
    x, y = blobs(120, noise=2.0)
    *_, short = fit_softmax(x, y, 3, 1e-6, max_iter=2)
    *_, long = fit_softmax(x, y, 3, 1e-2, max_iter=500)
    assert short["converged"] is False and short["grad_max"] > 1e-5
    assert long["converged"] is True and long["iterations"] < 500 and long["grad_max"] <= 1e-5
