"""The few-shot solvers against a plain float64 reference of big_vision's algorithm.

The single-l2 Cholesky path and the eigendecomposition path, both with the standardisation folded into the
weights, must predict exactly what the unfolded float64 computation predicts: clustered data (well separated
and overlapping), primal (N >= D+1) and dual, K from 2 to 1000, every precision mode.
"""

import numpy as np
import pytest
import torch

from vitbench import fewshot as fs
from vitbench.runners.fewshot import SOLVE_AND_PREDICT


def clusters(k, per_class, dim, n_test, *, spread, seed=0):
    """Class clusters with per-dimension offsets and scales (like pre-logits); `spread` sets the separation."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * spread
    scale = rng.uniform(0.2, 5.0, size=dim)
    offset = rng.normal(size=dim) * 10

    def draw(labels):
        return ((centers[labels] + rng.normal(size=(len(labels), dim))) * scale + offset).astype(np.float32)

    y_train = np.repeat(np.arange(k), per_class)
    y_test = rng.integers(0, k, size=n_test)
    return draw(y_train), y_train, draw(y_test), y_test


def reference(x_train, y_train, x_test, l2_regs, k):
    """big_vision's fewshot_lsr written plainly in float64 numpy: standardise, bias 100, eigh, loop over l2."""
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


# (K, shots per class, D): primal needs K*shots >= D+1, dual K*shots < D+1
CASES = {
    "K2-primal": (2, 25, 16), "K2-dual": (2, 5, 64), "K10-primal": (10, 10, 32), "K10-dual": (10, 2, 96),
    "K100-primal": (100, 5, 48), "K100-dual": (100, 1, 160), "K1000-primal": (1000, 1, 12),
}


@pytest.mark.parametrize("spread", [3.0, 0.3], ids=["separated", "overlapping"])
@pytest.mark.parametrize("case", list(CASES))
def test_single_l2_cholesky_predicts_exactly_the_float64_reference(case, spread):
    k, shots, dim = CASES[case]
    x_train, y_train, x_test, _ = clusters(k, shots, dim, n_test=600, spread=spread, seed=k + dim)
    for l2 in (2.0**-10, 1.0, fs.DEFAULT_L2, 2.0**19):
        clf = fs.lsr_fit(x_train, y_train, k, [l2])
        assert "Cholesky" in clf.solver and clf.solver.startswith("primal" if k * shots >= dim + 1 else "dual")
        np.testing.assert_array_equal(fs.classify(clf, x_test), reference(x_train, y_train, x_test, [l2], k))


@pytest.mark.parametrize("spread", [3.0, 0.3], ids=["separated", "overlapping"])
@pytest.mark.parametrize("case", ["K2-primal", "K10-dual", "K100-primal", "K100-dual"])
def test_folded_grid_path_predicts_exactly_the_float64_reference(case, spread):
    k, shots, dim = CASES[case]
    x_train, y_train, x_test, _ = clusters(k, shots, dim, n_test=500, spread=spread, seed=7 * k + dim)
    grid = list(fs.DEFAULT_L2_GRID)  # 30 values: the dual cases use the "project" strategy
    expected = reference(x_train, y_train, x_test, grid, k)
    np.testing.assert_array_equal(fs.lsr_predict(x_train, y_train, x_test, grid, k), expected)
    for l2 in (2.0**-10, fs.DEFAULT_L2):  # one l2 alone (Cholesky) agrees with its row of the grid (eigh)
        np.testing.assert_array_equal(fs.lsr_predict(x_train, y_train, x_test, [l2], k)[0], expected[grid.index(l2)])


