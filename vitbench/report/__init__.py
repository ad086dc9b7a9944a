"""Reports: CSV tables, figures, `index.html` (self-contained) and `report.md` from result records.

`analyse(records)` builds every table once (`Analysis`); `build_report(records, out_dir)` writes
`summary.csv` (one row per definition: mean, std, n), `results.csv` (one row per record), `vtab.csv` (the wide
VTAB-1k table, numeric), `table2.csv`, `fewshot.csv`, `paper_comparison.csv`, the figures, `index.html` and
`report.md`. Exercised by `vitbench report` and at the end of `vitbench run`.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vitbench.errors import VitbenchError
from vitbench.report import html as page
from vitbench.report import plots, tables, vtab
from vitbench.report.paper import load_reference, paper_comparison
from vitbench.report.records import definition, line_definition, prepare

__all__ = ["Analysis", "analyse", "build_report", "summary_table"]
MAX_RECORD_ROWS = 500  # above this the per-record table is a link to results.csv, keeping the page small
MAX_TABLE_ROWS = 2000


@dataclass
class Analysis:
    records: list[dict[str, Any]]
    long: pd.DataFrame
    agg: pd.DataFrame
    summary: pd.DataFrame
    vtab: pd.DataFrame
    vtab_numeric: pd.DataFrame
    table2: pd.DataFrame
    fewshot: pd.DataFrame
    comparison: pd.DataFrame
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@contextmanager
def _gc_paused():
    """Cyclic garbage collection off while a report is built: the loaded records are millions of live objects
    and every collection would walk them all again (tables and figures allocate many short-lived objects);
    what the report leaves as garbage is collected when the previous setting is restored."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def analyse(records: list[dict[str, Any]]) -> Analysis:
    """Every table of a report, computed once from `records` (failed, malformed and duplicate ones handled)."""
    with _gc_paused():
        return _analyse(records)


def _analyse(records: list[dict[str, Any]]) -> Analysis:
    prep = prepare(records)
    recs = prep.results
    long = tables.tidy(recs)
    agg = tables.aggregate(long)
    defs: dict[str, dict] = {}
    line_defs: dict[str, dict] = {}
    reps: dict[str, dict] = {}
    for rec, did, lid in zip(recs, long["def_id"], long["line_id"]):
        if did not in defs:
            defs[did], reps[did] = definition(rec), rec
        if lid not in line_defs:
            line_defs[lid] = line_definition(rec)
    reference = load_reference()
    vt, vt_num = vtab.vtab_table(agg, long)
    warnings = list(prep.warnings) + _data_warnings(recs, long)
    return Analysis(
        records=recs, long=long, agg=agg, summary=tables.summary_table(agg, defs), vtab=vt, vtab_numeric=vt_num,
        table2=vtab.table2(agg, vt_num, reference), fewshot=tables.fewshot_table(agg, line_defs),
        comparison=paper_comparison(agg, reps, reference), failed=prep.failed, warnings=warnings,
    )


def summary_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The per-definition table `vitbench run` prints."""
    return analyse(records).summary


def _data_warnings(recs: list[dict[str, Any]], long: pd.DataFrame) -> list[str]:
    out = []
    if not long.empty and (long["pretrain"] == "random-init").any():
        out.append("Some results come from randomly initialised weights (random-init): they test the pipeline, "
                   "not a pretrained backbone, and are not comparable with the paper.")
    flagged: dict[str, set] = {"lossy": set(), "incomplete": set()}
    for r in recs:
        prov = r.get("provenance") or {}
        for split in ("train", "test"):
            info = prov.get(split)
            if isinstance(info, dict):
                for flag in flagged:
                    if info.get(flag):
                        flagged[flag].add(str(r.get("task")))
    if flagged["lossy"]:
        out.append(f"Lossy (JPEG) copies of the data were used for: {', '.join(sorted(flagged['lossy']))}.")
    if flagged["incomplete"]:
        out.append("Incomplete data copies (a split with other than its defined size: VTAB-1k's 800/200/1000, or a task's "
                   "expected test size) were used for: "
                   f"{', '.join(sorted(flagged['incomplete']))}.")
    notes = sorted({n for n in long.get("note", pd.Series(dtype=object)) if n and "one task" in n})
    out += [f"Few-shot l2 selection: {n}." for n in notes]
    return out


def _figures(a: Analysis, out_dir: Path) -> list[plots.Figure]:
    reference = load_reference()
    paper_rows = vtab.paper_vtab_rows(reference, set(a.vtab_numeric["model"]) if not a.vtab_numeric.empty else set())
    curves = [{"label": f"{r['task']} {r['model']} s{r.get('seed')}", "curve": r["details"]["loss_curve"]}
              for r in a.records if (r.get("details") or {}).get("loss_curve")][:10]
    return [
        plots.vtab_groups_plot(a.vtab_numeric, paper_rows, out_dir / "vtab_groups.png"),
        plots.shots_plot(a.agg, out_dir / "fewshot_shots.png"),
        plots.fewshot_vs_finetune_plot(a.agg, out_dir / "fewshot_vs_finetune.png"),
        plots.pretrain_size_plot(a.agg, reference, out_dir / "pretrain_size.png"),
        plots.fewshot_pretrain_plot(a.agg, out_dir / "fewshot_pretrain_size.png"),
        plots.compute_plot(a.agg, out_dir / "pretrain_compute.png"),
        plots.loss_curve_plot(curves, out_dir / "finetune_loss.png"),
    ]


def _records_table(a: Analysis) -> pd.DataFrame:
    cols = ["suite", "task", "model", "weights_id", "method", "setting", "seed", "metric", "value", "chosen_l2", "note", "key"]
    view = a.long[cols].sort_values(["suite", "task", "model", "method", "setting", "seed"], kind="stable")
    return view.rename(columns={"value": "value (%)"})


def _failed_table(failed: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{k: str(r.get(k) if r.get(k) is not None else "") for k in ("suite", "task", "model", "method", "seed", "key")}
                         | {"error": _error_text(r)} for r in failed])


def _error_text(rec: dict[str, Any]) -> str:
    """A failure record's one-line reason (`error.message`, with where and when), else its error as text."""
    error = rec.get("error") or rec.get("reason") or ""
    if isinstance(error, dict) and error.get("message"):
        where = error.get("where") or {}
        place = f" ({where.get('host')}, {error.get('when')})" if isinstance(where, dict) and where.get("host") else ""
        return f"{error.get('type', 'error')}: {error['message']}{place}" if error.get("type") not in (None, "VitbenchError") else f"{error['message']}{place}"
    return str(error)


