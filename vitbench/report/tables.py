"""Result tables: tidy rows from records, mean ± std over seeds, VTAB group means, paper comparison.

Pure pandas over loaded records; exercised by `vitbench report` and the summary printed by `vitbench run`.
Accuracies are shown in percent, as the paper prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.hashing import json_sha256

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "paper.csv"
VTAB_GROUPS = ("natural", "specialized", "structured")
COMPARISON_COLUMNS = ["task", "model", "pretrain", "setting", "ours (%)", "paper (%)", "delta", "source"]


def setting_of(rec: dict[str, Any]) -> str:
    """A short label of the method parameters that define a comparable column, e.g. '5-shot'."""
    p = rec.get("params") or {}
    if rec.get("method") == "fewshot":
        sel = p.get("l2_select", "fixed")
        tail = f", l2={p.get('l2'):g}" if sel == "fixed" and p.get("l2") is not None else f", l2 {sel}"
        return f"{p.get('shots')}-shot{tail}"
    if rec.get("method") == "finetune":
        base = f"{p.get('steps')} steps, batch {p.get('batch_size')}"
        if p.get("stage") == "select":
            return f"{base}, lr {p.get('lr'):g} (dev: {p.get('select_train_split')} -> {p.get('select_eval_split')})"
        if p.get("stage") == "final":
            chosen = ((rec.get("details") or {}).get("lr_selection") or {}).get("chosen_lr")
            grid = ", ".join(f"{v:g}" for v in p.get("lr_grid") or [])
            return f"{base}, lr {chosen:g} chosen on dev from [{grid}]" if chosen is not None else f"{base}, lr from [{grid}]"
        return f"{base}, lr {p.get('lr'):g}"
    return ""


def _pretrain(rec: dict[str, Any]) -> str:
    weights = (rec.get("provenance") or {}).get("weights") or {}
    if rec.get("random_init") or weights.get("random_init"):
        return "random-init"
    return str(weights.get("pretrained_data") or "")


def l2_choice_across_tasks(records: list[dict[str, Any]]) -> dict:
    """(model, weights_id, task, shots) -> l2 for few-shot records run with l2_select mean-rank / leave-self-out."""
    modes = {(r.get("params") or {}).get("l2_select") for r in records if r.get("method") == "fewshot"}
    if not modes & {"mean-rank", "leave-self-out"}:
        return {}
    from vitbench.runners.fewshot import summarize_fewshot

    chosen = summarize_fewshot(records)
    chosen = chosen[chosen["l2_select"].isin(["mean-rank", "leave-self-out"])]
    return {(r.model, r.weights_id, r.task, int(r.shots)): float(r.l2) for r in chosen.itertuples()}


def config_id(rec: dict[str, Any]) -> str:
    """Short hash of everything that defines the number except the seed: records that differ only by seed
    share it, so a rerun with changed preprocessing or code protocol never pools with older records."""
    cell = {k: v for k, v in (rec.get("cell") or {}).items() if k != "seed"}
    return json_sha256(cell, 8)


def tidy(records: list[dict[str, Any]], l2_choice: dict | None = None) -> pd.DataFrame:
    """One row per record: identity columns plus `value` = the task's metric in percent.

    `l2_choice` maps (model, weights_id, task, shots) -> l2 for few-shot records whose l2 is chosen across
    tasks (mean-rank / leave-self-out); the accuracy at that l2 is read from the record's per-l2 row. By
    default it is computed from `records` themselves.
    """
    if l2_choice is None:
        l2_choice = l2_choice_across_tasks(records)
    rows = []
    for rec in records:
        metric = ((rec.get("cell") or {}).get("task") or {}).get("metric", "top1")
        metrics = rec.get("metrics") or {}
        value = metrics.get(metric, metrics.get("top1"))
        chosen = None
        if l2_choice and rec.get("method") == "fewshot" and (rec.get("params") or {}).get("l2_select") in ("mean-rank", "leave-self-out"):
            key = (rec.get("model"), rec.get("weights_id"), rec.get("task"), int((rec.get("params") or {}).get("shots")))
            chosen = l2_choice.get(key)
            per_l2 = (rec.get("details") or {}).get("acc_per_l2") or {}
            if chosen is not None:
                value = _lookup_l2(per_l2, chosen, value)
        rows.append({
            "suite": rec.get("suite"), "task": rec.get("task"), "group": rec.get("group") or "",
            "model": rec.get("model"), "weights_id": rec.get("weights_id"), "pretrain": _pretrain(rec),
            "method": rec.get("method"), "setting": setting_of(rec), "shots": (rec.get("params") or {}).get("shots"),
            "metric": metric, "seed": rec.get("seed"), "value": None if value is None else 100.0 * float(value),
            "chosen_l2": chosen, "unbalanced": bool((rec.get("details") or {}).get("unbalanced")),
            "config": config_id(rec), "key": rec.get("key"),
        })
    return pd.DataFrame(rows)


def _lookup_l2(per_l2: dict, l2: float, default):
    for k, v in per_l2.items():
        if abs(float(k) - float(l2)) <= 1e-9 * max(1.0, abs(float(l2))):
            return v
    return default


ID_COLS = ["suite", "task", "group", "model", "weights_id", "pretrain", "method", "setting", "shots", "metric", "config"]


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
    papers average the three group means (docs/vtab.md#protocol).
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
    if method != "finetune":
        return None
    ref = load_reference()
    hit = ref[(ref["task"] == "vtab_mean") & (ref["model"] == model) & (ref["pretrain"] == pretrain)]
    return float(hit["value"].iloc[0]) if len(hit) else None


def load_reference() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_CSV)


def paper_comparison(agg: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our numbers beside the paper's where model, pre-training data, task and method line up."""
    ref = load_reference() if reference is None else reference
    if agg.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    ours = agg.copy()
    ours["ref_method"] = [m if m != "fewshot" else f"fewshot:{int(s)}" for m, s in zip(ours["method"], ours["shots"].fillna(0))]
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
