"""Regression checks: results against expected numbers, and one results folder against another.

`vitbench compare RESULTS --expected FILE|paper [--tol 0.5]` and `vitbench compare A B`.

Expected file (CSV, one row per expected number; values in percent, as reports print them):

    task,model,method,metric,value[,pretrain][,setting][,tol]

`method` is `finetune`, `fewshot:<shots>` (as in `vitbench/report/reference/paper.csv`) or another method
name; the optional `pretrain` (e.g. ImageNet-21k), `setting` (the report's setting label, e.g.
`5-shot, l2=1024`) and per-row `tol` narrow the match or override `--tol`. Every measured definition that
matches a row is checked; a row with no measurement is `missing` and fails. `paper` uses the paper's numbers
(rows without a measurement are skipped) and adds whether each delta is comparable.

Two folders are compared definition by definition (the vitbench version is ignored, so a new release can be
checked against an old one); a difference larger than the seeds' spread (the larger std, or any difference
when both have one seed) is flagged. Exercised by `vitbench compare`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.errors import VitbenchError
from vitbench.report.paper import PRETRAIN_ALIASES, load_reference
from vitbench.report.tables import fmt

REQUIRED = ("task", "model", "method", "metric", "value")


def load_expected(source: str) -> tuple[pd.DataFrame, bool]:
    """(expected rows, is_paper) from `paper` or a CSV path."""
    if source == "paper":
        return load_reference(), True
    path = Path(source)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise VitbenchError(f"--expected {source!r}: no such file; pass a CSV with columns {', '.join(REQUIRED)} or 'paper'") from None
    except (OSError, ValueError) as exc:
        raise VitbenchError(f"--expected {source!r}: not a readable CSV ({exc}); columns: {', '.join(REQUIRED)}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise VitbenchError(f"--expected {source!r}: missing column(s) {', '.join(missing)}; needed: {', '.join(REQUIRED)}")
    if pd.to_numeric(frame["value"], errors="coerce").isna().any():
        raise VitbenchError(f"--expected {source!r}: every 'value' must be a number in percent")
    return frame, False


def compare_expected(analysis, expected: pd.DataFrame, tol: float, is_paper: bool) -> pd.DataFrame:
    """One row per (expected row, matching definition): expected, obtained, diff and status ok/outside/missing."""
    agg = analysis.agg[analysis.agg["stage"] != "select"] if not analysis.agg.empty else analysis.agg
    if not agg.empty:
        agg = agg.assign(ref_pretrain=agg["pretrain"].map(lambda p: PRETRAIN_ALIASES.get(p, p)))
    comparable = {(r["task"], r["model"], r["pretrain"], r["method"], r["setting"]): r["comparable"]
                  for r in analysis.comparison.to_dict("records")} if is_paper else {}
    rows = []
    for exp in expected.to_dict("records"):
        hit = agg[(agg["task"] == exp["task"]) & (agg["model"] == exp["model"]) & (agg["ref_method"] == str(exp["method"]))
                  & (agg["metric"] == exp["metric"])] if not agg.empty else agg
        if _given(exp.get("pretrain")) and not hit.empty:
            hit = hit[hit["ref_pretrain"] == PRETRAIN_ALIASES.get(exp["pretrain"], exp["pretrain"])]
        if _given(exp.get("setting")) and not hit.empty:
            hit = hit[hit["setting"] == exp["setting"]]
        limit = float(exp["tol"]) if _given(exp.get("tol")) else tol
        base = {"task": exp["task"], "model": exp["model"], "method": exp["method"], "metric": exp["metric"],
                "expected": float(exp["value"]), "tol": limit}
        if hit.empty:
            if not is_paper:
                rows.append({**base, "setting": "", "obtained": "missing", "diff": float("nan"), "status": "missing"})
            continue
        for r in hit.to_dict("records"):
            diff = r["mean"] - float(exp["value"])
            row = {**base, "setting": r["setting"], "obtained": fmt(r["mean"], r["std"], int(r["n"])), "diff": diff,
                   "status": "ok" if abs(diff) <= limit else "outside"}
            if is_paper:
                row["comparable"] = comparable.get((r["task"], r["model"], r["pretrain"], r["ref_method"], r["setting"]), "no")
            rows.append(row)
    return pd.DataFrame(rows)


def _given(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and pd.isna(v)) and str(v) != ""


def _without_version(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        versions = {k: v for k, v in (r.get("versions") or {}).items() if k != "vitbench"}
        out.append({**r, "versions": versions})
    return out


def compare_folders(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]]) -> tuple[pd.DataFrame, int, int]:
    """(cell-by-cell table over definitions present in both, only-in-A count, only-in-B count)."""
    from vitbench.report import analyse

    a, b = analyse(_without_version(records_a)).agg, analyse(_without_version(records_b)).agg
    keys = ["def_id", "suite", "task", "model", "weights_id", "method", "setting", "metric"]
    if a.empty or b.empty:
        return pd.DataFrame(), len(a), len(b)
    both = a.merge(b[keys + ["mean", "std", "n"]], on=keys, suffixes=("_a", "_b"))
    rows = []
    for r in both.to_dict("records"):
        diff = r["mean_b"] - r["mean_a"]
        spread = max(r["std_a"], r["std_b"]) if max(r["n_a"], r["n_b"]) > 1 else 0.0
        rows.append({"suite": r["suite"], "task": r["task"], "model": r["model"], "method": r["method"], "setting": r["setting"],
                     "A": fmt(r["mean_a"], r["std_a"], int(r["n_a"])), "B": fmt(r["mean_b"], r["std_b"], int(r["n_b"])),
                     "diff": diff, "spread": spread, "status": "differs" if abs(diff) > spread + 1e-9 else "ok"})
    only_a = len(set(a["def_id"]) - set(b["def_id"]))
    only_b = len(set(b["def_id"]) - set(a["def_id"]))
    return pd.DataFrame(rows), only_a, only_b
