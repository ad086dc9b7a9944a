"""Linear probe: softmax regression trained by full-batch L-BFGS on cached frozen features, weight decay
chosen on a validation split, then retrained on train + validation and scored on test.

What it follows:
- CLIP_benchmark (mlfoundations / LAION-AI `clip_benchmark/metrics/linear_probe.py`): a linear classifier on
  cached features; the weight decay is swept on a validation split (the dataset's own, or one carved out of
  the training split when it has none), then the classifier is retrained on train + validation with the
  chosen value and scored on test.
- CLIP (Radford et al. 2021, §3.2 and App. A.3): logistic regression fitted with L-BFGS (full batch), its
  regularisation strength chosen on a validation split. We solve the same objective with torch's L-BFGS
  (strong-Wolfe line search) in float64 from zero: deterministic, no seed.
- VTAB-1k (Zhai et al. 2019): select on train800 -> val200, retrain on train800val200, score test; set
  `select_train_split = "train800"`, `select_eval_split = "val200"` (as `vitbench/suite_files/vtab.toml` does). A task
  without such splits leaves both empty: `val_fraction` of its training split (a fixed permutation) is held
  out for the selection.
Objective: mean cross-entropy + wd/2 * ||W||^2 (bias not penalised), on features standardised with the
fitting set's mean and std (`normalize = "standardize"`; or "l2" as CLIP_benchmark's featurizer, or "none").
Exercised by `vitbench run --method linear`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitbench.errors import VitbenchError
from vitbench.methods.base import FeatureParams, Method, is_int, is_positive_number, register

NORMALIZE = ("standardize", "l2", "none")
STD_EPS = 1e-5  # as the few-shot standardisation (big_vision)


@dataclass(frozen=True)
class LinearParams(FeatureParams):  # few-shot's eval preprocessing: one shared feature cache
    wd_grid: Any = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2])  # logspace(-6, -2, 5)
    max_iter: int = 1000  # L-BFGS iterations per fit (each fit records whether it converged)
    normalize: str = "standardize"
    select_train_split: str = ""  # both empty: hold out `val_fraction` of the training split for selection
    select_eval_split: str = ""
    val_fraction: float = 0.2

    def check(self, where: str) -> None:
        super().check(where)
        grid = self.wd_grid if isinstance(self.wd_grid, (list, tuple)) else None
        if not grid or not all(is_positive_number(v) for v in grid):
            raise VitbenchError(f"{where}: linear wd_grid must be a non-empty list of positive numbers, got {self.wd_grid!r}")
        if not is_int(self.max_iter) or self.max_iter < 1:
            raise VitbenchError(f"{where}: linear max_iter must be a positive integer, got {self.max_iter!r}")
        if self.normalize not in NORMALIZE:
            raise VitbenchError(f"{where}: linear normalize must be one of {list(NORMALIZE)}, got {self.normalize!r}")
        if bool(self.select_train_split) != bool(self.select_eval_split):
            raise VitbenchError(f"{where}: linear select_train_split and select_eval_split are set together (or both left empty "
                                f"to hold out val_fraction of the training split), got {self.select_train_split!r} and {self.select_eval_split!r}")
        if not (isinstance(self.val_fraction, float) and 0.0 < self.val_fraction < 1.0):
            raise VitbenchError(f"{where}: linear val_fraction must be a number in (0, 1), got {self.val_fraction!r}")


# ------------------------------------------------------------------------------------------------- math
def normalized(x: np.ndarray, fit_on: np.ndarray, mode: str) -> np.ndarray:
    """`x` standardised with `fit_on`'s per-dimension mean and std (+1e-5), L2-normalised per row, or as is."""
    x = np.asarray(x, dtype=np.float64)
    if mode == "standardize":
        ref = np.asarray(fit_on, dtype=np.float64)
        return (x - ref.mean(0)) / (ref.std(0) + STD_EPS)
    if mode == "l2":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


CONVERGED_GRAD = 1e-5  # largest |gradient| of the objective (mean cross-entropy + wd/2 |W|^2) counted as converged


