"""Few-shot linear evaluation (big_vision `fewshot_lsr`): parameters, cells, l2 selection and its tables.

Owns the few-shot protocol defaults (big_vision `configs/common_fewshot.py` / `get_fewshot_lsr`: shots 1, 5,
10, 25; 3 seeds; l2 = 1024; the l2 grid 2^-10..2^19 of scenic / vmoe for selection), one cell per (shots,
seed), and the l2 selection that spans several tasks (`mean-rank`, `leave-self-out`), applied when records
are summarised. The math is `vitbench/fewshot.py`; one cell runs in `vitbench/runners/fewshot.py`.
Exercised by `vitbench fewshot` and `vitbench run --method fewshot`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vitbench.errors import VitbenchError
from vitbench.methods.base import EXECUTION, FeatureParams, Method, as_list, check_seeds, is_int, is_positive_number, register

DEFAULT_L2 = 2.0**10  # big_vision l2_reg = 1024
DEFAULT_L2_GRID = tuple(2.0**e for e in range(-10, 20))  # 2^-10 .. 2^19, 30 values (scenic / uncertainty-baselines)
L2_SELECT_MODES = ("fixed", "mean-rank", "leave-self-out", "cv")
PRECISIONS = ("float64", "float32", "mixed")
FEATURE_LAYERS = ("pre_logits", "cls")
CROSS_TASK = ("mean-rank", "leave-self-out")  # l2 chosen from several tasks' records, at summary time


@dataclass(frozen=True)
class FewshotParams(FeatureParams):
    shots: Any = field(default_factory=lambda: [1, 5, 10, 25])
    seeds: Any = field(default_factory=lambda: [0, 1, 2], metadata=EXECUTION)
    l2: float = DEFAULT_L2
    l2_select: str = "fixed"
    l2_grid: Any = field(default_factory=lambda: list(DEFAULT_L2_GRID))
    # float64 solve; "mixed" = float64 solve + float32 prediction (BENCHMARKS.md); "float32" = big_vision's own
    # float32 computation, in its order of operations (docs/preprocessing.md)
    precision: str = "float64"
    cv_folds: int = 5
    # big_vision reads out["pre_logits"]: tanh(Dense) when the checkpoint has a representation layer, else the
    # class token after the final LayerNorm ("cls": always the class token); docs/preprocessing.md
    feature_layer: str = "pre_logits"

    def check(self, where: str) -> None:
        check_seeds(self.seeds, where)
        super().check(where)  # img_size and the eval preprocessing
        if self.feature_layer not in FEATURE_LAYERS:
            raise VitbenchError(f"{where}: feature_layer must be one of {list(FEATURE_LAYERS)}, got {self.feature_layer!r}")
        shots = as_list(self.shots)
        if not shots or any(not is_int(s) or s < 1 for s in shots):
            raise VitbenchError(f"{where}: shots must be positive integers like 1,5,10,25, got {self.shots!r}")
        if self.l2_select not in L2_SELECT_MODES:
            raise VitbenchError(f"{where}: l2_select must be one of {list(L2_SELECT_MODES)}, got {self.l2_select!r}")
        if not is_positive_number(self.l2):
            raise VitbenchError(f"{where}: l2 must be a positive number, got {self.l2!r}")
        grid = self.l2_grid if isinstance(self.l2_grid, (list, tuple)) else None
        if grid is None or (self.l2_select != "fixed" and not grid) or not all(is_positive_number(v) for v in grid):
            raise VitbenchError(f"{where}: l2_grid must be a non-empty list of positive numbers, got {self.l2_grid!r}")
        if self.precision not in PRECISIONS:
            raise VitbenchError(f"{where}: precision must be float64, mixed (float64 solve, float32 prediction) or float32, got {self.precision!r}")
        if not is_int(self.cv_folds) or self.cv_folds < 2:
            raise VitbenchError(f"{where}: cv_folds must be an integer >= 2, got {self.cv_folds!r}")


class Fewshot(Method):
    name = "fewshot"
    summary = "closed-form ridge (LSR) on frozen pre-logits to {-1,1}^K targets, n examples per class (big_vision)"
    Params = FewshotParams
    label_params = ("shots",)
    table_title = "few-shot accuracy (%), mean ± std over seeds"

    def expand(self, params: FewshotParams) -> list[dict[str, Any]]:
        variants = [{**params.key_params(), "shots": s} for s in as_list(params.shots)]
        if params.l2_select == "fixed":
            for v in variants:
                v["l2_grid"] = []  # only the fixed value is solved; recorded as such
        return variants

    def run_cell(self, cell, ctx, deps):
        from vitbench.runners.fewshot import run_cell

        return run_cell(cell, ctx)

    def setting(self, rec) -> str:
        p = rec.get("params") or {}
        sel = p.get("l2_select", "fixed")
        tail = f", l2={p.get('l2'):g}" if sel == "fixed" and p.get("l2") is not None else f", l2 {sel}"
        return f"{p.get('shots')}-shot{tail}"

    def paper_method(self, rec) -> str:
        return f"fewshot:{int((rec.get('params') or {}).get('shots') or 0)}"

    def values(self, records):
        """The task's metric; for l2 chosen across tasks (mean-rank / leave-self-out) the accuracy at the l2
        chosen within the record's own definition (`vitbench.report.fewshot_select`), with a note when the
        choice could only be the fixed l2 (one task)."""
        from vitbench.report.fewshot_select import choose_l2

        out = super().values(records)
        for (_, key), (l2, value, note) in choose_l2(records).items():
            out[key] = {"value": value if value is not None else out[key]["value"], "chosen_l2": l2, "note": note}
        return out

    def summary_table(self, records):
        return fewshot_table(summarize_fewshot(records))


register(Fewshot())


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
            "metric": d.get("metric", "top1"), "fixed_l2": float(prm.get("l2", DEFAULT_L2)),
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
    import numpy as np
    import pandas as pd

    from vitbench import fewshot as fs

    rows = _flat_rows(records)
    cols = ["model", "weights_id", "l2_select", "task", "shots", "metric", "mean", "std", "n_seeds", "l2"]
    if not rows:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame(rows)
    out = []
    for (model, wid, mode, shots), grp in frame.groupby(["model", "weights_id", "l2_select", "shots"], sort=True, dropna=False):
        chosen: dict[str, float] = {}
        if mode in CROSS_TASK:
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
