"""Few-shot linear evaluation: the protocol math (pure functions, no I/O).

Owns: sampling the n-shot subsets (`sample_shots`), the closed-form regularised least-squares classifier
(`lsr_fit`: a Cholesky solve for one l2, `lsr_factorize` + `classifier_from_factors`: one eigendecomposition for
many; `classify`, `lsr_predict`), accuracy, and l2 selection (`fixed`, `mean-rank`, `leave-self-out`, `cv`). Exercised by `vitbench fewshot` (through `vitbench.runners.fewshot`).

The protocol is big_vision's `fewshot_lsr` evaluator (docs/fewshot.md#big_vision-protocol):
- subsets: per seed one `numpy.random.default_rng(seed)`; classes 0..K-1 in order, one permutation of each
  class's train indices; the n-shot subset is the first n of each class, so subsets of a seed are nested;
- features standardised per dimension with the subset's mean and population std + 1e-5 (the same
  statistics are applied to test features), then a constant bias feature of 100 is appended;
- targets are 2*onehot - 1; W minimises ||XW - Y||^2 + l2 ||W||^2 (bias column penalised too);
- one eigendecomposition of X^T X (N >= D+1, primal) or X X^T (dual) serves every l2 value; for a single l2
  (the default) a Cholesky solve of the same system gives the same classifier faster;
- prediction is the argmax over classes; the metric is top-1 on the full test split. The standardisation and
  the bias feature are folded into the weights, so raw test features go through one GEMM.
l2 selection over a grid follows scenic/vmoe (mean rank across tasks) and uncertainty-baselines
(leave-self-out) (docs/fewshot.md#l2-grid-and-selection); `cv` is our addition and never looks at test data.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vitbench.certified_argmax import Float32Copy, argmax_certified
from vitbench.errors import VitbenchError
from vitbench.methods.fewshot import DEFAULT_L2, DEFAULT_L2_GRID, L2_SELECT_MODES  # noqa: F401 - defaults live there

BIAS_CONSTANT = 100.0  # big_vision BIAS_CONSTANT (docs/fewshot.md#big_vision-protocol)
STD_EPS = 1e-5  # added to the population std (docs/fewshot.md#big_vision-protocol)
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
    (docs/fewshot.md#big_vision-protocol: big_vision takes all of them silently).
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


@dataclass
class LsrClassifier:
    """Scores of raw (unstandardised) features for every l2: `(x @ weight + bias) [@ right]`, K columns per l2.

    The standardisation and the bias feature are folded into `weight` (D, m) and `bias` (m,), so test features
    go through one GEMM. `right` is None when `weight` holds W(l2) for all l2 (m = L*K), or the (r, L*K)
    spectral factor when `weight` projects onto the r eigen-directions first (dual, many l2).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    right: torch.Tensor | None
    num_l2: int
    num_classes: int
    solver: str  # recorded in each few-shot record's details
    fast: Float32Copy | None = None  # float64 predictions through float32 GEMMs with a certificate (CPU)
    rechecked: int = 0  # (test row, l2) pairs whose float32 scores were too close to call, redone in float64

    @property
    def prediction(self) -> str:
        """How test scores were computed (recorded in each few-shot record's details)."""
        if self.fast is None:
            return f"{str(self.weight.dtype).removeprefix('torch.')} GEMM"
        return f"float32 GEMM with a rounding-error certificate; {self.rechecked} close (row, l2) pairs redone in float64"


def _certifiable(dtype: torch.dtype, device) -> bool:
    """float64 predictions on CPU go through certified float32 GEMMs (float32 matmuls must be true float32)."""
    return dtype == torch.float64 and torch.device(device).type == "cpu" and torch.get_float32_matmul_precision() == "highest"


def _classifier(weight, bias, right, num_l2: int, k: int, solver: str, dtype: torch.dtype) -> LsrClassifier:
    """Cast the (float64 or float32) solution to the prediction dtype; "direct" float64 on CPU gets a certified
    float32 copy (its rounding-error bound is tight there; after the "project" GEMM it is not)."""
    clf = LsrClassifier(weight.to(dtype), bias.to(dtype), None if right is None else right.to(dtype), num_l2, k, solver)
    if right is None and _certifiable(dtype, weight.device):
        clf.fast = Float32Copy.of(clf.weight, clf.bias, num_l2)
    return clf