def fit_softmax(x: np.ndarray, y: np.ndarray, num_classes: int, wd: float, max_iter: int) -> tuple[Any, Any, dict]:
    """(W [D, K], b [K], info) minimising mean cross-entropy + wd/2 ||W||^2 by full-batch L-BFGS from zero."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    w = torch.zeros(xt.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def objective():
        return torch.nn.functional.cross_entropy(xt @ w + b, yt) + 0.5 * wd * (w * w).sum()

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    loss_t = objective()
    grad_w, grad_b = torch.autograd.grad(loss_t, [w, b])
    grad_max = float(max(grad_w.abs().max(), grad_b.abs().max()))
    iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
    # Converged: the objective's gradient is flat at the end (L-BFGS also stops on its evaluation budget or a
    # stalled line search, so the iteration count alone says nothing); otherwise the record says so.
    converged = grad_max <= CONVERGED_GRAD
    loss_t = loss_t.detach()
    return w.detach(), b.detach(), {"loss": float(loss_t), "iterations": iterations, "grad_max": grad_max,
                                    "converged": bool(converged)}


def predict(w, b, x: np.ndarray) -> np.ndarray:
    import torch

    return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)) @ w + b).argmax(1).numpy()


def choose_wd(val_acc: dict[float, float]) -> float:
    """The wd with the best validation accuracy; ties go to the larger (stronger regularisation)."""
    best = max(val_acc.values())
    return max(wd for wd, acc in val_acc.items() if acc >= best - 1e-12)


def holdout(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, validation indices) of a fixed permutation: round(n * fraction) (at least 1) held out."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(n * fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ------------------------------------------------------------------------------------------------ method
class Linear(Method):
    name = "linear"
    summary = "linear probe: softmax regression by full-batch L-BFGS on frozen features, wd chosen on a validation split"
    Params = LinearParams
    table_title = "linear probe accuracy (%)"

    def check_task(self, params: LinearParams, task, where: str) -> None:
        for role in ("select_train_split", "select_eval_split"):
            name = getattr(params, role)
            if name and name not in task.splits:
                raise VitbenchError(f"{where}: task {task.name!r}: linear.{role} must name one of its splits "
                                    f"{sorted(task.splits)}, got {name!r}")

    def expand(self, params: LinearParams) -> list[dict[str, Any]]:
        return [params.key_params()]

    def run_cell(self, cell, ctx, deps):
        import time

        from vitbench.cells import CellResult
        from vitbench.data.order import check_class_coverage
        from vitbench.features import cell_features, classification_metrics

        p, task = cell.params, cell.task
        t0 = time.perf_counter()
        names = [task.train_split, task.test_split] + [n for n in (p["select_train_split"], p["select_eval_split"]) if n]
        feats = cell_features(cell, ctx, names)
        (train, f_train), (test, f_test) = feats.splits[task.train_split], feats.splits[task.test_split]
        coverage = [check_class_coverage(task, task.train_split, train.labels, task.test_split, test.labels)]
        if p["select_train_split"]:
            coverage.append(check_class_coverage(task, p["select_train_split"], feats.splits[p["select_train_split"]][0].labels,
                                                 p["select_eval_split"], feats.splits[p["select_eval_split"]][0].labels))
        x_all, y_all = np.asarray(f_train.array), np.asarray(train.labels)
        if p["select_train_split"]:
            (s_train, f_s), (s_eval, f_e) = feats.splits[p["select_train_split"]], feats.splits[p["select_eval_split"]]
            x_fit, y_fit, x_val, y_val = np.asarray(f_s.array), s_train.labels, np.asarray(f_e.array), s_eval.labels
            selection = {"train_split": p["select_train_split"], "eval_split": p["select_eval_split"]}
        else:
            fit_idx, val_idx = holdout(len(y_all), p["val_fraction"])
            x_fit, y_fit, x_val, y_val = x_all[fit_idx], y_all[fit_idx], x_all[val_idx], y_all[val_idx]
            selection = {"train_split": f"{task.train_split} minus held-out", "eval_split": f"held-out {p['val_fraction']:g} of {task.train_split}",
                         "holdout_seed": 0}
        t1 = time.perf_counter()
        k, mode, iters = task.num_classes, p["normalize"], p["max_iter"]
        val_acc, fits = {}, {}
        for wd in p["wd_grid"]:
            w, b, info = fit_softmax(normalized(x_fit, x_fit, mode), y_fit, k, float(wd), iters)
            val_acc[float(wd)] = float((predict(w, b, normalized(x_val, x_fit, mode)) == y_val).mean())
            fits[repr(float(wd))] = info
        wd = choose_wd(val_acc)
        w, b, final = fit_softmax(normalized(x_all, x_all, mode), y_all, k, wd, iters)
        preds = predict(w, b, normalized(np.asarray(f_test.array), x_all, mode))
        unconverged = sorted(v for v, info in fits.items() if not info["converged"]) + ([] if final["converged"] else ["final"])
        if unconverged:
            warnings.warn(f"{cell.label}: linear probe fits did not converge within max_iter={iters} ({', '.join(unconverged)}); "
                          "raise max_iter in the suite's [linear] table", stacklevel=1)
        details = {
            "converged": not unconverged, "unconverged_fits": unconverged,
            "chosen_wd": wd, "val_acc_per_wd": {repr(v): a for v, a in val_acc.items()}, "selection": selection,
            "selection_fits": fits, "final_fit": final, "normalize": mode, "solver": "L-BFGS (strong Wolfe), float64",
            "n_train": int(len(y_all)), "n_select_train": int(len(y_fit)), "n_select_eval": int(len(y_val)),
            "n_test": int(len(test)), "feature_dim": int(x_all.shape[1]), "class_coverage": coverage,
            "timings": {"features_s": round(t1 - t0, 4), "fit_s": round(time.perf_counter() - t1, 4)},
        }
        roles = {"train": task.train_split, "test": task.test_split}
        roles.update({f"select_{r}": p[f"select_{r}_split"] for r in ("train", "eval") if p[f"select_{r}_split"]})
        return CellResult(metrics=classification_metrics(preds, test, task.metric), details=details,
                          provenance=feats.provenance(roles))

    def setting(self, rec) -> str:
        chosen = (rec.get("details") or {}).get("chosen_wd")
        grid = ", ".join(f"{v:g}" for v in (rec.get("params") or {}).get("wd_grid") or [])
        return f"wd {chosen:g} chosen on val from [{grid}]" if chosen is not None else f"wd from [{grid}]"


register(Linear())
