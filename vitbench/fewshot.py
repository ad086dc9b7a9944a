"""Few-shot linear evaluation: the protocol math (pure functions, no I/O).

Owns: sampling the n-shot subsets (`sample_shots`), the closed-form regularised least-squares classifier
solved once for many l2 values (`lsr_factorize`, `lsr_predict`), accuracy, and l2 selection (`fixed`,
`mean-rank`, `leave-self-out`, `cv`). Exercised by `vitbench fewshot` (through `vitbench.runners.fewshot`).

The protocol is big_vision's `fewshot_lsr` evaluator (fewshot_and_paper.md §1.3):
- subsets: per seed one `numpy.random.default_rng(seed)`; classes 0..K-1 in order, one permutation of each
  class's train indices; the n-shot subset is the first n of each class, so subsets of a seed are nested;
- features standardised per dimension with the subset's mean and population std + 1e-5 (the same
  statistics are applied to test features), then a constant bias feature of 100 is appended;
- targets are 2*onehot - 1; W minimises ||XW - Y||^2 + l2 ||W||^2 (bias column penalised too);
- one eigendecomposition of X^T X (N >= D+1, primal) or X X^T (dual) serves every l2 value;
- prediction is the argmax over classes; the metric is top-1 on the full test split.
l2 selection over a grid follows scenic/vmoe (mean rank across tasks) and uncertainty-baselines
(leave-self-out) (fewshot_and_paper.md §1.4); `cv` is our addition and never looks at test data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vitbench.errors import VitbenchError
from vitbench.methods.fewshot import DEFAULT_L2, DEFAULT_L2_GRID, L2_SELECT_MODES  # noqa: F401 - defaults live there

BIAS_CONSTANT = 100.0  # big_vision BIAS_CONSTANT (fewshot_and_paper.md §1.3)
STD_EPS = 1e-5  # added to the population std (fewshot_and_paper.md §1.3)
PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
# Scores buffer per prediction chunk: rows * len(l2_regs) * num_classes stays below this many elements
# (CPU: small enough to stay in cache, measured 8% faster than 4x larger; accelerators: large launches).
_SCORE_BUDGET = 1 << 22
_SCORE_BUDGET_ACCEL = 1 << 26


class FewShotWarning(UserWarning):
    """A class has fewer train examples than the requested shots; the subset is unbalanced."""


# ----------------------------------------------------------------------------------------------- sampling
def sample_shots(
    labels: np.ndarray, shots: int | Iterable[int], seed: int, num_classes: int | None = None
) -> dict[int, np.ndarray]:
    """The n-shot train subsets of one seed: `{n: int64 index array}`, classes in order 0..K-1.

    For each class (in order) one permutation of its indices is drawn from `numpy.random.default_rng(seed)`;
    the n-shot subset is the first n of every class's permutation, so subsets of one seed are nested.
    A class with fewer than n examples contributes all it has and a `FewShotWarning` is issued
    (fewshot_and_paper.md §1.3: big_vision takes all of them silently).
    """
    labels = np.asarray(labels)
    shot_list = [int(shots)] if np.isscalar(shots) else [int(s) for s in shots]
    if any(s < 1 for s in shot_list):
        raise VitbenchError(f"shots must be positive integers, got {shot_list}; pass e.g. --shots 1,5,10,25")
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1 if labels.size else 0
    order = np.argsort(labels, kind="stable")  # indices grouped by class, increasing within a class
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(order[bounds[c]:bounds[c + 1]]) for c in range(k)]
    out: dict[int, np.ndarray] = {}
    for n in shot_list:
        short = [c for c, p in enumerate(perms) if len(p) < n]
        if short:
            warnings.warn(
                f"{len(short)} class(es) have fewer than {n} train examples (e.g. class {short[0]}); "
                f"the {n}-shot subset is unbalanced", FewShotWarning, stacklevel=2,
            )
        out[n] = np.concatenate([p[:n] for p in perms] or [np.zeros(0, np.int64)]).astype(np.int64)
    return out


def short_classes(labels: np.ndarray, shots: int, num_classes: int) -> list[int]:
    """Classes 0..num_classes-1 with fewer than `shots` examples in `labels` (they make a subset unbalanced)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    return [int(c) for c in np.flatnonzero(counts < shots)]


# ------------------------------------------------------------------------------------------------ solving
@dataclass
class LsrFactors:
    """One eigendecomposition serving every l2: W(l2) = lhs @ diag(1 / (eigs + l2)) @ rhs.

    `lhs` is (D+1, r), `eigs` (r,), `rhs` (r, K) with r = min(N, D+1); `mean`/`std` standardise features.
    """

    mean: torch.Tensor
    std: torch.Tensor
    eigs: torch.Tensor
    lhs: torch.Tensor
    rhs: torch.Tensor
    primal: bool


