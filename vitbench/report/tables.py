"""Result tables: tidy rows from records, mean ± std over seeds, VTAB group means, paper comparison.

Pure pandas over loaded records; exercised by `vitbench report` and the summary printed by `vitbench run`.
Accuracies are shown in percent, as the paper prints them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.methods import find_method
from vitbench.methods.base import recorded_values

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "paper.csv"
VTAB_GROUPS = ("natural", "specialized", "structured")
COMPARISON_COLUMNS = ["task", "model", "pretrain", "setting", "ours (%)", "paper (%)", "delta", "source"]


def setting_of(rec: dict[str, Any]) -> str:
    """A short label of the method parameters that define a comparable column, e.g. '5-shot' (from the method)."""
    method = find_method(rec.get("method"))
    return method.setting(rec) if method is not None else ""


def _pretrain(rec: dict[str, Any]) -> str:
    weights = (rec.get("provenance") or {}).get("weights") or {}
    if rec.get("random_init") or weights.get("random_init"):
        return "random-init"
    return str(weights.get("pretrained_data") or "")


def record_values(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Record key -> {'value': headline number as a fraction, plus method extras such as 'chosen_l2'}.

    Each method reads its own records (`Method.values`), so selection that spans records (few-shot l2
    chosen across tasks) is applied by the method that owns it.
    """
    by_method: dict[Any, list] = {}
    for rec in records:
        by_method.setdefault(rec.get("method"), []).append(rec)
    out: dict[str, dict[str, Any]] = {}
    for name, recs in by_method.items():
        method = find_method(name)  # None: a method this version does not know; its metric as recorded
        out.update(method.values(recs) if method is not None else recorded_values(recs))
    return out


def config_id(rec: dict[str, Any]) -> str:
    """Short hash of everything that defines the number except the seed: records that differ only by seed
    share it, so a rerun with changed preprocessing or code protocol never pools with older records."""
    from vitbench.cells import canonical_json

    cell = {k: v for k, v in (rec.get("cell") or {}).items() if k != "seed"}
    return hashlib.sha256(canonical_json(cell).encode()).hexdigest()[:8]


def tidy(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: identity columns plus `value` = the method's headline number in percent.

    The value comes from the record's method (`record_values`): the task's metric, or for few-shot l2
    chosen across tasks (mean-rank / leave-self-out) the accuracy at the chosen l2 (column `chosen_l2`).
    """
    values = record_values(records)
    rows = []
    for rec in records:
        metric = ((rec.get("cell") or {}).get("task") or {}).get("metric", "top1")
        extra = dict(values.get(rec.get("key")) or {})
        value = extra.pop("value", None)
        method = find_method(rec.get("method"))
        rows.append({
            "suite": rec.get("suite"), "task": rec.get("task"), "group": rec.get("group") or "",
            "model": rec.get("model"), "weights_id": rec.get("weights_id"), "pretrain": _pretrain(rec),
            "method": rec.get("method"), "setting": setting_of(rec), "shots": (rec.get("params") or {}).get("shots"),
            "metric": metric, "seed": rec.get("seed"), "value": None if value is None else 100.0 * float(value),
            "chosen_l2": extra.pop("chosen_l2", None), "unbalanced": bool((rec.get("details") or {}).get("unbalanced")),
            "config": config_id(rec), "key": rec.get("key"),
            "ref_method": method.paper_method(rec) if method is not None else rec.get("method"), **extra,
        })
    return pd.DataFrame(rows)


ID_COLS = ["suite", "task", "group", "model", "weights_id", "pretrain", "method", "setting", "shots", "metric", "config", "ref_method"]


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1; 0 for one seed) and count over seeds for each identity."""
    if frame.empty:
        return frame
    g = frame.groupby(ID_COLS, dropna=False, sort=False)
    agg = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    agg["unbalanced"] = g["unbalanced"].any().to_numpy()
    agg["std"] = agg["std"].fillna(0.0)
    return agg


def fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f}" if n <= 1 else f"{mean:.2f} ± {std:.2f}"