@pytest.mark.parametrize("precision", sorted(SOLVE_AND_PREDICT))
@pytest.mark.parametrize("case", ["K2-dual", "K10-primal", "K100-dual", "K1000-primal"])
def test_every_precision_mode_agrees_with_the_float64_reference(case, precision):
    k, shots, dim = CASES[case]
    solve, predict = SOLVE_AND_PREDICT[precision]
    for spread, least in ((3.0, 1.0), (0.3, 0.99)):  # separated: identical; overlapping: near-ties may flip
        x_train, y_train, x_test, _ = clusters(k, shots, dim, n_test=600, spread=spread, seed=3 * k + dim)
        for l2_regs in ([fs.DEFAULT_L2], [1.0, fs.DEFAULT_L2, 2.0**15]):
            got = fs.lsr_predict(x_train, y_train, x_test, l2_regs, k, precision=solve, predict_precision=predict)
            agree = (got == reference(x_train, y_train, x_test, l2_regs, k)).mean()
            assert agree >= least, (precision, spread, l2_regs, agree)


def test_folding_is_exact_algebra():
    rng = np.random.default_rng(1)
    left = torch.from_numpy(rng.normal(size=(9, 5)))
    mean, std = torch.from_numpy(rng.normal(size=8) * 4), torch.from_numpy(rng.uniform(0.1, 3, size=8))
    x = torch.from_numpy(rng.normal(size=(20, 8)) * 3)
    weight, bias = fs.fold_standardisation(left, mean, std)
    unfolded = torch.nn.functional.pad((x - mean) / std, (0, 1), value=fs.BIAS_CONSTANT) @ left
    torch.testing.assert_close(x @ weight + bias, unfolded, rtol=1e-12, atol=1e-12)


def test_ties_go_to_the_lowest_class_id():
    x_test = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    flat = fs.LsrClassifier(torch.zeros(3, 8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64), None, 2, 4, "test")
    np.testing.assert_array_equal(fs.classify(flat, x_test), np.zeros((2, 7), dtype=np.int64))
    bias = torch.tensor([0.0, 1.0, 1.0, 0.0, 2.0, 0.0, 2.0, 2.0], dtype=torch.float64)
    tied = fs.LsrClassifier(torch.zeros(3, 8, dtype=torch.float64), bias, None, 2, 4, "test")
    np.testing.assert_array_equal(fs.classify(tied, x_test), np.array([[1] * 7, [0] * 7]))


def test_absent_classes_and_unbalanced_subsets_match_the_reference():
    x_train, y_train, x_test, _ = clusters(6, 4, 20, n_test=400, spread=1.0, seed=11)
    keep = (y_train < 4) & ~((y_train == 1) & (np.arange(len(y_train)) % 4 > 0))  # classes 4, 5 absent; class 1 once
    x, y = x_train[keep], y_train[keep]
    for l2_regs in ([fs.DEFAULT_L2], [2.0**-10], list(fs.DEFAULT_L2_GRID)):
        np.testing.assert_array_equal(fs.lsr_predict(x, y, x_test, l2_regs, 6), reference(x, y, x_test, l2_regs, 6))


def test_cholesky_falls_back_to_eigh_when_not_positive_definite(monkeypatch):
    x_train, y_train, x_test, _ = clusters(5, 6, 10, n_test=200, spread=1.0, seed=2)
    monkeypatch.setattr(fs.torch.linalg, "cholesky_ex", lambda a: (a, torch.tensor(1)))  # report failure
    clf = fs.lsr_fit(x_train, y_train, 5, [fs.DEFAULT_L2])
    assert "eigh" in clf.solver
    np.testing.assert_array_equal(fs.classify(clf, x_test), reference(x_train, y_train, x_test, [fs.DEFAULT_L2], 5))


def test_tensor_and_memmap_test_features(tmp_path):
    x_train, y_train, x_test, _ = clusters(4, 8, 16, n_test=300, spread=1.0, seed=4)
    path = tmp_path / "test.npy"
    np.save(path, x_test)
    mapped = np.load(path, mmap_mode="r")
    clf = fs.lsr_fit(x_train, y_train, 4, [fs.DEFAULT_L2])
    expected = reference(x_train, y_train, x_test, [fs.DEFAULT_L2], 4)
    for features in (mapped, torch.from_numpy(x_test)):
        np.testing.assert_array_equal(fs.classify(clf, features), expected)