def _dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise VitbenchError(f"unknown precision {precision!r}; use one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def _with_bias(x_std: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(x_std, (0, 1), value=BIAS_CONSTANT)


def lsr_factorize(
    x_train, y_train, num_classes: int, *, precision: str = "float64", device: str | torch.device = "cpu"
) -> LsrFactors:
    """Standardise, append the bias feature, and eigendecompose the Gram matrix (primal) or kernel (dual)."""
    dtype = _dtype(precision)
    x = x_train if isinstance(x_train, torch.Tensor) else torch.from_numpy(np.array(x_train))  # copy: memmaps
    x = x.to(device=device, dtype=dtype)
    y = torch.as_tensor(np.asarray(y_train.cpu() if isinstance(y_train, torch.Tensor) else y_train, dtype=np.int64),
                        device=device)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise VitbenchError(f"few-shot solve needs features [N, D] and N labels, got {tuple(x.shape)} and {len(y)}")
    mean = x.mean(0)
    std = x.std(0, correction=0) + STD_EPS
    xb = _with_bias((x - mean) / std)
    targets = 2.0 * torch.nn.functional.one_hot(y, num_classes).to(dtype) - 1.0
    n, d1 = xb.shape
    if n >= d1:
        eigs, q = torch.linalg.eigh(xb.T @ xb)
        return LsrFactors(mean, std, eigs, q, q.T @ (xb.T @ targets), primal=True)
    eigs, q = torch.linalg.eigh(xb @ xb.T)
    return LsrFactors(mean, std, eigs, xb.T @ q, q.T @ targets, primal=False)


def lsr_predict_factored(
    factors: LsrFactors, x_test, l2_regs: Sequence[float], *, precision: str | None = None,
) -> np.ndarray:
    """Predicted class ids `(len(l2_regs), n_test)` for every l2, with batched GEMMs per test chunk.

    `precision` is the dtype of the prediction GEMMs (default: that of the factorisation). Exact strategies,
    whichever costs fewer flops: form all W(l2) and apply them in one GEMM ("direct"), or, when the
    factorisation has rank r < D+1 (dual), project test features onto the r eigen-directions first
    ("project"). (A low-rank expansion of the l2 filter 1/(eigs + l2) cut the flops 1.7x but ran slower
    with lower agreement; see BENCHMARKS.md "Few-shot".)
    """
    dtype = factors.eigs.dtype if precision is None else _dtype(precision)
    dev = factors.eigs.device
    l2 = torch.as_tensor(np.asarray(l2_regs, dtype=np.float64), device=dev).to(factors.eigs.dtype)
    num_l2, (d1, r), k = len(l2), factors.lhs.shape, factors.rhs.shape[1]
    # scaled[:, j*K:(j+1)*K] = diag(1 / (eigs + l2_j)) @ rhs
    scaled = (factors.rhs[:, None, :] / (factors.eigs[:, None, None] + l2[None, :, None])).reshape(r, num_l2 * k)
    if d1 * r + r * num_l2 * k < d1 * num_l2 * k:  # "project"
        left, right = factors.lhs.to(dtype), scaled.to(dtype)
    else:  # "direct": W for all l2, formed in the prediction dtype
        left, right = factors.lhs.to(dtype) @ scaled.to(dtype), None
    mean, std = factors.mean.to(dtype), factors.std.to(dtype)
    n_test = len(x_test)
    out = np.empty((num_l2, n_test), dtype=np.int64)
    budget = _SCORE_BUDGET if dev.type == "cpu" else _SCORE_BUDGET_ACCEL
    chunk = max(1, min(n_test, budget // max(1, num_l2 * k)))
    for start in range(0, n_test, chunk):
        rows = x_test[start:start + chunk]  # numpy (also a read-only memmap) or tensor; copied per chunk
        rows = rows if isinstance(rows, torch.Tensor) else torch.from_numpy(np.array(rows))
        xs = _with_bias((rows.to(dev, dtype) - mean) / std)
        scores = (xs @ left if right is None else (xs @ left) @ right).view(len(xs), num_l2, k)
        # numpy's SIMD argmax is ~2x faster than torch's on CPU; both return the first maximum
        best = scores.argmax(-1).cpu().numpy() if dev.type != "cpu" else scores.numpy().argmax(-1)
        out[:, start:start + len(xs)] = best.T
    return out


def lsr_predict(
    x_train, y_train, x_test, l2_regs: Sequence[float], num_classes: int | None = None, *,
    precision: str = "float64", predict_precision: str | None = None, device: str | torch.device = "cpu",
) -> np.ndarray:
    """Few-shot LSR predictions: class ids of shape `(len(l2_regs), n_test)`, one row per l2 value.

    Exactly big_vision's `fewshot_lsr` (module docstring): standardise with the train subset's mean and
    population std + 1e-5, append a bias feature of 100, regress {-1,1}^K targets with penalty l2 (one
    eigendecomposition for all l2), predict the argmax. `precision` is the factorisation dtype,
    `predict_precision` the dtype of the test-set GEMMs (default: same). Inputs are numpy arrays or tensors.
    """
    y = np.asarray(y_train, dtype=np.int64)
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    factors = lsr_factorize(x_train, y, k, precision=precision, device=device)
    return lsr_predict_factored(factors, x_test, l2_regs, precision=predict_precision)


def accuracy_per_l2(predictions: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Top-1 accuracy for each row of `predictions` `(L, n_test)`."""
    return (np.asarray(predictions) == np.asarray(y_test)[None, :]).mean(axis=1)


# ---------------------------------------------------------------------------------------------- selection
def check_l2_select(mode: str) -> str:
    if mode not in L2_SELECT_MODES:
        from vitbench.errors import unknown_name

        raise unknown_name("l2 selection mode", mode, L2_SELECT_MODES)
    return mode


def best_l2(scores: Mapping[float, float], prefer: float = DEFAULT_L2) -> float:
    """The l2 with the highest score; ties go to the value closest to `prefer` in log scale, then the smaller."""
    top = max(scores.values())
    tied = [l2 for l2, s in scores.items() if s >= top - 1e-12]
    return float(min(tied, key=lambda v: (abs(math.log2(v) - math.log2(prefer)), v)))


def cv_fold_ids(labels: np.ndarray, folds: int) -> np.ndarray:
    """Fold id per example: the i-th example of class c goes to fold (i + c) % folds (spreads 1-shot classes)."""
    labels = np.asarray(labels, dtype=np.int64)
    rank_in_class = np.zeros(len(labels), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(labels.tolist()):
        rank_in_class[i] = seen.get(c, 0)
        seen[c] = rank_in_class[i] + 1
    return (rank_in_class + labels) % folds


def cv_accuracy_per_l2(
    x_subset, y_subset, l2_regs: Sequence[float], num_classes: int, *, folds: int = 5,
    precision: str = "float64", device: str | torch.device = "cpu",
) -> np.ndarray:
    """Mean held-out accuracy per l2 over k folds of the few-shot subset only (test data never touched).

    Each fold is standardised with its own training part's statistics, exactly as the final solve is.
    Accuracy is pooled over all held-out examples. `folds` is capped at the subset size.
    """
    y = np.asarray(y_subset, dtype=np.int64)
    x = np.asarray(x_subset)
    folds = max(2, min(int(folds), len(y)))
    fold = cv_fold_ids(y, folds)
    correct = np.zeros(len(l2_regs))
    for f in range(folds):
        held = fold == f
        if not held.any() or held.all():
            continue
        pred = lsr_predict(x[~held], y[~held], x[held], l2_regs, num_classes, precision=precision, device=device)
        correct += (pred == y[held][None, :]).sum(axis=1)
    return correct / len(y)


def _acc_table(acc) -> "dict[str, dict[float, float]]":
    """Normalise a DataFrame (index tasks, columns l2) or dict[task -> dict[l2 -> acc]]."""
    if hasattr(acc, "to_dict") and hasattr(acc, "index"):
        acc = {task: row.to_dict() for task, row in acc.iterrows()}
    table = {str(t): {float(l2): float(a) for l2, a in row.items()} for t, row in acc.items()}
    if not table:
        raise VitbenchError("l2 selection needs accuracies of at least one task; run the few-shot cells first")
    grids = {tuple(sorted(row)) for row in table.values()}
    if len(grids) != 1:
        raise VitbenchError("l2 selection needs every task evaluated on the same l2 grid; rerun with one --l2 grid")
    return table


def mean_ranks(acc) -> dict[float, float]:
    """Mean over tasks of each l2's rank by accuracy within its task (higher rank = better; ties averaged)."""
    import pandas as pd

    frame = pd.DataFrame(_acc_table(acc)).T  # tasks x l2
    return {float(k): float(v) for k, v in frame.rank(axis=1, method="average").mean(axis=0).items()}


def select_l2_mean_rank(acc, prefer: float = DEFAULT_L2) -> float:
    """One l2 for all tasks: the best mean rank across tasks (scenic / vmoe; fewshot_and_paper.md §1.4).

    `acc`: pandas DataFrame (index tasks, columns l2 values) or `dict[task -> dict[l2 -> accuracy]]`.
    """
    return best_l2(mean_ranks(acc), prefer)


def select_l2_leave_self_out(acc, prefer: float = DEFAULT_L2) -> dict[str, float]:
    """Per task, the l2 with the best mean rank over the *other* tasks (uncertainty-baselines §1.4)."""
    table = _acc_table(acc)
    if len(table) < 2:
        raise VitbenchError("--l2-select leave-self-out needs at least 2 tasks; use mean-rank, cv or fixed")
    return {task: select_l2_mean_rank({t: r for t, r in table.items() if t != task}, prefer) for task in table}
