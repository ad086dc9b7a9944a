"""vitbench.certified_argmax: float32 scores with a rounding-error certificate give the float64 argmax."""

import numpy as np
import torch

from vitbench.certified_argmax import Float32Copy, argmax_certified, error_factor


def float64_argmax(rows, weight, bias, num_l2):
    return torch.addmm(bias, rows.double(), weight).view(len(rows), num_l2, -1).numpy().argmax(-1)


def problem(n=400, d=32, num_l2=3, k=7, seed=0, offset=5.0):
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy((rng.normal(size=(n, d)) + offset).astype(np.float32))
    weight = torch.from_numpy(rng.normal(size=(d, num_l2 * k)))
    bias = torch.from_numpy(rng.normal(size=num_l2 * k) * 10)
    return rows, weight, bias


def test_separated_scores_need_no_float64_and_match():
    rows, weight, bias = problem()
    best, redone = argmax_certified(rows, weight, bias, Float32Copy.of(weight, bias, 3), 3)
    np.testing.assert_array_equal(best, float64_argmax(rows, weight, bias, 3))
    assert best.shape == (400, 3) and redone < 0.05 * best.size


def test_near_ties_and_exact_ties_are_redone_in_float64():
    rows, weight, bias = problem(k=4, num_l2=2)
    weight[:, 1] = weight[:, 0]  # block 0: classes 0 and 1 tie exactly
    bias[1] = bias[0]
    weight[:, 6] = weight[:, 5] * (1 + 1e-12)  # block 1: classes 2 and 3 differ below float32 resolution
    bias[6] = bias[5] * (1 + 1e-12)
    best, redone = argmax_certified(rows, weight, bias, Float32Copy.of(weight, bias, 2), 2)
    np.testing.assert_array_equal(best, float64_argmax(rows, weight, bias, 2))
    assert redone > 0 and not (best[:, 0] == 1).any()  # an exact tie goes to the lower class id


def test_float64_rows_and_nan_rows_match_float64():
    rows, weight, bias = problem(seed=3)
    rows64 = rows.double() + torch.from_numpy(np.random.default_rng(4).normal(size=rows.shape) * 1e-9)
    rows64[5] = float("nan")
    best, _ = argmax_certified(rows64, weight, bias, Float32Copy.of(weight, bias, 3), 3)
    np.testing.assert_array_equal(best, float64_argmax(rows64, weight, bias, 3))


def test_the_bound_covers_the_actual_float32_error():
    rows, weight, bias = problem(n=300, d=768, num_l2=1, k=50, seed=7, offset=20.0)
    fast = Float32Copy.of(weight, bias, 1)
    got = torch.addmm(fast.bias, rows, fast.weight).double()
    exact = torch.addmm(bias, rows.double(), weight)
    bound = fast.factor * (torch.linalg.vector_norm(rows.double(), dim=1)[:, None] * fast.col_norm_max + fast.bias_max)
    assert ((got - exact).abs() <= bound).all()
    assert error_factor(769) > error_factor(10) > 2 * 2.0**-24
