"""The wide VTAB-1k table and the Table-2 style table, as VTAB papers print them.

`vtab_table(agg, long)`: one row per model / method / setting (one row definition), one column per task in
the paper's Table 9 order (7 natural, 4 specialized, 8 structured), then the three group means, the mean over
the 19 tasks (BiT's task-weighted number) and the mean of the three group means (used by many later papers),
each labelled; mean ± std over seeds; a missing task is shown as missing and every mean over fewer tasks than
the full group says over how many. `table2(agg, vtab)`: ImageNet, ReaL, CIFAR-10/100, Pets, Flowers and VTAB
(19 tasks) per model, with the paper's rows beside. Exercised by `vitbench report`.
"""

from __future__ import annotations

import math

import pandas as pd

from vitbench.report.tables import VTAB_GROUPS, fmt

VTAB_ORDER = {
    "natural": ["caltech101", "cifar100", "dtd", "flowers102", "pets", "sun397", "svhn"],
    "specialized": ["patch_camelyon", "eurosat", "resisc45", "retinopathy"],
    "structured": ["clevr_count", "clevr_dist", "dmlab", "dsprites_loc", "dsprites_ori", "kitti_dist", "smallnorb_azi",
                   "smallnorb_ele"],
}
ALL_VTAB = sum(VTAB_ORDER.values(), [])
ROW_KEYS = ["suite", "model", "weights_id", "pretrain", "method", "row_setting", "row_id"]
TABLE2_COLUMNS = {"imagenet": "ImageNet", "imagenet_real": "ImageNet ReaL", "cifar10": "CIFAR-10",
                  "cifar100_full": "CIFAR-100", "pets_full": "Oxford-IIIT Pets", "flowers102_full": "Oxford Flowers-102"}
MULTIPLE = "multiple definitions ({n}): see the summary"


def vtab_columns(agg: pd.DataFrame) -> dict[str, list[str]]:
    """Tasks per group: the 19 of Table 9 in order, then any other task recorded in that group."""
    cols = {g: list(VTAB_ORDER[g]) for g in VTAB_GROUPS}
    for g in VTAB_GROUPS:
        cols[g] += sorted(set(agg.loc[agg["group"] == g, "task"]) - set(cols[g]))
    return cols


def _seed_std(per_seed: dict, tasks: list[str]) -> float:
    """Std over seeds of the per-seed mean over `tasks`, using the seeds every task has (0 if < 2 such seeds).
    `per_seed`: seed -> task -> values of one row definition."""
    if not tasks or not per_seed:
        return 0.0
    wanted = set(tasks)
    means = [sum(sum(v) / len(v) for t, v in by_task.items() if t in wanted) / len(tasks)
             for by_task in per_seed.values() if wanted.issubset(by_task)]
    if len(means) < 2:
        return 0.0
    return float(pd.Series(means).std(ddof=1))


def _values_by_row(long: pd.DataFrame) -> dict:
    """row_id -> seed -> task -> values (NaN dropped) of the VTAB-group records: read once for every row."""
    out: dict = {}
    if long.empty:
        return out
    for rid, group, task, seed, value in zip(long["row_id"], long["group"], long["task"], long["seed"], long["value"]):
        if group in VTAB_GROUPS and value == value:  # NaN-safe
            out.setdefault(rid, {}).setdefault(seed, {}).setdefault(task, []).append(value)
    return out


