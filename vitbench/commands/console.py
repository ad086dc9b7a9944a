"""Terminal output of the CLI: rich tables, the run's progress bars, the end-of-run summary.

Used by `vitbench/cli.py` (every command that prints a table) and `vitbench/commands/*.py`. The run's progress
(`vitbench/commands/study.py`) goes to stderr so stdout stays a clean table.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


# Wide enough not to elide table columns when output goes to a file or pipe (rich assumes 80 columns there).
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def print_summary(records: list[dict[str, Any]], name: str, analysis=None) -> None:
    """Each method's own table (few-shot: the report's tasks x shots, grouped by definition), then the
    per-definition summary; the report's warnings go to stderr."""
    from vitbench.methods import METHODS, method_names
    from vitbench.report import analyse

    a = analysis if analysis is not None else analyse(records)
    for w in a.warnings:
        err.print(Text(f"note: {w}"), soft_wrap=True)
    present = {r.get("method") for r in a.records}
    for method in method_names():  # each method's own table, registry order
        if method not in present:
            continue
        if method == "fewshot":  # tasks x shots, grouped by definition (the report's own table)
            table = a.fewshot
        else:
            table = METHODS[method].summary_table([r for r in a.records if r.get("method") == method])
        if table is not None and len(table):
            print_frame(table, title=f"{name}: {METHODS[method].table_title or method}")
    summary = a.summary.drop(columns=["mean", "std"]) if not a.summary.empty else a.summary
    print_frame(summary, title=f"{name}: results (mean ± std over seeds)")


def print_plan(the_plan, verbose: bool = False) -> None:
    """Cells to run / skip per (task, method) and model count; every cell with its key only when `verbose`."""
    done = {c.key for c in the_plan.done}
    counts: dict[tuple[str, str], list] = {}
    for c in the_plan.cells:
        row = counts.setdefault((c.task.name, c.method), [0, 0, set()])
        row[1 if c.key in done else 0] += 1
        row[2].add(c.model)
    table = Table(title="plan (cells per task and method)")
    for col in ("task", "method", "models", "to run", "done (skip)"):
        table.add_column(col)
    for (task, method), (run, skip, models) in counts.items():
        table.add_row(Text(task), method, str(len(models)), str(run), str(skip))
    out.print(table)
    if not verbose:
        out.print("(--verbose lists every cell with its key)")
        return
    table = Table(title="plan")
    for col in ("status", "task", "model", "method", "params", "seed", "key"):
        table.add_column(col)
    for c in the_plan.cells:
        shown = ", ".join(f"{k}={v}" for k, v in c.shown_params().items())
        table.add_row("skip" if c.key in done else "run", c.task.name, c.model, c.method, shown, str(c.seed), c.key)
    out.print(table)


def print_methods() -> None:
    """`vitbench ls methods`: every registered method, what it does, its parameters and their defaults."""
    from vitbench.methods import METHODS, method_names

    table = Table(title="methods (suite table [<method>], per-task field <method> = { ... })")
    for col in ("method", "description", "parameters (defaults)"):
        table.add_column(col)
    for name in method_names():
        method = METHODS[name]
        params = "\n".join(f"{k} = {_default_text(v)}" for k, v in method.describe())
        table.add_row(name, Text(method.summary), Text(params))
    out.print(table)


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if not isinstance(value, (list, tuple)):
        return cell_text(value)
    shown = ", ".join(cell_text(v) for v in value[:6])
    return f"[{shown}, ...] ({len(value)} values)" if len(value) > 6 else f"[{shown}]"


def print_frame(frame, title: str) -> None:
    if frame is None or len(frame) == 0:
        out.print("(no results)")
        return
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col))
    for _, row in frame.iterrows():
        table.add_row(*[Text(cell_text(v)) for v in row.tolist()])  # verbatim: no rich markup in data
    out.print(table)


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)
