"""Exact argmax of linear scores at float32 speed: float32 GEMM, a rounding-error bound, float64 where it is close.

Owns `Float32Copy` (float32 weights plus the column norms the bound needs) and `argmax_certified`, used by
`vitbench.fewshot.classify` for `--precision float64` predictions on CPU (`vitbench fewshot`). Measured in
`benchmarks/fewshot.py`.

Scores s = x W + b over blocks of K columns (one block per l2). Computed in float32 from W, b rounded to
float32 (and x rounded too when it is not float32 already), every score is within
    E = c * (||x||_2 ||w_j||_2 + |b_j|),  c = 2 u + u^2 + gamma_{n+1} (1 + u)^2,  gamma_m = m u / (1 - m u)
of its exact value (u = 2^-24; the standard bound for a dot product of n terms in any summation order, Higham
"Accuracy and Stability of Numerical Algorithms" §3.1, with Cauchy-Schwarz for sum |x_i||w_ij|). ||x|| computed
in float32 is raised by its own worst-case rounding error, and c is doubled as a further margin. When exactly
one score of a block is >= top - 2 E (E with the block's largest ||w_j|| and |b_j|), that score is the exact
argmax; otherwise (close calls, exact ties, NaN) that row's block is recomputed in float64. So the result is
the argmax of the float64 computation (which can itself differ from exact arithmetic only on margins below
float64 rounding), ties going to the lowest index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

U32 = 2.0**-24  # unit roundoff of float32


def error_factor(terms: int) -> float:
    """c of the module docstring for dot products of `terms` terms (bias included), doubled as margin."""
    gamma = terms * U32 / (1.0 - terms * U32)
    return 2.0 * (2 * U32 + U32 * U32 + gamma * (1 + U32) ** 2)


@dataclass
class Float32Copy:
    """float32 copies of float64 `weight` (n, L*K) and `bias` (L*K,), with per-block bound inputs (float64)."""

    weight: torch.Tensor
    bias: torch.Tensor
    col_norm_max: torch.Tensor  # (L,) largest ||w_j||_2 of each block
    bias_max: torch.Tensor  # (L,) largest |b_j| of each block (0 without bias)
    factor: float

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor, num_l2: int) -> "Float32Copy":
        norms = torch.linalg.vector_norm(weight, dim=0).view(num_l2, -1).amax(1)
        bmax = bias.abs().view(num_l2, -1).amax(1)
        return cls(weight.float(), bias.float(), norms, bmax, error_factor(weight.shape[0] + 1))


def argmax_certified(
    rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, fast: Float32Copy, num_l2: int,
) -> tuple[np.ndarray, int]:
    """(argmax per row and block `(n, L)` equal to that of float64 `rows @ weight + bias`, pairs recomputed).

    `rows` is float32 (raw features: exact in float32) or float64; `weight`/`bias` are the float64 originals.
    """
    n = len(rows)
    rows32 = rows if rows.dtype == torch.float32 else rows.float()
    scores = torch.addmm(fast.bias, rows32, fast.weight)
    scores = scores.view(n, num_l2, -1)
    # ||x|| in the rows' own dtype (a float64 cast is 30x slower), raised by its own worst-case rounding error
    d = rows.shape[1]
    x_norm = torch.linalg.vector_norm(rows, dim=1).double() * (1.0 + 2.0 * (d + 2) * U32)
    err = fast.factor * (x_norm[:, None] * fast.col_norm_max[None, :] + fast.bias_max[None, :])  # (n, L)
    top = scores.amax(-1)
    # threshold rounded to float32, then one ulp down so the comparison never misses a competitor
    threshold = torch.nextafter((top.double() - 2.0 * err).float(), torch.tensor(-np.inf, dtype=torch.float32))
    close = ((scores >= threshold[..., None]).sum(-1) != 1).numpy()  # (n, L): not exactly one contender
    best = scores.numpy().argmax(-1)  # numpy's SIMD argmax: ~2x torch's on CPU; first maximum
    k = scores.shape[-1]
    for block in np.flatnonzero(close.any(0)):  # redo only the close (row, l2) pairs, one GEMM per l2 block
        redo = np.flatnonzero(close[:, block])
        cols = slice(block * k, (block + 1) * k)
        sub = rows[redo].double()
        exact = torch.addmm(bias[cols], sub, weight[:, cols])
        best[redo, block] = exact.numpy().argmax(-1)
    return best, int(close.sum())