def summary_table(records: list[dict[str, Any]], agg: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table printed after a run: one row per (task, model, method, setting) (`agg`: already aggregated)."""
    agg = aggregate(tidy(records)) if agg is None else agg
    if agg.empty:
        return agg
    agg = agg.sort_values(["suite", "task", "model", "weights_id", "method", "shots", "setting"], na_position="last", kind="stable")
    out = agg.assign(**{"result (%)": [fmt(m, s, n) for m, s, n in zip(agg["mean"], agg["std"], agg["n"])]})
    out["weights"] = [w if p != "random-init" else f"{w} (random-init)" for w, p in zip(out["weights_id"], out["pretrain"])]
    out["flags"] = ["unbalanced: a class had fewer images than shots" if u else "" for u in out["unbalanced"]]
    columns = ["task", "group", "model", "weights", "method", "setting", "metric", "result (%)", "n"]
    if out["unbalanced"].any():
        columns.append("flags")
    if out.groupby(["task", "model", "weights_id", "method", "setting"])["config"].nunique().max() > 1:
        columns.append("config")  # same visible setting, different definitions (e.g. records from older code)
    return out[columns].rename(columns={"n": "seeds"})


def vtab_means(agg: pd.DataFrame) -> pd.DataFrame:
    """Per (model, weights, method, setting): mean over tasks, per-group means, and the mean of group means.

    Both overall numbers are reported and labelled, because BiT's overall is task-weighted while many later
    papers average the three group means (vtab_tasks.md §2, "VTAB-1k evaluation protocol").
    """
    sub = agg[agg["group"].isin(VTAB_GROUPS)] if not agg.empty else agg
    if sub.empty:
        return pd.DataFrame(columns=["model", "weights_id", "pretrain", "method", "setting", "tasks", "mean over tasks", "mean of group means"])
    rows = []
    for key, part in sub.groupby(["model", "weights_id", "pretrain", "method", "setting"], dropna=False, sort=False):
        row = dict(zip(["model", "weights_id", "pretrain", "method", "setting"], key))
        row["tasks"] = int(part["task"].nunique())
        row["mean over tasks"] = part["mean"].mean()
        groups = {g: part[part["group"] == g]["mean"].mean() for g in VTAB_GROUPS if (part["group"] == g).any()}
        row.update({f"{g} ({int((part['group'] == g).sum())})": v for g, v in groups.items()})
        row["mean of group means"] = sum(groups.values()) / len(groups) if groups else float("nan")
        row["paper (mean over 19 tasks)"] = _paper_vtab_mean(row["model"], row["pretrain"], row["method"])
        rows.append(row)
    return pd.DataFrame(rows)


def _paper_vtab_mean(model: str, pretrain: str, method: str) -> float | None:
    """The paper's Table 2 VTAB (19 tasks) number for this model and pre-training data, if it has one."""
    ref = load_reference()
    hit = ref[(ref["task"] == "vtab_mean") & (ref["model"] == model) & (ref["pretrain"] == pretrain) & (ref["method"] == method)]
    return float(hit["value"].iloc[0]) if len(hit) else None


def load_reference() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_CSV)


def paper_comparison(agg: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our numbers beside the paper's where model, pre-training data, task and method line up."""
    ref = load_reference() if reference is None else reference
    if agg.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    ours = agg.copy()  # `ref_method`: the paper.csv method each record compares with (from its method)
    merged = ours.merge(
        ref, left_on=["model", "pretrain", "task", "ref_method", "metric"],
        right_on=["model", "pretrain", "task", "method", "metric"], suffixes=("", "_paper"),
    )
    if merged.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    merged["ours (%)"] = [fmt(m, s, n) for m, s, n in zip(merged["mean"], merged["std"], merged["n"])]
    merged["paper (%)"] = merged["value"].map(lambda v: f"{v:.2f}")
    merged["delta"] = (merged["mean"] - merged["value"]).map(lambda v: f"{v:+.2f}")
    return merged[COMPARISON_COLUMNS]