def _dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise VitbenchError(f"unknown precision {precision!r}; use one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def _with_bias(x_std: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.pad(x_std, (0, 1), value=BIAS_CONSTANT)


def _standardised(x_train, y_train, num_classes: int, precision: str, device):
    """(features standardised with a bias column [N, D+1], targets {-1,1}^K, mean, std) in `precision`."""
    dtype = _dtype(precision)
    x = x_train if isinstance(x_train, torch.Tensor) else torch.from_numpy(np.array(x_train))  # copy: memmaps
    x = x.to(device=device, dtype=dtype)
    y = torch.as_tensor(np.asarray(y_train.cpu() if isinstance(y_train, torch.Tensor) else y_train, dtype=np.int64),
                        device=device)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise VitbenchError(f"few-shot solve needs features [N, D] and N labels, got {tuple(x.shape)} and {len(y)}")
    n, d = x.shape
    mean = x.mean(0)
    xb = torch.empty(n, d + 1, dtype=dtype, device=x.device)  # standardised in place, bias column appended
    body = torch.sub(x, mean, out=xb[:, :d])
    std = torch.linalg.vector_norm(body, dim=0) / math.sqrt(n) + STD_EPS  # population std, two-pass
    body.div_(std)
    xb[:, d] = BIAS_CONSTANT
    onehot = torch.nn.functional.one_hot(y, num_classes).to(dtype)
    return xb, 2.0 * onehot - 1.0, mean, std


def _xt_targets(xb: torch.Tensor, y_train, num_classes: int) -> torch.Tensor:
    """X^T Y for Y = 2 onehot - 1 without a GEMM: twice the per-class sums of X minus its column sums."""
    y = torch.as_tensor(np.asarray(y_train.cpu() if isinstance(y_train, torch.Tensor) else y_train, dtype=np.int64),
                        device=xb.device)
    class_sums = torch.zeros(num_classes, xb.shape[1], dtype=xb.dtype, device=xb.device).index_add_(0, y, xb)
    return (2.0 * class_sums - xb.sum(0)).T


def gram(x: torch.Tensor, *, rows: bool = False) -> torch.Tensor:
    """X^T X (or X X^T with `rows`). On CPU through numpy, whose matmul recognises a product of a matrix with
    its own transpose and calls BLAS syrk: half the flops of a general GEMM (2x faster measured at D=768)."""
    if x.device.type != "cpu":
        return x @ x.T if rows else x.T @ x
    a = x.numpy()
    return torch.from_numpy(a @ a.T if rows else a.T @ a)


def eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix; on CPU numpy's LAPACK (25% faster than
    torch's at D=768, measured), elsewhere torch's."""
    if a.device.type != "cpu":
        return torch.linalg.eigh(a)
    eigs, q = np.linalg.eigh(a.numpy())
    return torch.from_numpy(eigs), torch.from_numpy(q)


def fold_standardisation(left: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with `x @ A + b == [(x - mean) / std, BIAS_CONSTANT] @ left` for raw features x.

    `left` has D+1 rows (the last one multiplies the bias feature); A = left[:D] / std, b = 100 left[D] - mean A.
    """
    weight = left[:-1] / std[:, None]
    return weight, BIAS_CONSTANT * left[-1] - mean @ weight


def lsr_factorize(
    x_train, y_train, num_classes: int, *, precision: str = "float64", device: str | torch.device = "cpu"
) -> LsrFactors:
    """Standardise, append the bias feature, and eigendecompose the Gram matrix (primal) or kernel (dual)."""
    xb, targets, mean, std = _standardised(x_train, y_train, num_classes, precision, device)
    n, d1 = xb.shape
    if n >= d1:
        eigs, q = eigh(gram(xb))
        return LsrFactors(mean, std, eigs, q, q.T @ _xt_targets(xb, y_train, num_classes), primal=True)
    eigs, q = eigh(gram(xb, rows=True))
    return LsrFactors(mean, std, eigs, xb.T @ q, q.T @ targets, primal=False)


def classifier_from_factors(factors: LsrFactors, l2_regs: Sequence[float], *, precision: str | None = None) -> LsrClassifier:
    """The folded classifier for every l2 of a factorisation; `precision` is that of the test-set GEMMs.

    Exact strategies, whichever costs fewer flops per test point: W(l2) for all l2 in one matrix ("direct"),
    or, when the factorisation has rank r < D+1 (dual), the projection onto the r eigen-directions followed by
    the per-l2 spectral factor ("project"). (A low-rank expansion of the l2 filter 1/(eigs + l2) cut the flops
    1.7x but ran slower with lower agreement; see BENCHMARKS.md "Few-shot".) Folding happens in the
    factorisation dtype, before the cast to the prediction dtype.
    """
    dtype = factors.eigs.dtype if precision is None else _dtype(precision)
    l2 = torch.as_tensor(np.asarray(l2_regs, dtype=np.float64), device=factors.eigs.device).to(factors.eigs.dtype)
    num_l2, (d1, r), k = len(l2), factors.lhs.shape, factors.rhs.shape[1]
    # scaled[:, j*K:(j+1)*K] = diag(1 / (eigs + l2_j)) @ rhs
    scaled = (factors.rhs[:, None, :] / (factors.eigs[:, None, None] + l2[None, :, None])).reshape(r, num_l2 * k)
    solver = "primal (eigh of X^T X)" if factors.primal else "dual (eigh of X X^T)"
    # flops per test point; a certified float32 GEMM ("direct" only) costs about half a float64 one
    direct = d1 * num_l2 * k * (0.5 if _certifiable(dtype, factors.eigs.device) else 1.0)
    if d1 * r + r * num_l2 * k < direct:  # "project"
        weight, bias = fold_standardisation(factors.lhs, factors.mean, factors.std)
        return _classifier(weight, bias, scaled, num_l2, k, solver, dtype)
    weight, bias = fold_standardisation(factors.lhs @ scaled, factors.mean, factors.std)  # "direct"
    return _classifier(weight, bias, None, num_l2, k, solver, dtype)


def lsr_solve_cholesky(
    x_train, y_train, num_classes: int, l2: float, *, precision: str = "float64", predict_precision: str | None = None,
    device: str | torch.device = "cpu",
) -> LsrClassifier | None:
    """The folded classifier for one l2 by a Cholesky solve; None when the regularised matrix is not numerically
    positive definite in `precision` (callers fall back to the eigendecomposition).

    Same system and same primal/dual choice as `lsr_factorize` (primal iff N >= D+1, as big_vision):
    primal W = (X^T X + l2 I)^-1 X^T Y, dual W = X^T (X X^T + l2 I)^-1 Y, X standardised with the bias column.
    One Cholesky factorisation costs a fraction of an eigendecomposition, which only pays off for many l2.
    """
    xb, targets, mean, std = _standardised(x_train, y_train, num_classes, precision, device)
    n, d1 = xb.shape
    primal = n >= d1
    system = gram(xb, rows=not primal)
    system.diagonal().add_(float(l2))
    chol, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:
        return None
    if primal:
        w = torch.cholesky_solve(_xt_targets(xb, y_train, num_classes), chol)
    else:
        w = xb.T @ torch.cholesky_solve(targets, chol)
    dtype = xb.dtype if predict_precision is None else _dtype(predict_precision)
    weight, bias = fold_standardisation(w, mean, std)
    solver = "primal (Cholesky of X^T X + l2 I)" if primal else "dual (Cholesky of X X^T + l2 I)"
    return _classifier(weight, bias, None, 1, num_classes, solver, dtype)


def lsr_fit(
    x_train, y_train, num_classes: int, l2_regs: Sequence[float], *, precision: str = "float64",
    predict_precision: str | None = None, device: str | torch.device = "cpu",
) -> LsrClassifier:
    """The few-shot classifier for every l2: a Cholesky solve for one l2, else one eigendecomposition."""
    if len(l2_regs) == 1:
        clf = lsr_solve_cholesky(x_train, y_train, num_classes, l2_regs[0], precision=precision,
                                 predict_precision=predict_precision, device=device)
        if clf is not None:
            return clf
    factors = lsr_factorize(x_train, y_train, num_classes, precision=precision, device=device)
    return classifier_from_factors(factors, l2_regs, precision=predict_precision)


def classify(clf: LsrClassifier, x_test) -> np.ndarray:
    """Predicted class ids `(num_l2, n_test)`; test features (numpy, memmap or tensor) are read in chunks.

    Ties go to the lowest class id (numpy's and torch's argmax both return the first maximum). With a certified
    float32 copy (`clf.fast`) the result is the float64 argmax (`vitbench/certified_argmax.py`).
    """
    dev, dtype = clf.weight.device, clf.weight.dtype
    num_l2, k = clf.num_l2, clf.num_classes
    n_test = len(x_test)
    out = np.empty((num_l2, n_test), dtype=np.int64)
    budget = _SCORE_BUDGET if dev.type == "cpu" else _SCORE_BUDGET_ACCEL
    chunk = max(1, min(n_test, budget // max(1, num_l2 * k)))
    for start in range(0, n_test, chunk):
        rows = _rows(x_test[start:start + chunk], dev, None if clf.fast is not None else dtype)
        if clf.fast is not None:
            best, redone = argmax_certified(rows, clf.weight, clf.bias, clf.fast, num_l2)
            clf.rechecked += redone
        else:
            scores = torch.addmm(clf.bias, rows, clf.weight)
            if clf.right is not None:
                scores = scores @ clf.right
            scores = scores.view(len(rows), num_l2, k)
            # numpy's SIMD argmax is ~2x faster than torch's on CPU; both return the first maximum
            best = scores.argmax(-1).cpu().numpy() if dev.type != "cpu" else scores.numpy().argmax(-1)
        out[:, start:start + len(rows)] = best.T
    return out


def lsr_factorize_big_vision_float32(x_train, y_train, num_classes: int, *, device: str | torch.device = "cpu") -> LsrFactors:
    """big_vision's `_precompute_cache` (`fewshot_lsr.py`) op for op in float32: mean and population std
    (sqrt of the mean squared deviation, as `jnp.std`) + 1e-5, standardise, pad a bias column of 100,
    targets 2 onehot - 1, then `eigh(X^T X)` with lhs = q, rhs = q^T (X^T Y) when N >= D+1, else
    `eigh(X X^T)` with lhs = X^T q, rhs = q^T Y."""
    f32 = torch.float32
    x = (x_train if isinstance(x_train, torch.Tensor) else torch.from_numpy(np.array(x_train))).to(device=device, dtype=f32)
    y = torch.as_tensor(np.asarray(y_train, dtype=np.int64), device=device)
    mean = x.mean(0)
    std = torch.sqrt(torch.mean(torch.square(torch.abs(x - mean)), 0)) + STD_EPS
    xb = _with_bias((x - mean) / std)
    targets = 2.0 * torch.nn.functional.one_hot(y, num_classes).to(f32) - 1.0
    if xb.shape[0] >= xb.shape[1]:
        eigs, q = torch.linalg.eigh(xb.T @ xb)
        return LsrFactors(mean, std, eigs, q, q.T @ (xb.T @ targets), primal=True)
    eigs, q = torch.linalg.eigh(xb @ xb.T)
    return LsrFactors(mean, std, eigs, xb.T @ q, q.T @ targets, primal=False)


def lsr_predict_big_vision_float32(factors: LsrFactors, x_test, l2_regs: Sequence[float]) -> np.ndarray:
    """Predicted class ids `(len(l2_regs), n_test)` computed in float32 in big_vision's own order of operations
    (`fewshot_lsr.py` `_eig_fewshot_acc_fn`): per l2, scaling = 1 / (eigs + l2), W = (lhs * scaling) @ rhs,
    scores = standardised test features (with the bias column) @ W, argmax. With float32 factors this is how
    big_vision's numbers are computed (JAX's default float32 on CPU); results still differ from JAX's in the
    last bits where the BLAS/LAPACK summation order differs (docs/preprocessing.md, "Few-shot precision")."""
    f32 = torch.float32
    eigs, lhs, rhs = factors.eigs.to(f32), factors.lhs.to(f32), factors.rhs.to(f32)
    mean, std = factors.mean.to(f32), factors.std.to(f32)
    rows = x_test if isinstance(x_test, torch.Tensor) else torch.from_numpy(np.array(x_test))
    xs = _with_bias((rows.to(eigs.device, f32) - mean) / std)
    out = np.empty((len(l2_regs), len(xs)), dtype=np.int64)
    for j, l2 in enumerate(l2_regs):
        scaling = 1.0 / (eigs + torch.tensor(float(l2), dtype=f32, device=eigs.device) * torch.ones_like(eigs))
        w = (lhs * scaling.reshape(1, -1)) @ rhs
        out[j] = (xs @ w).argmax(1).cpu().numpy()
    return out


def _rows(rows, device, dtype: torch.dtype | None) -> torch.Tensor:
    """A chunk of test features as a tensor on `device`: in `dtype`, or (None) float32/float64 as stored."""
    if isinstance(rows, torch.Tensor):
        keep = rows.dtype if rows.dtype in (torch.float32, torch.float64) else torch.float64
        return rows.to(device=device, dtype=dtype or keep)
    rows = np.asarray(rows)  # numpy, also a read-only memmap: one pass copies and converts
    keep = rows.dtype if rows.dtype in (np.float32, np.float64) else np.float64
    np_dtype = keep if dtype is None else torch.empty((), dtype=dtype).numpy().dtype
    return torch.from_numpy(np.array(rows, dtype=np_dtype)).to(device)


def lsr_predict_factored(
    factors: LsrFactors, x_test, l2_regs: Sequence[float], *, precision: str | None = None,
) -> np.ndarray:
    """Predicted class ids `(len(l2_regs), n_test)` for every l2 of one eigendecomposition.

    `precision` is the dtype of the prediction GEMMs (default: that of the factorisation).
    """
    return classify(classifier_from_factors(factors, l2_regs, precision=precision), x_test)


def lsr_predict(
    x_train, y_train, x_test, l2_regs: Sequence[float], num_classes: int | None = None, *,
    precision: str = "float64", predict_precision: str | None = None, device: str | torch.device = "cpu",
) -> np.ndarray:
    """Few-shot LSR predictions: class ids of shape `(len(l2_regs), n_test)`, one row per l2 value.

    Exactly big_vision's `fewshot_lsr` (module docstring): standardise with the train subset's mean and
    population std + 1e-5, append a bias feature of 100, regress {-1,1}^K targets with penalty l2, predict the
    argmax. One l2: a Cholesky solve; several: one eigendecomposition for all. `precision` is the solve dtype,
    `predict_precision` the dtype of the test-set GEMMs (default: same). Inputs are numpy arrays or tensors.
    """
    y = np.asarray(y_train, dtype=np.int64)
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    clf = lsr_fit(x_train, y, k, [float(v) for v in l2_regs], precision=precision,
                  predict_precision=predict_precision, device=device)
    return classify(clf, x_test)


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
    """One l2 for all tasks: the best mean rank across tasks (scenic / vmoe; docs/fewshot.md#l2-grid-and-selection).

    `acc`: pandas DataFrame (index tasks, columns l2 values) or `dict[task -> dict[l2 -> accuracy]]`.
    """
    return best_l2(mean_ranks(acc), prefer)


def select_l2_leave_self_out(acc, prefer: float = DEFAULT_L2) -> dict[str, float]:
    """Per task, the l2 with the best mean rank over the *other* tasks (uncertainty-baselines §1.4)."""
    table = _acc_table(acc)
    if len(table) < 2:
        raise VitbenchError("--l2-select leave-self-out needs at least 2 tasks; use mean-rank, cv or fixed")
    return {task: select_l2_mean_rank({t: r for t, r in table.items() if t != task}, prefer) for task in table}
