"""`report.md`: the report's tables as GitHub-flavoured Markdown, figures linked as files beside it.

Written by `build_report` next to `index.html` (`vitbench report`). Cell text is escaped for Markdown tables
(pipes, newlines); large tables are cut at `MAX_ROWS` with a pointer to their CSV.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

MAX_ROWS = 300


def md_table(frame: pd.DataFrame, csv_name: str = "") -> str:
    if frame is None or frame.empty:
        return ""
    more = len(frame) - MAX_ROWS
    frame = frame.head(MAX_ROWS).astype(object).where(frame.head(MAX_ROWS).notna(), "")

    def cell(v) -> str:
        text = f"{v:.2f}" if isinstance(v, float) else str(v)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    if more > 0:
        lines.append(f"\n({more} more rows in {csv_name})")
    return "\n".join(lines)


def write_markdown(path: Path, title: str, a, figures, footer) -> None:
    parts = [f"# {title}", ""]
    parts += [f"> {w}" for w in a.warnings]
    cmp_view = a.comparison.drop(columns=["mean", "std", "n"]) if not a.comparison.empty else a.comparison
    for heading, frame, csv in (
        ("VTAB-1k (%), mean ± std over seeds", a.vtab, "vtab.csv"), ("Table 2 style (%)", a.table2, "table2.csv"),
        ("Few-shot accuracy (%)", a.fewshot, "fewshot.csv"), ("Beside the paper", cmp_view, "paper_comparison.csv"),
        ("Summary (%)", a.summary.drop(columns=["mean", "std"]) if not a.summary.empty else a.summary, "summary.csv"),
    ):
        text = md_table(frame, csv)
        if text:
            parts += ["", f"## {heading}", "", text]
    for f in figures:
        parts += ["", f"## {f.title}", ""]
        parts.append(f"![{f.title}]({f.path.name})\n\n{f.caption}" if f.path else f"_{f.reason}_")
    if a.failed:
        parts += ["", "## Failed cells", "", f"{len(a.failed)} failed cell(s), not counted as results."]
    parts += ["", "## Provenance", ""] + [f"- **{k}:** {v}" for k, v in footer]
    Path(path).write_text("\n".join(parts) + "\n", encoding="utf-8")