def vtab_table(agg: pd.DataFrame, long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table, numeric table). Numeric columns: per task mean; per group `<g>_mean`, `<g>_std`,
    `<g>_tasks`; `mean_over_tasks`, `mean_over_tasks_std`, `tasks`; `mean_of_group_means`."""
    sub = agg[agg["group"].isin(VTAB_GROUPS) & (agg["stage"] != "select")] if not agg.empty else agg
    if sub.empty:
        return pd.DataFrame(), pd.DataFrame()
    cols = vtab_columns(sub)
    display, numeric = [], []
    values = _values_by_row(long)
    rows: dict[tuple, dict[str, list]] = {}  # row keys -> task -> aggregated rows, in order of first appearance
    for r in sub[ROW_KEYS + ["task", "mean", "std", "n"]].to_dict("records"):
        rows.setdefault(tuple(r[k] for k in ROW_KEYS), {}).setdefault(r["task"], []).append(r)
    for key, by_task in rows.items():
        ident = dict(zip(ROW_KEYS, key))
        per_seed = values.get(ident["row_id"], {})
        shown = {"model": ident["model"], "weights": ident["weights_id"], "pretrain": ident["pretrain"],
                 "method": ident["method"], "setting": ident["row_setting"]}
        num = dict(shown, suite=ident["suite"], weights_id=ident["weights_id"])
        task_means: dict[str, float] = {}
        for g in VTAB_GROUPS:
            for task in cols[g]:
                hit = by_task.get(task, [])
                if len(hit) > 1:
                    shown[task], num[task] = MULTIPLE.format(n=len(hit)), float("nan")
                elif len(hit):
                    r = hit[0]
                    shown[task], num[task] = fmt(r["mean"], r["std"], int(r["n"])), float(r["mean"])
                    task_means[task] = float(r["mean"])
                else:
                    shown[task], num[task] = "missing", float("nan")
        group_means = {}
        for g in VTAB_GROUPS:
            present = [t for t in cols[g] if t in task_means]
            expected = len(VTAB_ORDER[g])
            mean = sum(task_means[t] for t in present) / len(present) if present else float("nan")
            std = _seed_std(per_seed, present)
            group_means[g] = mean
            num.update({f"{g}_mean": mean, f"{g}_std": std, f"{g}_tasks": len(present)})
            shown[f"{g} mean ({expected} tasks)"] = _mean_text(mean, std, len(present), expected)
        tasks = list(task_means)
        overall = sum(task_means.values()) / len(tasks) if tasks else float("nan")
        overall_std = _seed_std(per_seed, tasks)
        num.update({"mean_over_tasks": overall, "mean_over_tasks_std": overall_std, "tasks": len(tasks)})
        shown["mean over 19 tasks"] = _mean_text(overall, overall_std, len(tasks), len(ALL_VTAB))
        have = [m for m in group_means.values() if not math.isnan(m)]
        mgm = sum(have) / len(have) if have else float("nan")
        num["mean_of_group_means"] = mgm
        shown["mean of group means (3 groups)"] = _mean_text(mgm, 0.0, len(have), 3, unit="groups")
        display.append(shown)
        numeric.append(num)
    return pd.DataFrame(display), pd.DataFrame(numeric)


def _mean_text(mean: float, std: float, have: int, expected: int, unit: str = "tasks") -> str:
    if not have or math.isnan(mean):
        return "missing"
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if std else "")
    return text if have >= expected else f"{text} (over {have}/{expected} {unit})"


def paper_vtab_rows(reference: pd.DataFrame, models: set[str]) -> pd.DataFrame:
    """The paper's Table 9 rows (per task, group means computed from them, Table 2's 19-task mean)."""
    ref = reference[reference["source"].str.startswith("Table 9") & reference["model"].isin(models)]
    rows = []
    for (model, pretrain), part in ref.groupby(["model", "pretrain"], sort=False):
        vals = dict(zip(part["task"], part["value"].astype(float)))
        row = {"model": model, "weights": "paper", "pretrain": pretrain, "method": "finetune",
               "setting": "paper Table 9 (2500 steps, 384 px, lr 0.01)"}
        gm = {}
        for g in VTAB_GROUPS:
            row.update({t: f"{vals[t]:.2f}" if t in vals else "missing" for t in VTAB_ORDER[g]})
            present = [vals[t] for t in VTAB_ORDER[g] if t in vals]
            gm[g] = sum(present) / len(present) if present else float("nan")
            row[f"{g} mean ({len(VTAB_ORDER[g])} tasks)"] = f"{gm[g]:.2f} (computed)" if present else "missing"
        t2 = reference[(reference["task"] == "vtab_mean") & (reference["model"] == model) & (reference["pretrain"] == pretrain)]
        row["mean over 19 tasks"] = f"{float(t2['value'].iloc[0]):.2f} (Table 2)" if len(t2) else "missing"
        row["mean of group means (3 groups)"] = f"{sum(gm.values()) / 3:.2f} (computed)"
        rows.append(row)
    return pd.DataFrame(rows)


def table2(agg: pd.DataFrame, vtab_numeric: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Table-2 style: one row per (suite, model, weights, method); the paper's Table 2 rows for those models."""
    sub = agg[agg["task"].isin(list(TABLE2_COLUMNS)) & (agg["stage"] != "select")] if not agg.empty else agg
    rows = []
    keys = ["suite", "model", "weights_id", "pretrain", "method"]
    idents = sub[keys].drop_duplicates().to_dict("records") if not sub.empty else []
    if not vtab_numeric.empty:
        for r in vtab_numeric[keys].drop_duplicates().to_dict("records"):
            if r not in idents and r["method"] == "finetune":
                idents.append(r)
    for ident in idents:
        part = sub[(sub[keys] == pd.Series(ident)).all(axis=1)] if not sub.empty else sub
        row = {"model": ident["model"], "weights": ident["weights_id"], "pretrain": ident["pretrain"], "method": ident["method"]}
        for task, name in TABLE2_COLUMNS.items():
            hit = part[part["task"] == task] if not part.empty else part
            row[name] = MULTIPLE.format(n=len(hit)) if len(hit) > 1 else (
                fmt(hit["mean"].iloc[0], hit["std"].iloc[0], int(hit["n"].iloc[0])) if len(hit) else "missing")
        v = vtab_numeric[(vtab_numeric[keys] == pd.Series(ident)).all(axis=1)] if not vtab_numeric.empty else vtab_numeric
        if len(v) > 1:
            row["VTAB (19 tasks)"] = MULTIPLE.format(n=len(v))
        elif len(v):
            r = v.iloc[0]
            row["VTAB (19 tasks)"] = _mean_text(r["mean_over_tasks"], r["mean_over_tasks_std"], int(r["tasks"]), len(ALL_VTAB))
        else:
            row["VTAB (19 tasks)"] = "missing"
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    models = {r["model"] for r in rows}
    ref = reference[reference["source"].str.startswith("Table 2") & reference["model"].isin(models)]
    for (model, pretrain), part in ref.groupby(["model", "pretrain"], sort=False):
        vals = dict(zip(part["task"], part["value"].astype(float)))
        row = {"model": model, "weights": "paper Table 2", "pretrain": pretrain, "method": "finetune"}
        row.update({name: f"{vals[t]:.2f}" if t in vals else "missing" for t, name in TABLE2_COLUMNS.items()})
        row["VTAB (19 tasks)"] = f"{vals['vtab_mean']:.2f}" if "vtab_mean" in vals else "missing"
        rows.append(row)
    return pd.DataFrame(rows)
