"""`vitbench data prepare | verify | info`: materialise task data once, recheck it, describe it.

A typer sub-app (`app`) the CLI mounts as `vitbench data`. Errors are VitbenchError lines (the CLI prints
them and exits 2); progress is shown with rich progress bars. Logic lives in vitbench/data/prepare.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vitbench.errors import VitbenchError

app = typer.Typer(help="Prepare, verify and inspect task data (offline copies with manifests).", no_args_is_help=True)
console = Console()


@contextmanager
def progress_bars():
    """A `progress(description, done, total)` callback backed by rich bars, one bar per description."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as bars:
        ids: dict[str, int] = {}

        def progress(description: str, done: int, total: int) -> None:
            if description not in ids:
                ids[description] = bars.add_task(description, total=total)
            bars.update(ids[description], completed=done, total=total)

        yield progress


def _root(root: Optional[Path]) -> Path:
    from vitbench.data.loader import default_data_root

    return Path(root).expanduser() if root else default_data_root()


def _split_list(text: Optional[str]) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


@app.command()
def prepare(
    suite: str = typer.Argument(..., help="suite name or path, e.g. vtab"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated task names (default: all)"),
    root: Optional[Path] = typer.Option(None, "--root", "--data-root", help="prepared-data root (default $VITBENCH_DATA_ROOT or ~/.cache/vitbench/data)"),
    splits: Optional[str] = typer.Option(None, "--splits", help="comma-separated split names, or 'all' (default: train/val/test splits)"),
    skip_corrupt: bool = typer.Option(False, "--skip-corrupt", help="skip unreadable images (counted in the manifest)"),
    force: bool = typer.Option(False, "--force", help="rebuild splits that are already prepared"),
) -> None:
    """Materialise each task's splits into lossless local shards with a manifest; later runs use them offline."""
    from vitbench.data.prepare import prepare_task
    from vitbench.suites import load_suite

    s = load_suite(suite)
    selected = s.select(_split_list(tasks))
    base = _root(root)
    with progress_bars() as progress:
        for task in selected:
            manifest = prepare_task(task, base, _split_list(splits), skip_corrupt=skip_corrupt, progress=progress, force=force)
            for name, entry in manifest["splits"].items():
                subs = entry["provenance"].get("substitutions", [])
                extra = f", SUBSTITUTE: {subs[0]['used_expression']}" if subs else ""
                lossy = ", lossy JPEG source" if entry["provenance"].get("lossy") else ""
                skipped = f", {entry['skipped_corrupt']} corrupt skipped" if entry.get("skipped_corrupt") else ""
                console.print(f"{task.name}/{name}: {entry['n']} images, {entry['classes_present']}/{task.num_classes} classes{lossy}{extra}{skipped}")
    console.print(f"prepared {len(selected)} task(s) under {base}")


@app.command()
def verify(
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated task names (default: every prepared task)"),
    root: Optional[Path] = typer.Option(None, "--root", "--data-root", help="prepared-data root"),
) -> None:
    """Recheck the sha256 of every prepared shard against its manifest."""
    from vitbench.data.prepare import prepared_tasks, verify_task

    base = _root(root)
    names = _split_list(tasks) or prepared_tasks(base)
    if not names:
        raise VitbenchError(f"no prepared tasks under {base}; run `vitbench data prepare SUITE --root {base}` first")
    problems = []
    with progress_bars() as progress:
        for name in names:
            problems.extend(verify_task(base, name, progress))
    for p in problems:
        console.print(str(p))
    if problems:
        raise VitbenchError(f"{problems[0]} ({len(problems)} problem(s) in total); rerun `vitbench data prepare --force` for the affected tasks")
    console.print(f"verified {len(names)} task(s) under {base}: all shard hashes match")


@app.command()
def info(
    task: str = typer.Argument(..., help="task name, e.g. cifar100"),
    suite: Optional[str] = typer.Option(None, "--suite", help="suite holding the task (default: the first that has it)"),
    root: Optional[Path] = typer.Option(None, "--root", "--data-root", help="prepared-data root"),
) -> None:
    """Sizes, classes present and class coverage of every split of TASK (prepared copy or sources)."""
    from vitbench.data.prepare import split_info

    spec = find_task(task, suite)
    base = _root(root)
    table = Table(title=f"{spec.name}: {spec.num_classes} classes, group {spec.group or '-'}, metric {spec.metric}")
    for col in ("split", "expression", "images", "classes", "coverage", "from", "notes"):
        table.add_column(col)
    why = None
    for name in spec.splits:
        row = split_info(spec, base, name)
        if row["n"] is None:
            table.add_row(name, row["expression"], "-", "-", "-", "absent", "see below")
            why = why or row["why"]
            continue
        notes = "; ".join(filter(None, ["lossy JPEG" if row.get("lossy") else "",
                                        "hashed class-mixing order (docs/slices.md)" if row.get("order") == "hashed" else "",
                                        *(f"substitute {s['used_expression']}" for s in row.get("substitutions", []))]))
        table.add_row(name, row["expression"], str(row["n"]), f"{row['classes_present']}/{spec.num_classes}",
                      f"{row['coverage']:.0%}", row["where"], notes)
    console.print(table)
    if why:
        console.print(why, soft_wrap=True)


def find_task(name: str, suite: Optional[str] = None):
    """The TaskSpec called `name` in `suite`, or in the first available suite that has it."""
    from vitbench.suites import available_suites, load_suite

    if suite:
        return load_suite(suite).task(name)
    seen = []
    for sname in available_suites():
        try:
            s = load_suite(sname)
        except VitbenchError:
            continue
        seen.extend(t.name for t in s.tasks)
        if name in [t.name for t in s.tasks]:
            return s.task(name)
    from vitbench.errors import unknown_name

    raise unknown_name("task", name, seen)
