"""Measured numbers beside the paper's (reference/paper.csv), with the delta and every recorded deviation.

`paper_comparison(agg, reps)` matches each aggregated result to the paper's number for the same model,
pre-training data, task, method (few-shot: and shots) and metric; the `deviations` column lists how the
record's setting differs from the paper's (`vitbench.report.deviations`) and `comparable` is "yes" only when
nothing material deviates. Exercised by `vitbench report` and `vitbench compare --expected paper`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from vitbench.report import deviations as dev
from vitbench.report.tables import fmt

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "paper.csv"
COMPARISON_COLUMNS = ["task", "model", "pretrain", "method", "setting", "ours (%)", "mean", "std", "n", "paper (%)",
                      "delta", "comparable", "deviations", "source"]
# The paper calls ImageNet-1k pre-training "ImageNet"; records name the data as the weights' metadata does.
PRETRAIN_ALIASES = {"ImageNet-1k": "ImageNet", "ImageNet-21k": "ImageNet-21k", "JFT-300M": "JFT-300M"}


@lru_cache(maxsize=1)
def _reference() -> pd.DataFrame:
    return pd.read_csv(REFERENCE_CSV)


def load_reference() -> pd.DataFrame:
    """The paper's numbers: source, benchmark, task, paper_model, model, pretrain, method, metric, value, std."""
    return _reference().copy()


def paper_comparison(agg: pd.DataFrame, reps: dict[str, dict], reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per measured definition that has a paper number; `reps`: def_id -> one record of it."""
    ref = load_reference() if reference is None else reference
    sub = agg[agg["stage"] != "select"] if not agg.empty else agg  # dev-split scores are not test results
    if sub.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    # `ref_method` (tidy): the paper.csv method each record compares with, as its method says (`paper_method`)
    ours = sub.assign(ref_pretrain=sub["pretrain"].map(lambda p: PRETRAIN_ALIASES.get(p, p)))
    merged = ours.merge(ref, left_on=["model", "ref_pretrain", "task", "ref_method", "metric"],
                        right_on=["model", "pretrain", "task", "method", "metric"], suffixes=("", "_paper"))
    if merged.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    rows = []
    for r in merged.itertuples(index=False):
        rec = reps.get(r.def_id, {})
        devs = dev.deviations(rec, r.task, r.ref_method, r.source, r.pretrain)
        text, comparable = dev.label(devs)
        delta = r.mean - float(r.value)
        rows.append({
            "task": r.task, "model": r.model, "pretrain": r.pretrain, "method": r.ref_method, "setting": r.setting,
            "ours (%)": fmt(r.mean, r.std, int(r.n)), "mean": r.mean, "std": r.std, "n": int(r.n),
            "paper (%)": f"{float(r.value):.2f}", "delta": f"{delta:+.2f}" if comparable else f"{delta:+.2f} (not comparable)",
            "comparable": "yes" if comparable else "no", "deviations": text or "none recorded", "source": r.source,
        })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
