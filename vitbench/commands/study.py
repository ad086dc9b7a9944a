"""Running a planned study from the CLI: pick the executor, run, then the end-of-run summary and report.

Owns the options of `vitbench run` / `fewshot` / `finetune` about *how* a study runs (`--executor`,
`--workers`, `--fail-fast`, `--report-dir`, `--progress-every`, the SLURM options) and what a run prints at
the end: this run's tables, the failed cells with their one-line reasons, skipped optional tasks, the run log,
and the report of the whole results folder (rebuilt in `<out>/report/` unless `--report-dir`). Exit code 1
when a cell failed (`--fail-fast`: 2 at the first failure, with its line).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vitbench.commands.console import err, out, print_summary
from vitbench.errors import VitbenchError

REPORT_MARK = ".vitbench-report"  # a folder holding it was written by vitbench and may be rebuilt

ExecutorOpt = Annotated[str, typer.Option("--executor", help="local: worker processes on this machine (one per visible GPU); slurm: a SLURM job array through submitit (pip install 'vitbench[slurm]').")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="Local worker processes (default: one per visible GPU, one in-process on CPU).")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failing cell (exit 2 with its error) instead of recording it and going on.")]
ReportDirOpt = Annotated[Optional[Path], typer.Option("--report-dir", help="Report folder (default <out>/report); rebuilt for the whole results folder.")]
ProgressEveryOpt = Annotated[Optional[float], typer.Option("--progress-every", help="Seconds between progress lines when stdout is not a terminal (env VITBENCH_PROGRESS_EVERY, default 30).")]
PartitionOpt = Annotated[Optional[str], typer.Option("--partition", help="SLURM partition (--executor slurm).")]
TimeOpt = Annotated[int, typer.Option("--time", help="SLURM time limit per array task, minutes; a task that reaches it is requeued and resumes.")]
GpusOpt = Annotated[int, typer.Option("--gpus-per-node", help="GPUs per SLURM array task.")]
AccountOpt = Annotated[Optional[str], typer.Option("--account", help="SLURM account.")]
JobsOpt = Annotated[Optional[int], typer.Option("--jobs", help="SLURM array size (default: one task per cell and its dependencies).")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="--executor slurm: wait for the array, then print the summary and write the report.")]


@dataclass
class StudyOptions:
    executor: str = "local"
    workers: int | None = None
    fail_fast: bool = False
    report_dir: Path | None = None
    progress_every: float | None = None
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_node: int = 1
    account: str | None = None
    jobs: int | None = None
    wait: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _check_report_target(path: Path) -> None:
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / REPORT_MARK).is_file())):
        raise VitbenchError(f"report folder {str(path)!r} is not empty and is not a vitbench report; "
                            "pass --report-dir (or -o) with a new or empty folder")


def _swap_in(built: Path, target: Path) -> None:
    """Replace the report folder `target` by `built` (renames: readers see the old or the new report, and
    workers finishing at once each leave a complete one; the old files go, so no stale plot stays)."""
    for _ in range(5):
        old = target.with_name(f".{target.name}.old-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            os.rename(target, old)
        except FileNotFoundError:
            old = None
        try:
            os.rename(built, target)
        except OSError:  # another worker put its report there in between: retry
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            continue
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"could not replace {target}")


def write_report(records: list[dict[str, Any]], target: Path, title: str, analysis=None) -> dict[str, Path] | None:
    """Rebuild the report of `records` (failure records included: the report lists them apart) in `target`:
    built in a temporary folder beside it, then swapped in; a non-vitbench folder there is refused."""
    from vitbench import results
    from vitbench.report import build_report

    if not results.ok_records(records):
        return None
    target = Path(target)
    _check_report_target(target)
    from vitbench import fsutil

    built = fsutil.temp_path(target)
    try:
        try:
            built.mkdir(parents=True)
            (built / REPORT_MARK).write_text("written by vitbench; replaced as a whole on every report\n")
            paths = build_report(records, built, title=title, analysis=analysis)
            _swap_in(built, target)
        except VitbenchError as exc:
            cause = exc.__cause__ or exc.__context__
            if cause is None or not fsutil.is_disk_full(cause):
                raise
            raise fsutil.disk_full(target, what="the report") from None
        except OSError as exc:
            if fsutil.is_disk_full(exc):
                raise fsutil.disk_full(target, what="the report") from None
            raise VitbenchError(f"cannot write the report in {str(target)!r} ({exc.strerror or exc}); pass --report-dir "
                                "with a writable folder, or run `vitbench report` later") from None
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return {name: target / Path(p).relative_to(built) for name, p in paths.items()}


def _progress_printer(todo, out_dir: Path, ctx, opts: StudyOptions, log):
    """(on_start, on_end, close) driving rich bars on a terminal, plain lines (and the run log) otherwise."""
    from vitbench import env
    from vitbench.runlog import ProgressLines

    bars = err.is_terminal or env.progress_forced()
    lines = ProgressLines(len(todo), every_s=opts.progress_every, log=log, enabled=not out.is_terminal, stream=sys.stdout)
    ctx.progress = lines.step
    if not bars:  # plain lines only (stdout off a terminal) or nothing but the log
        return (lambda cell, i, n: lines.cell_started(i, cell.label)), \
               (lambda cell, status, rec: lines.cell_ended(status, _detail(status, rec))), (lambda: None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=err, transient=False)
    bar.start()
    overall = bar.add_task("cells", total=len(todo))
    inner: dict[str, Any] = {}

    def progress(description: str, done: int, total: int) -> None:
        lines.step(description, done, total)
        if description not in inner:
            for tid in inner.values():
                bar.remove_task(tid)
            inner.clear()
            inner[description] = bar.add_task(f"  {description}", total=total)
        bar.update(inner[description], completed=done, total=total)

    ctx.progress = progress

    def on_start(cell, i, n):
        lines.cell_started(i, cell.label)
        bar.update(overall, description=f"cell {i + 1}/{n}: {cell.label}")

    def on_end(cell, status, rec):
        lines.cell_ended(status, _detail(status, rec))
        bar.advance(overall)
        if status == "ok":
            metric = cell.task.metric
            value = rec["metrics"].get(metric, rec["metrics"].get("top1"))
            bar.console.print(f"[green]done[/] {cell.label}: {metric}={value:.4f} ({rec['wall_time_s']:.1f}s)")
        elif status == "failed":
            bar.console.print(f"[red]failed[/] {cell.label}: {_detail(status, rec)}", highlight=False, markup=False)
        else:
            bar.console.print(f"[yellow]skipped[/] {cell.label}: {rec}", highlight=False)

    return on_start, on_end, bar.stop


def _detail(status: str, rec: Any) -> str:
    if isinstance(rec, str):
        return rec
    if status == "failed":
        return (rec.get("error") or {}).get("message", "")
    return ""


def run_study(the_plan, suite_name: str, out_dir: Path, settings, opts: StudyOptions) -> int:
    """Run `the_plan.todo` with the chosen executor; print the summary; write the report. Returns the exit code."""
    from vitbench import executors
    from vitbench.runlog import RunLog
    from vitbench.worker import Outcome, run_cells

    if opts.executor not in executors.EXECUTORS:
        raise VitbenchError(f"--executor must be one of {list(executors.EXECUTORS)}, got {opts.executor!r}")
    if opts.extra.get("report", True):
        _check_report_target(opts.report_dir or Path(out_dir) / "report")  # refused now, not after the run
    log = RunLog(out_dir)
    log.write(f"command: {' '.join(sys.argv)}")
    log.write(f"{suite_name}: {len(the_plan.cells)} cells, {len(the_plan.todo)} to run, {len(the_plan.done)} done")
    outcome = Outcome()
    try:
        if opts.executor == "slurm" and the_plan.todo:
            slurm = executors.SlurmOptions(partition=opts.partition, time_min=opts.time_min, gpus_per_node=opts.gpus_per_node,
                                           account=opts.account, jobs=opts.jobs)
            jobs, folder = executors.submit_slurm(the_plan.todo, settings, slurm)
            ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
            out.print(f"submitted {len(jobs)} array task(s) (job {', '.join(ids)}); logs in {folder}/")
            log.write(f"submitted {len(jobs)} SLURM task(s): {', '.join(str(j.job_id) for j in jobs)}")
            if not opts.wait:
                out.print(f"when they finish: `vitbench report {out_dir}` (or rerun this command: finished cells are skipped)")
                return 0
            outcome = executors.wait_slurm(jobs, the_plan.todo)
        elif the_plan.todo:
            devices = executors.worker_devices(settings.device, opts.workers)
            if len(devices) > 1:
                out.print(f"{len(devices)} workers: {', '.join(devices)}")
                log.write(f"{len(devices)} worker processes on {', '.join(devices)}")
                outcome = executors.run_local(the_plan.todo, settings, devices)
            else:
                ctx = settings.context(devices[0])
                on_start, on_end, close = _progress_printer(the_plan.todo, out_dir, ctx, opts, log)
                try:
                    outcome = run_cells(the_plan.todo, out_dir, ctx, fail_fast=opts.fail_fast,
                                        run_start=settings.run_start, log=log.write, on_start=on_start, on_end=on_end)
                finally:
                    close()
    except BaseException as exc:
        log.write(f"stopped: {type(exc).__name__}: {exc}")
        log.close()
        raise
    return _finish(the_plan, suite_name, out_dir, outcome, opts, log)


def _finish(the_plan, suite_name: str, out_dir: Path, outcome, opts: StudyOptions, log) -> int:
    from vitbench import results

    _dedupe(outcome)  # worker processes each see the others' cells settle
    everything = results.load_records(out_dir) if Path(out_dir).is_dir() else []
    keys = {c.key for c in the_plan.cells}
    mine = [r for r in results.ok_records(everything) if r["key"] in keys]
    print_summary(mine, suite_name)
    written = outcome.written
    out.print(f"records: {len(written)} written, {len(the_plan.done)} reused"
              + (f", {len(outcome.elsewhere)} written by other workers" if outcome.elsewhere else "")
              + f" under {out_dir}/{suite_name}/")
    for _, _, path in written[:10]:
        out.print(f"  {path}")
    if len(written) > 10:
        out.print(f"  ... and {len(written) - 10} more")
    for task, why in sorted({(c.task.name, why) for c, why in outcome.skipped}):
        n = sum(1 for c, _ in outcome.skipped if c.task.name == task)
        out.print(f"[yellow]note[/]: skipped {n} cell(s) of {why}", highlight=False)
    if outcome.failed:
        out.print(f"[red]failed[/]: {len(outcome.failed)} cell(s) (failure records written; the next run retries them):")
        # cells failing for the same reason (missing weights, missing data) are listed once with their count
        reasons: dict[str, list[str]] = {}
        for cell, rec in outcome.failed:
            reasons.setdefault((rec.get("error") or {}).get("message", "failed"), []).append(cell.label)
        for reason, labels in reasons.items():
            shown = labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more cell(s)"
            out.print(f"  {shown}: {reason}", highlight=False, markup=False)
    if outcome.stopped:
        out.print(f"{len(outcome.stopped)} cell(s) not run (the run was stopped); rerun the same command for them")
    out.print(f"log: {log.path}")
    if opts.extra.get("report", True):
        target = opts.report_dir or Path(out_dir) / "report"
        n_ok = len(results.ok_records(everything))
        try:
            paths = write_report(everything, target, title=f"vitbench: {suite_name} ({out_dir})")
        except VitbenchError as exc:  # the records are written; the report can be rebuilt any time
            err.print(f"[yellow]warning[/]: {exc}", highlight=False)
            log.write(f"report not written: {exc}")
            paths = None
        if paths:
            out.print(f"report: {paths['html']}  (CSV: {paths['csv']}; all {n_ok} results in {out_dir})")
    log.write(f"end: {len(written)} written, {len(outcome.failed)} failed, {len(outcome.skipped)} skipped, "
              f"{len(outcome.elsewhere)} done elsewhere")
    log.close()
    return 1 if outcome.failed or outcome.stopped else 0


def _dedupe(outcome) -> None:
    written = {c.key for c, _, _ in outcome.written}
    seen: set[str] = set()
    failed = []
    for cell, rec in outcome.failed:
        if cell.key not in seen and cell.key not in written:
            seen.add(cell.key)
            failed.append((cell, rec))
    outcome.failed = failed
    outcome.elsewhere = list({c.key: c for c in outcome.elsewhere if c.key not in written and c.key not in seen}.values())
    outcome.skipped = list({c.key: (c, why) for c, why in outcome.skipped}.values())


def settings_for(out_dir: Path, data_root, cache_dir, device: str, skip_corrupt: bool, run_start: float, opts: StudyOptions,
                 threads: int | None = None, execution: dict[str, Any] | None = None):
    """What every worker needs; `run_start` is taken before planning (records written since count as settled).
    `execution`: Settings fields on how cells run (checkpoint, compile, grad_checkpointing, precision,
    loader_workers, log_every), from `vitbench.cli.execution_options`."""
    from vitbench.executors import Settings

    return Settings(out_dir=Path(out_dir), data_root=data_root, cache_dir=cache_dir, device=device,
                    skip_corrupt=skip_corrupt, fail_fast=opts.fail_fast, run_start=run_start,
                    progress_every_s=opts.progress_every, threads=threads, **(execution or {}))