def build_report(records: list[dict[str, Any]], out_dir: Path, title: str = "vitbench report",
                 analysis: Analysis | None = None) -> dict[str, Path]:
    """Write the CSV tables, figures, `index.html` and `report.md` for `records` (or an already computed
    `analysis` of them) into `out_dir`; return the paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VitbenchError(f"cannot create report folder {str(out_dir)!r} ({exc.strerror}); pass -o with a writable folder")
    with _gc_paused():
        return _build_report(records, out_dir, title, analysis)


def _build_report(records: list[dict[str, Any]], out_dir: Path, title: str, analysis: Analysis | None) -> dict[str, Path]:
    a = analysis if analysis is not None else _analyse(records)
    paths = {name: out_dir / f for name, f in (
        ("csv", "summary.csv"), ("results_csv", "results.csv"), ("vtab_csv", "vtab.csv"), ("table2_csv", "table2.csv"),
        ("fewshot_csv", "fewshot.csv"), ("comparison_csv", "paper_comparison.csv"), ("html", "index.html"), ("md", "report.md"))}
    try:
        a.summary.to_csv(paths["csv"], index=False)
        _records_table(a).to_csv(paths["results_csv"], index=False)
        a.vtab_numeric.to_csv(paths["vtab_csv"], index=False)
        a.table2.to_csv(paths["table2_csv"], index=False)
        a.fewshot.to_csv(paths["fewshot_csv"], index=False)
        a.comparison.to_csv(paths["comparison_csv"], index=False)
        figures = _figures(a, out_dir)
        sections = _sections(a, figures)
        footer = page.provenance(a.records + a.failed)
        paths["html"].write_text(page.render(title, sections, a.warnings, footer), encoding="utf-8")
        from vitbench.report.markdown import write_markdown

        write_markdown(paths["md"], title, a, figures, footer)
    except OSError as exc:
        raise VitbenchError(f"cannot write the report into {str(out_dir)!r} ({exc.strerror}); free space or pass -o with another folder")
    for f in figures:
        if f.path:
            paths[f.path.stem] = f.path
    return paths


def _then(content: str, text: str) -> str:
    """`content` followed by a note, or '' when there is no content (no empty sections)."""
    return content + page.note(text) if content else ""


def _sections(a: Analysis, figures: list[plots.Figure]) -> list[tuple[str, str]]:
    cmp_view = a.comparison.drop(columns=["mean", "std", "n"]) if not a.comparison.empty else a.comparison
    records_html = (page.frame_html(_records_table(a), "records") if len(a.long) <= MAX_RECORD_ROWS else
                    page.note(f"{len(a.long)} records: see results.csv beside this page (one row per record)."))
    sections = [
        ("VTAB-1k (%), mean ± std over seeds", _then(page.frame_html(a.vtab, "vtab"), (
            "Tasks in the paper's Table 9 order. 'mean over 19 tasks' is BiT's task-weighted VTAB score (the paper's "
            "Table 2); 'mean of group means' averages the three group means. A mean over fewer tasks says over how many."))),
        ("Table 2 style (%)", page.frame_html(a.table2, "table2")),
        ("Few-shot accuracy (%): tasks x shots, mean ± std over seeds", page.frame_html(a.fewshot, "fewshot", MAX_TABLE_ROWS, "fewshot.csv")),
        ("Beside the paper (Dosovitskiy et al. 2021)", _then(page.frame_html(cmp_view, "paper", MAX_TABLE_ROWS, "paper_comparison.csv"), (
            "A delta is comparable only when no material deviation from the paper's setting is recorded; "
            "deviations are derived from each record's params and provenance."))),
        ("Summary (%): one row per definition, mean ± std over seeds",
         page.frame_html(a.summary.drop(columns=["mean", "std"]), "summary", MAX_TABLE_ROWS, "summary.csv")),
    ]
    for f in figures:
        content = page.image_html(f.path, f.title) + page.note(f.caption) if f.path else page.note(f.reason)
        sections.append((f.title, content))
    if a.failed:
        sections.append(("Failed cells (not counted as results)", page.frame_html(_failed_table(a.failed), "failed")))
    sections.append(("All records", records_html))
    return sections
