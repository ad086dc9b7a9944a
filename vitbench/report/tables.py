"""Result tables: one tidy row per record, mean / std / n over seeds per definition, summary, few-shot grid.

Pure pandas over loaded records; generic over methods (any record with a `metrics` dict is a result; the
few-shot cross-task l2 choice is applied by `vitbench.report.fewshot_select`). Records are never pooled
across definitions: every aggregate is keyed by the definition id (`vitbench.report.records`), and where
several definitions share a visible label a `definition` column says how they differ. Accuracies are in
percent, as the paper prints them. Exercised by `vitbench report` and the tables `vitbench run` prints.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from vitbench.methods import find_method
from vitbench.methods.base import recorded_values
from vitbench.report.records import RecordIds, differences

VTAB_GROUPS = ("natural", "specialized", "structured")


def setting_of(rec: dict[str, Any], per_task: bool = True) -> str:
    """A short label of the method parameters (the method's own `setting`, e.g. '5-shot, l2=1024');
    `per_task=False` leaves out choices made per task (a fine-tuning run's chosen lr), so the label can name
    a row spanning tasks."""
    p = rec.get("params") or {}
    if not per_task and p.get("stage") == "final":
        grid = ", ".join(_g(v) for v in p.get("lr_grid") or [])
        return f"{p.get('steps')} steps, batch {p.get('batch_size')}, lr chosen on dev from [{grid}]"
    method = find_method(rec.get("method"))
    if method is not None:
        try:
            return method.setting(rec)
        except (TypeError, ValueError):  # a record with missing or odd params: the generic label below
            pass
    shown = [f"{k}={_g(v)}" for k, v in sorted(p.items()) if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return ", ".join(shown[:4])


def record_values(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Record key -> {'value': headline number (fraction), plus method extras such as 'chosen_l2', 'note'}.

    Each method reads its own records (`Method.values`), so selection that spans records (few-shot l2 chosen
    across tasks, within one definition) is applied by the method that owns it.
    """
    by_method: dict[Any, list] = {}
    for rec in records:
        by_method.setdefault(rec.get("method"), []).append(rec)
    out: dict[str, dict[str, Any]] = {}
    for name, recs in by_method.items():
        method = find_method(name)  # None: a method this version does not know; its metric as recorded
        out.update(method.values(recs) if method is not None else recorded_values(recs))
    return out


def paper_method_of(rec: dict[str, Any]) -> str:
    """The `method` of reference/paper.csv this record compares with (e.g. 'fewshot:5')."""
    method = find_method(rec.get("method"))
    try:
        return method.paper_method(rec) if method is not None else str(rec.get("method"))
    except (TypeError, ValueError):
        return str(rec.get("method"))


def _g(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def pretrain_of(rec: dict[str, Any]) -> str:
    weights = (rec.get("provenance") or {}).get("weights") or {}
    if rec.get("random_init") or weights.get("random_init"):
        return "random-init"
    return str(weights.get("pretrained_data") or "")


def tidy(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: identity columns, `value` (the method's headline number in percent), `def_id`
    (definition), `row_id` (definition without the task) and `line_id` (row without the shots)."""
    values = record_values(records)
    rows = []
    record_ids = RecordIds()
    for rec in records:
        def_id, row_id, line_id = record_ids(rec)
        params = rec.get("params") or {}
        metric = ((rec.get("cell") or {}).get("task") or {}).get("metric") or "top1"
        extra = values.get(rec.get("key")) or {}
        notes = [str(extra.get("note") or "")]
        details = rec.get("details") or {}
        if details.get("cv_degenerate"):
            notes.append(str(details["cv_degenerate"]))
        if details.get("unbalanced"):
            notes.append("unbalanced: a class had fewer images than shots")
        shots = params.get("shots")
        rows.append({
            "suite": str(rec.get("suite")), "task": str(rec.get("task")), "group": str(rec.get("group") or ""),
            "model": str(rec.get("model")), "weights_id": str(rec.get("weights_id")), "pretrain": pretrain_of(rec),
            "method": str(rec.get("method")), "setting": setting_of(rec), "row_setting": setting_of(rec, per_task=False),
            "shots": float(shots) if isinstance(shots, (int, float)) else float("nan"), "stage": str(params.get("stage") or ""),
            "metric": metric, "ref_method": paper_method_of(rec), "seed": rec.get("seed"), "value": _percent(extra.get("value")),
            "chosen_l2": extra.get("chosen_l2"), "note": "; ".join(n for n in notes if n),
            "def_id": def_id, "row_id": row_id, "line_id": line_id, "key": rec.get("key"),
        })
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


TIDY_COLUMNS = ["suite", "task", "group", "model", "weights_id", "pretrain", "method", "setting", "row_setting", "shots",
                "stage", "metric", "ref_method", "seed", "value", "chosen_l2", "note", "def_id", "row_id", "line_id", "key"]
ID_COLS = ["suite", "task", "group", "model", "weights_id", "pretrain", "method", "setting", "row_setting", "shots",
           "stage", "metric", "ref_method", "def_id", "row_id", "line_id"]


def _percent(value: Any) -> float:
    try:
        return 100.0 * float(value)
    except (TypeError, ValueError):
        return float("nan")


def aggregate(long: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1; 0 for one seed) and n (seeds with a value) per definition."""
    cols = ID_COLS + ["mean", "std", "n", "note"]
    if long.empty:
        return pd.DataFrame(columns=cols)
    g = long.groupby(ID_COLS, dropna=False, sort=False)
    agg = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    agg["std"] = agg["std"].where(agg["n"] > 1, 0.0)
    notes = g["note"].agg(lambda s: "; ".join(sorted({x for x in s if x})))
    agg["note"] = notes.to_numpy()
    return agg[cols]


def definition_labels(agg: pd.DataFrame, defs: dict[str, dict], visible: list[str], id_col: str = "def_id") -> pd.Series:
    """Per row: how its definition differs from others sharing the same `visible` columns ('' if alone)."""
    out = pd.Series("", index=agg.index, dtype=object)
    counts = agg.groupby(visible, dropna=False)[id_col].transform("nunique")
    clash = agg[counts > 1]
    for _, part in clash.groupby(visible, dropna=False):
        ids = list(dict.fromkeys(part[id_col]))
        labels = differences({i: defs.get(i, {}) for i in ids})
        out.loc[part.index] = [labels[i] for i in part[id_col]]
    return out


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or pd.isna(mean):
        return "missing"
    return f"{mean:.2f}" if n <= 1 else f"{mean:.2f} ± {std:.2f}"


def summary_table(agg: pd.DataFrame, defs: dict[str, dict]) -> pd.DataFrame:
    """One row per definition: identity, `result (%)` text, and numeric mean / std / n columns."""
    cols = ["suite", "task", "group", "model", "weights", "method", "setting", "metric", "result (%)", "mean", "std", "n"]
    if agg.empty:
        return pd.DataFrame(columns=cols)
    agg = agg.sort_values(["suite", "task", "model", "weights_id", "method", "shots", "setting"], na_position="last", kind="stable")
    out = agg.assign(**{"result (%)": [fmt(m, s, n) for m, s, n in zip(agg["mean"], agg["std"], agg["n"])]})
    out["weights"] = [w if p != "random-init" else f"{w} (random-init)" for w, p in zip(out["weights_id"], out["pretrain"])]
    out["definition"] = definition_labels(out, defs, ["task", "model", "weights_id", "method", "setting"])
    if (out["definition"] != "").any():
        cols.append("definition")
    if (out["note"] != "").any():
        cols.append("note")
    return out[cols].reset_index(drop=True)


def fewshot_table(agg: pd.DataFrame, line_defs: dict[str, dict]) -> pd.DataFrame:
    """Few-shot tasks x shots: one row per (line definition, task), 'mean ± std' text per shots column, plus a
    'mean over tasks' row per row definition (only over tasks that have every shots value)."""
    fs = agg[(agg["method"] == "fewshot") & agg["shots"].notna()] if not agg.empty else agg
    if fs.empty:
        return pd.DataFrame()
    fs = fs.assign(line=[_line_key(r) for r in fs.itertuples()])
    shots = sorted(int(s) for s in fs["shots"].unique())
    rows = []
    for (model, wid, pretrain, l2_label, suite), part in fs.groupby(["model", "weights_id", "pretrain", "line", "suite"], sort=False, dropna=False):
        for rid, grp in part.groupby("line_id", sort=False):
            base = {"suite": suite, "model": model, "weights": wid if pretrain != "random-init" else f"{wid} (random-init)",
                    "l2": l2_label, "definition": rid}
            cells: dict[tuple, list] = {}
            for task, s, m, sd, n in zip(grp["task"], grp["shots"], grp["mean"], grp["std"], grp["n"]):
                cells.setdefault((task, int(s)), []).append((m, sd, int(n)))
            for task in dict.fromkeys(grp["task"]):
                row = {**base, "task": task}
                for s in shots:
                    hit = cells.get((task, s), [])
                    row[f"{s}-shot"] = fmt(*hit[0]) if len(hit) == 1 else ("missing" if not hit else f"multiple definitions ({len(hit)})")
                rows.append(row)
            if len(set(grp["task"])) < 2:
                continue  # a mean over one task repeats it
            row = {**base, "task": "mean over tasks"}
            for s in shots:
                vals = [v[0][0] for (t, k), v in cells.items() if k == s and len(v) == 1]
                row[f"{s}-shot"] = f"{sum(vals) / len(vals):.2f} (over {len(vals)} task{'s' if len(vals) > 1 else ''})" if vals else "missing"
            rows.append(row)
    table = pd.DataFrame(rows)
    return _label_row_definitions(table, line_defs, ["suite", "model", "weights", "l2", "task"])


def _line_key(r) -> str:
    """The few-shot setting without the shots: e.g. 'l2=1024' or 'l2 mean-rank'."""
    return str(r.row_setting).split(", ", 1)[1] if ", " in str(r.row_setting) else str(r.row_setting)


def _label_row_definitions(table: pd.DataFrame, row_defs: dict[str, dict], visible: list[str]) -> pd.DataFrame:
    """Replace the row-definition id column by a description of how rows with the same visible label differ."""
    ids = table.pop("definition")
    table["definition"] = ""
    clash = table.assign(_id=ids).groupby(visible, dropna=False)["_id"].transform("nunique") > 1
    if clash.any():
        sub = table.assign(_id=ids)[clash]
        for _, part in sub.groupby(visible, dropna=False):
            labels = differences({i: row_defs.get(i, {}) for i in dict.fromkeys(part["_id"])})
            table.loc[part.index, "definition"] = [labels[i] for i in part["_id"]]
    if (table["definition"] == "").all():
        table = table.drop(columns=["definition"])
    if table["suite"].nunique() == 1:
        table = table.drop(columns=["suite"])
    return table
