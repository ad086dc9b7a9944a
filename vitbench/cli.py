"""The `vitbench` command: parse, print, exit. No protocol logic lives here.

Commands: run, fewshot, finetune, report, ls, validate, data (prepare/verify/info), cache (ls/clear).
Every user error is one line on stderr with exit code 2 (see `main`).
"""

from __future__ import annotations

from vitbench.threads import quiet_openmp_env

quiet_openmp_env()  # before anything imports torch: OpenMP reads its wait policy once, at load

import dataclasses
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from vitbench.commands.console import err, out, print_frame, print_plan, print_summary
from vitbench.commands.study import (
    AccountOpt, ExecutorOpt, FailFastOpt, GpusOpt, JobsOpt, PartitionOpt, ProgressEveryOpt, ReportDirOpt, StudyOptions,
    TimeOpt, WaitOpt, WorkersOpt, run_study, settings_for,
)
from vitbench.errors import VitbenchError

app = typer.Typer(
    name="vitbench",
    help="Transfer benchmarks for pretrained vision backbones, following the ViT paper's protocols.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

DEFAULT_OUT = Path("results")

# Options shared by run / fewshot / finetune.
SuiteOpt = Annotated[Optional[str], typer.Option("--suite", "-s", help="Suite name (see `vitbench ls suites`) or path to a .toml suite file.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model name(s), comma-separated (see `vitbench ls models`); default: the suite's.")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", "-w", help="'default', 'none' (random init), a tag, or a local .safetensors/.npz/.pth file.")]
TasksOpt = Annotated[Optional[str], typer.Option("--tasks", "-t", help="Comma-separated subset of the suite's tasks.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Results folder (one JSON record per cell).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute cells that already have a record.")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan (cells to run / skip per task and method) and exit.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="With --dry-run: also list every cell with its key.")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="Run only shard i of n ('i/n'), e.g. one per GPU or machine.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="torch device; default cuda when available, else cpu.")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", help="Prepared-data folder (see `vitbench data prepare`).")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Feature / decoded-image cache folder (env VITBENCH_CACHE_DIR).")]
ImgOpt = Annotated[Optional[int], typer.Option("--img-size", help="Input resolution (ViT position embeddings are interpolated).")]
SeedsOpt = Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")]
PosInterpOpt = Annotated[Optional[str], typer.Option("--pos-interp", help="Position-embedding resize at a non-native --img-size: bilinear (Google's, default) or bicubic (timm's).")]
SkipCorruptOpt = Annotated[bool, typer.Option("--skip-corrupt", help="Skip unreadable images instead of stopping (counted in each record's split provenance).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads for torch and BLAS (default: $OMP_NUM_THREADS if set, else every core this process may use; idle threads sleep: OMP_WAIT_POLICY=PASSIVE unless set). Recorded in each record.")]
ReportOpt = Annotated[bool, typer.Option("--report/--no-report", help="Write the HTML + CSV report when done.")]
# How training cells run (never part of a cell key): run / finetune.
CheckpointEveryOpt = Annotated[str, typer.Option("--checkpoint-every", help="Save a training cell's state beside its record every N steps and/or time: 500, 10m, 1.5h, 500,10m, or off. A killed or requeued run resumes from it.")]
KeepCheckpointsOpt = Annotated[bool, typer.Option("--keep-checkpoints", help="Keep each cell's checkpoint after its record is written (default: deleted then).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model for training (faster steps after a one-off compile).")]
GradCkptOpt = Annotated[bool, typer.Option("--grad-checkpointing", help="Recompute activations in the backward pass: less memory for big models, more compute.")]
ExecPrecisionOpt = Annotated[str, typer.Option("--precision", help="Fine-tuning arithmetic: auto (bf16 autocast with fp32 weights on CUDA, fp32 on CPU), fp32 or bf16.")]
LoaderWorkersOpt = Annotated[Optional[int], typer.Option("--loader-workers", help="Processes decoding and augmenting training images (0: in the main process; default: the runner's choice).")]
LogEveryOpt = Annotated[int, typer.Option("--log-every", help="Training steps between loss read-backs (device syncs), step-log lines and progress updates.")]


def _int_list(text: str | None, name: str, minimum: int) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in str(text).replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise VitbenchError(f"--{name} must be integers like 1,5,10,25, got {text!r}") from None
    if not values or any(v < minimum for v in values):
        raise VitbenchError(f"--{name} values must be >= {minimum}, got {text!r}")
    return values


def _csv(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _device(name: str | None) -> str:
    import torch

    if name:
        try:
            torch.device(name)
        except (RuntimeError, ValueError):
            raise VitbenchError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise VitbenchError(f"--device {name}: no CUDA device is visible; use --device cpu")
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _execute(
    suite_name: str,
    model: str | None,
    weights: str | None,
    methods: str | None,
    tasks: str | None,
    out_dir: Path,
    force: bool,
    dry_run: bool,
    shard: str | None,
    device: str | None,
    data_root: Path | None,
    cache_dir: Path | None,
    options: dict[str, Any],
    report: bool,
    pos_interp: str | None = None,
    skip_corrupt: bool = False,
    verbose: bool = False,
    threads: int | None = None,
    study: StudyOptions | None = None,
    execution: dict[str, Any] | None = None,
) -> None:
    from vitbench import distributed, executors, fsutil, planner, results
    from vitbench.suites import load_suite
    from vitbench.threads import check_threads

    threads = check_threads(threads)
    suite = load_suite(suite_name)
    methods = planner.resolve_methods(suite, methods)
    cells = planner.expand(
        suite, suite.run_models(_csv(model)), methods, weights=suite.run_weights(weights), tasks=_csv(tasks),
        overrides=planner.route_overrides(methods, options), pos_interp=suite.run_pos_interp(pos_interp),
    )
    auto_shard = None if shard else executors.env_shard()  # inside a SLURM array or under an MPI-style launcher
    team = distributed.launched_by_torchrun()  # torchrun: the processes run each cell together (DDP)
    follower = team and os.environ.get("RANK", "0") != "0"  # rank 0 alone prints, writes and reports
    say = (lambda *a, **k: None) if follower else out.print
    if auto_shard:
        say(f"shard {auto_shard[0][0]}/{auto_shard[0][1]} (from {auto_shard[1]})")
    run_start = time.time()  # records written from here on by other workers count as settled for this run
    # --dry-run opens no data: a recorded cell counts as done; a real run also checks the record's data identity
    check = None
    if not dry_run and not follower:  # a follower runs rank 0's plan
        from vitbench.data import fingerprint

        fingerprint.forget()  # look at the data as it is now
        check = lambda c: _current_data(fingerprint, c, data_root, cache_dir)  # noqa: E731
    the_plan = planner.plan(cells, out_dir, force=force, shard=planner.parse_shard(shard) or (auto_shard and auto_shard[0]),
                            data_fingerprint=check)
    if dry_run and follower:
        return
    say(
        f"[bold]{suite.name}[/]: {len(the_plan.cells)} cells "
        f"({len(the_plan.todo)} to run, {len(the_plan.done)} already done) -> {out_dir}"
    )
    if dry_run:
        print_plan(the_plan, verbose=verbose)
        if the_plan.done:
            out.print("(--dry-run counts recorded cells as done without opening the data; a run also checks that "
                      "each record was measured on the current data and reruns it otherwise)")
        return
    from vitbench.features import default_cache_dir, forget_splits  # imports torch: only for a real run

    forget_splits()  # splits kept between cells are read again as the data is now
    if not follower:
        fsutil.sweep_stale_temps(out_dir)  # temp files of killed runs (their pid is gone), checkpoints' included

        fsutil.sweep_stale_temps(default_cache_dir(cache_dir) / "features", default_cache_dir(cache_dir) / "images", recursive=False)
        if the_plan.todo:
            results.ensure_writable(out_dir)
    study = study or StudyOptions()
    study.extra["report"] = report
    device_name = _device(device or (executors.env_device() if auto_shard or team else None))
    settings = settings_for(out_dir, data_root, cache_dir, device_name, skip_corrupt, run_start, study, threads=threads,
                            execution=execution)
    if auto_shard:
        study.workers = 1  # the launcher already made one process per GPU
    if team:
        code = _run_team(the_plan, suite.name, out_dir, settings, study, follower)
    else:
        code = run_study(the_plan, suite.name, out_dir, settings, study)
    if code:
        raise typer.Exit(code)


def _run_team(the_plan, suite_name: str, out_dir: Path, settings, study: StudyOptions, follower: bool) -> int:
    """Under torchrun: every process runs rank 0's plan, cell by cell together (DDP); rank 0 reports."""
    from vitbench import distributed
    from vitbench.worker import run_cells

    if study.executor != "local" or (study.workers or 1) > 1:
        raise VitbenchError("under torchrun the processes run each cell together (DDP): use the default "
                            "--executor local without --workers, or launch vitbench without torchrun")
    study.workers = 1
    settings = dataclasses.replace(settings, device=distributed.local_device(settings.device))  # cuda -> cuda:LOCAL_RANK
    distributed.init(settings.device)
    try:
        keys = distributed.broadcast_object([c.key for c in the_plan.todo])  # plans made a moment apart may differ
        by_key = {c.key: c for c in the_plan.cells}
        if any(k not in by_key for k in keys):
            raise VitbenchError("under torchrun every process must run the same command; rank 0 planned other cells")
        the_plan.todo = [by_key[k] for k in keys]
        if not follower:
            return run_study(the_plan, suite_name, out_dir, settings, study)
        if not the_plan.todo:  # rank 0 runs no loop either
            return 0
        outcome = run_cells(the_plan.todo, out_dir, settings.context(), fail_fast=settings.fail_fast,
                            run_start=settings.run_start)
        return 1 if outcome.failed or outcome.stopped else 0
    finally:
        distributed.shutdown()


def execution_options(checkpoint_every: str | None = "30m", keep_checkpoints: bool = False, compile: bool = False,
                      grad_checkpointing: bool = False, precision: str = "auto", loader_workers: int | None = None,
                      log_every: int = 50) -> dict[str, Any]:
    """How cells run (`Settings` / `RunContext` fields, never in a cell key), checked: one line for a bad value."""
    from vitbench.cells import PRECISIONS
    from vitbench.runners.checkpoint import CheckpointPolicy

    if precision not in PRECISIONS:
        raise VitbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if loader_workers is not None and loader_workers < 0:
        raise VitbenchError(f"--loader-workers must be >= 0, got {loader_workers}")
    return {"checkpoint": CheckpointPolicy.parse(checkpoint_every, keep=keep_checkpoints), "compile": compile,
            "grad_checkpointing": grad_checkpointing, "precision": precision, "loader_workers": loader_workers,
            "log_every": _pos_int(log_every, "log-every")}


def _study(executor, workers, fail_fast, report_dir, progress_every, partition, time_min, gpus_per_node, account, jobs, wait) -> StudyOptions:
    if workers is not None and workers < 1:
        raise VitbenchError(f"--workers must be >= 1, got {workers}")
    if progress_every is not None and not progress_every > 0:
        raise VitbenchError(f"--progress-every must be > 0 seconds, got {progress_every}")
    return StudyOptions(executor=executor, workers=workers, fail_fast=fail_fast, report_dir=report_dir,
                        progress_every=progress_every, partition=partition, time_min=_pos_int(time_min, "time"),
                        gpus_per_node=gpus_per_node, account=account, jobs=_pos_int(jobs, "jobs"), wait=wait)


_UNCHECKED: set[str] = set()


def _current_data(fingerprint, cell, data_root, cache_dir=None) -> str | None:
    """The data fingerprint of a recorded cell, or None (record kept) when its data cannot be opened here."""
    from vitbench import env

    try:
        with env.cache_dir_scope(cache_dir):  # --cache-dir reaches the sources' caches, as during the run
            return fingerprint.cell_data_fingerprint(cell, data_root)
    except VitbenchError as exc:
        if cell.task.name not in _UNCHECKED:
            _UNCHECKED.add(cell.task.name)
            warnings.warn(f"task {cell.task.name!r}: its data cannot be opened ({exc}); its records are kept "
                          "without checking that they were measured on the current data")
        return None


def _positive(value: float | None, name: str) -> float | None:
    if value is not None and not 0 < value < float("inf"):
        raise VitbenchError(f"--{name} must be a finite number > 0, got {value}")
    return value


@app.command()
def run(
    suite: SuiteOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    method: Annotated[str, typer.Option("--method", help="A method (see `vitbench ls methods`), a comma list, or all (the suite's defaults.methods).")] = "all",
    tasks: TasksOpt = None,
    out_dir: OutOpt = DEFAULT_OUT,
    force: ForceOpt = False,
    dry_run: DryOpt = False,
    shard: ShardOpt = None,
    device: DeviceOpt = None,
    data_root: DataRootOpt = None,
    skip_corrupt: SkipCorruptOpt = False,
    cache_dir: CacheOpt = None,
    img_size: ImgOpt = None,
    shots: Annotated[Optional[str], typer.Option("--shots", help="Few-shot shots, e.g. 1,5,10,25.")] = None,
    seeds: SeedsOpt = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Fine-tuning steps.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Fine-tuning base learning rate.")] = None,
    report: ReportOpt = True,
    pos_interp: PosInterpOpt = None,
    verbose: VerboseOpt = False,
    threads: ThreadsOpt = None,
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = None,
    fail_fast: FailFastOpt = False,
    report_dir: ReportDirOpt = None,
    progress_every: ProgressEveryOpt = None,
    partition: PartitionOpt = None,
    time_min: TimeOpt = 24 * 60,
    gpus_per_node: GpusOpt = 1,
    account: AccountOpt = None,
    jobs: JobsOpt = None,
    wait: WaitOpt = False,
    checkpoint_every: CheckpointEveryOpt = "30m",
    keep_checkpoints: KeepCheckpointsOpt = False,
    compile: CompileOpt = False,
    grad_checkpointing: GradCkptOpt = False,
    precision: ExecPrecisionOpt = "auto",
    loader_workers: LoaderWorkersOpt = None,
    log_every: LogEveryOpt = 50,
) -> None:
    """Run a suite: every task x model x method x params x seed; finished cells are skipped (resume)."""
    options = {"shots": _int_list(shots, "shots", 1), "seeds": _int_list(seeds, "seeds", 0), "img_size": img_size,
               "steps": _pos_int(steps, "steps"), "lr": _positive(lr, "lr")}
    _execute(_suite_or_fail(suite), model, weights, method, tasks, out_dir, force, dry_run, shard, device, data_root, cache_dir,
             options, report, pos_interp, skip_corrupt, verbose=verbose, threads=threads,
             execution=execution_options(checkpoint_every, keep_checkpoints, compile, grad_checkpointing, precision,
                                         loader_workers, log_every),
             study=_study(executor, workers, fail_fast, report_dir, progress_every, partition, time_min, gpus_per_node, account, jobs, wait))


def _pos_int(value: int | None, name: str) -> int | None:
    if value is not None and value < 1:
        raise VitbenchError(f"--{name} must be >= 1, got {value}")
    return value


def _suite_or_fail(suite: str | None) -> str:
    if not suite:
        from vitbench.suites import available_suites

        raise VitbenchError(f"--suite is required; available: {', '.join(available_suites())} (or a path to a .toml file)")
    return suite


@app.command()
def fewshot(
    suite: SuiteOpt = "fewshot",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    shots: Annotated[Optional[str], typer.Option("--shots", help="One value or a list, e.g. 5 or 1,5,10,25 (default: the task's, else the suite's, else 1,5,10,25).")] = None,
    seeds: SeedsOpt = None,
    l2: Annotated[Optional[float], typer.Option("--l2", help="Ridge strength for --l2-select fixed (default 1024 = 2^10).")] = None,
    l2_select: Annotated[Optional[str], typer.Option("--l2-select", help="fixed | mean-rank | leave-self-out | cv")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="float64 (default), mixed (float64 solve + float32 prediction: faster, 99.999% identical) or float32 (big_vision's own float32 computation).")] = None,
    tasks: TasksOpt = None,
    out_dir: OutOpt = DEFAULT_OUT,
    force: ForceOpt = False,
    dry_run: DryOpt = False,
    shard: ShardOpt = None,
    device: DeviceOpt = None,
    data_root: DataRootOpt = None,
    skip_corrupt: SkipCorruptOpt = False,
    cache_dir: CacheOpt = None,
    img_size: ImgOpt = None,
    pos_interp: PosInterpOpt = None,
    report: ReportOpt = True,
    verbose: VerboseOpt = False,
    threads: ThreadsOpt = None,
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = None,
    fail_fast: FailFastOpt = False,
    report_dir: ReportDirOpt = None,
    progress_every: ProgressEveryOpt = None,
    partition: PartitionOpt = None,
    time_min: TimeOpt = 24 * 60,
    gpus_per_node: GpusOpt = 1,
    account: AccountOpt = None,
    jobs: JobsOpt = None,
    wait: WaitOpt = False,
) -> None:
    """Few-shot linear evaluation: closed-form ridge on frozen pre-logits to {-1,1}^K targets (big_vision)."""
    options = {"shots": _int_list(shots, "shots", 1), "seeds": _int_list(seeds, "seeds", 0), "l2": _positive(l2, "l2"),
               "l2_select": l2_select, "precision": precision, "img_size": img_size}
    _execute(suite, model, weights, "fewshot", tasks, out_dir, force, dry_run, shard, device, data_root, cache_dir, options,
             report, pos_interp, skip_corrupt, verbose=verbose, threads=threads,
             study=_study(executor, workers, fail_fast, report_dir, progress_every, partition, time_min, gpus_per_node, account, jobs, wait))


@app.command()
def finetune(
    suite: SuiteOpt = "vtab",
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Training steps (paper VTAB: 2500).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Base learning rate (paper VTAB: 0.01).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Effective batch (paper: 512).")] = None,
    micro_batch: Annotated[Optional[int], typer.Option("--micro-batch", help="Largest micro-batch that fits memory; gradients accumulate to --batch-size.")] = None,
    warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", help="Linear warm-up steps (< steps).")] = None,
    seeds: SeedsOpt = None,
    tasks: TasksOpt = None,
    out_dir: OutOpt = DEFAULT_OUT,
    force: ForceOpt = False,
    dry_run: DryOpt = False,
    shard: ShardOpt = None,
    device: DeviceOpt = None,
    data_root: DataRootOpt = None,
    skip_corrupt: SkipCorruptOpt = False,
    cache_dir: CacheOpt = None,
    img_size: ImgOpt = None,
    pos_interp: PosInterpOpt = None,
    report: ReportOpt = True,
    verbose: VerboseOpt = False,
    threads: ThreadsOpt = None,
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = None,
    fail_fast: FailFastOpt = False,
    report_dir: ReportDirOpt = None,
    progress_every: ProgressEveryOpt = None,
    partition: PartitionOpt = None,
    time_min: TimeOpt = 24 * 60,
    gpus_per_node: GpusOpt = 1,
    account: AccountOpt = None,
    jobs: JobsOpt = None,
    wait: WaitOpt = False,
    checkpoint_every: CheckpointEveryOpt = "30m",
    keep_checkpoints: KeepCheckpointsOpt = False,
    compile: CompileOpt = False,
    grad_checkpointing: GradCkptOpt = False,
    precision: ExecPrecisionOpt = "auto",
    loader_workers: LoaderWorkersOpt = None,
    log_every: LogEveryOpt = 50,
) -> None:
    """Full fine-tuning with a new zero-initialised head (paper recipe: SGD 0.9, cosine, clip 1)."""
    options = {
        "steps": _pos_int(steps, "steps"), "lr": _positive(lr, "lr"), "batch_size": _pos_int(batch_size, "batch-size"),
        "micro_batch": _pos_int(micro_batch, "micro-batch"), "warmup_steps": warmup_steps,
        "seeds": _int_list(seeds, "seeds", 0), "img_size": img_size,
    }
    _execute(suite, model, weights, "finetune", tasks, out_dir, force, dry_run, shard, device, data_root, cache_dir, options,
             report, pos_interp, skip_corrupt, verbose=verbose, threads=threads,
             execution=execution_options(checkpoint_every, keep_checkpoints, compile, grad_checkpointing, precision,
                                         loader_workers, log_every),
             study=_study(executor, workers, fail_fast, report_dir, progress_every, partition, time_min, gpus_per_node, account, jobs, wait))


@app.command()
def report(
    results_dirs: Annotated[Optional[list[Path]], typer.Argument(help="Results folder(s); several (e.g. shards from several machines) are merged, each record counted once.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Report folder (default <results folder>/report; for several folders, reports/merged). Rebuilt: its old files are removed.")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="Report title.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary (tables as numbers, file paths) instead of tables.")] = False,
) -> None:
    """Build the report: index.html (self-contained), report.md, CSV tables, figures beside the paper's numbers."""
    import json

    from vitbench import results
    from vitbench.commands.study import write_report
    from vitbench.report import analyse

    dirs = list(results_dirs or [DEFAULT_OUT])
    records = results.load_many(dirs)  # shards of several machines: each (suite, key) once
    ok = results.ok_records(records)
    if not ok:
        where = ", ".join(repr(str(d)) for d in dirs)
        raise VitbenchError(f"no result records in {where}; run `vitbench run --suite smoke` first or pass the folder holding *.json records")
    target = output or (dirs[0] / "report" if len(dirs) == 1 else Path("reports") / "merged")
    suites = ", ".join(sorted({str(r.get("suite")) for r in ok}))
    a = analyse(records)
    paths = write_report(records, target, title=title or f"vitbench report: {suites} ({', '.join(map(str, dirs))})", analysis=a)
    if as_json:
        payload = {
            "records": len(a.records), "failed": len(a.failed), "warnings": a.warnings,
            "files": {k: str(v) for k, v in paths.items()},
            "summary": _json_rows(a.summary), "vtab": _json_rows(a.vtab_numeric), "paper_comparison": _json_rows(a.comparison),
        }
        sys.stdout.write(json.dumps(payload, indent=1, default=str) + "\n")
        return
    print_summary(records, "report", a)
    out.print(f"report: {paths['html']}  (also {paths['md'].name}, CSV: {paths['csv']}; {len(a.records)} results from "
              f"{len(dirs)} folder(s)" + (f"; {len(a.failed)} failed cell(s) listed apart" if a.failed else "") + ")")


def _json_rows(frame) -> list[dict[str, Any]]:
    """Rows of a table as JSON-able dicts (NaN -> null)."""
    if frame is None or frame.empty:
        return []
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@app.command()
def compare(
    results_a: Annotated[Path, typer.Argument(help="Folder of result records.")],
    results_b: Annotated[Optional[Path], typer.Argument(help="A second results folder to diff against (cell by cell).")] = None,
    expected: Annotated[Optional[str], typer.Option("--expected", help="CSV of expected numbers (task,model,method,metric,value[,pretrain,setting,tol]; percent) or 'paper'.")] = None,
    tol: Annotated[float, typer.Option("--tol", help="Allowed |obtained - expected| in percentage points.")] = 0.5,
) -> None:
    """Check results against expected numbers (exit 1 when any is outside --tol), or diff two results folders."""
    from vitbench import results
    from vitbench.report import analyse
    from vitbench.report.compare import compare_expected, compare_folders, load_expected

    if (results_b is None) == (expected is None):
        raise VitbenchError("compare: give either a second results folder (compare A B) or --expected FILE|paper")
    if not tol >= 0:
        raise VitbenchError(f"--tol must be >= 0, got {tol}")
    records = _records_or_fail(results, results_a)
    if expected is not None:
        frame, is_paper = load_expected(expected)
        table = compare_expected(analyse(records), frame, tol, is_paper)
        if table.empty:
            out.print("no measured number lines up with an expected one" + (" (the paper has none for these models/tasks)" if is_paper else ""))
            return
        print_frame(table, title=f"expected vs obtained (%), tolerance {tol:g}")
        bad = int((table["status"] != "ok").sum())
        out.print(f"{len(table) - bad} within tolerance, {bad} outside or missing")
        if bad:
            raise typer.Exit(1)
        return
    table, only_a, only_b = compare_folders(records, _records_or_fail(results, results_b))
    if table.empty:
        raise VitbenchError(f"{results_a} and {results_b} share no definition (same task, model, method, parameters, data); nothing to compare")
    print_frame(table, title=f"{results_a} (A) vs {results_b} (B), same definitions (%)")
    flagged = int((table["status"] != "ok").sum())
    out.print(f"{len(table)} shared definition(s): {flagged} differ by more than the seeds' spread; "
              f"{only_a} only in A, {only_b} only in B")
    if flagged:
        raise typer.Exit(1)




def _records_or_fail(results, folder: Path) -> list[dict[str, Any]]:
    records = results.load_records(folder)
    if not records:
        raise VitbenchError(f"no result records in {str(folder)!r}; pass the folder holding the *.json records of a run")
    return records


@app.command("ls")
def ls(
    what: Annotated[str, typer.Argument(help="suites | tasks | models | methods")],
    suite: SuiteOpt = None,
    tags: Annotated[bool, typer.Option("--tags", help="ls models: also list every timm weights tag (imports timm).")] = False,
) -> None:
    """List suites, the tasks of a suite (or all suites), the model registry, or the methods and their parameters."""
    from vitbench.suites import available_suites, load_suite

    if what == "suites":
        table = Table(title="suites")
        for col in ("name", "tasks", "description", "file"):
            table.add_column(col)
        for name, path in available_suites().items():
            try:
                s = load_suite(str(path))
                table.add_row(name, str(len(s.tasks)), s.description, str(path))
            except VitbenchError as exc:
                table.add_row(name, "?", f"[red]invalid: {exc}[/]", str(path))
        out.print(table)
    elif what == "tasks":
        names = [suite] if suite else list(available_suites())
        table = Table(title="tasks")
        for col in ("suite", "task", "group", "classes", "train", "test", "metric", "sources"):
            table.add_column(col)
        for name in names:
            s = load_suite(name)
            for t in s.tasks:
                sources = ", ".join(f"{src.kind}:{src.id}" if src.id else src.kind for src in t.sources)
                table.add_row(s.name, t.name + (" (optional)" if t.optional else ""), t.group, str(t.num_classes), t.splits[t.train_split], t.splits[t.test_split], t.metric, sources)
        out.print(table)
    elif what == "models":
        from vitbench.models.registry import models_table

        table = models_table(timm_tags=tags).reset_index()
        cols = ["name", "family", "patch_size", "layers", "hidden_size", "mlp_size", "heads", "params_backbone_m",
                "pretrain_data", "native_resolution", "default_weights", "other_tags"]
        shown = table[[c for c in cols if c in table.columns]].astype(object)
        print_frame(shown.where(shown.notna(), ""),
                     title="models (`name` or `name.tag`; also timm:<name>, torchvision:<name>, hf:<repo>, "
                           "open_clip:<arch>/<tag>, timm:hf-hub:<repo>, --weights PATH)"
                           + ("" if tags else "; `--tags` lists every timm weights tag"))
    elif what == "methods":
        from vitbench.commands.console import print_methods

        print_methods()
    else:
        raise VitbenchError(f"`vitbench ls {what}`: choose suites, tasks, models or methods")


@app.command()
def validate(suite: Annotated[str, typer.Argument(help="Suite name or path to a .toml file.")]) -> None:
    """Check a suite file (fields, splits, label transforms, method parameters) without running anything."""
    from vitbench import planner
    from vitbench.suites import load_suite

    s = load_suite(suite)
    if "model" in s.defaults:
        try:
            planner.resolve_weights_id(str(s.defaults["model"]), str(s.defaults.get("weights", "default")))
        except VitbenchError as exc:
            raise VitbenchError(f"{s.path}: field 'defaults.model': {exc}") from None
    from vitbench.methods import method_names

    for method in method_names():  # every table is checked, also of methods `all` does not run
        planner.method_params(s, method)
        for task in s.tasks:
            planner.method_params(s, method, task=task)
    out.print(f"[green]ok[/]: {s.path}: suite {s.name!r}, {len(s.tasks)} task(s): {', '.join(t.name for t in s.tasks)}")


def _version(value: bool) -> None:
    if value:
        from vitbench import __version__

        out.print(f"vitbench {__version__}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Transfer benchmarks for pretrained vision backbones, following the ViT paper's protocols."""


def _mount_subapps() -> None:
    for module, name in (("vitbench.commands.data", "data"), ("vitbench.commands.cache", "cache")):
        try:
            sub = __import__(module, fromlist=["app"]).app
        except ImportError:
            continue
        app.add_typer(sub, name=name)


_mount_subapps()


def _parser_exceptions() -> tuple[tuple, tuple, tuple]:
    """(abort, exit, usage-error) exception types of the installed typer (which may or may not vendor click)."""
    aborts: list = [KeyboardInterrupt]
    exits: list = []
    usage: list = []
    try:  # typer >= 0.20 vendors click and raises its own exception types
        from typer.exceptions import Abort, Exit, TyperException

        aborts.append(Abort), exits.append(Exit), usage.append(TyperException)
    except ImportError:
        pass
    try:
        import click

        aborts.append(click.exceptions.Abort), exits.append(click.exceptions.Exit), usage.append(click.exceptions.ClickException)
    except ImportError:
        pass
    return tuple(aborts), tuple(exits), tuple(usage)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors become one line on stderr and exit code 2; never a traceback."""
    from vitbench.fsutil import is_disk_full

    aborts, exits, usage = _parser_exceptions()
    # A process started in the background by a non-interactive shell inherits SIGINT as ignored; restore
    # Python's handler so `kill -INT` (and Ctrl-C) stop a run cleanly with exit code 130.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if argv is not None:  # called from Python: records carry this command line, not the caller's sys.argv
        os.environ["VITBENCH_ARGV"] = json.dumps(["vitbench", *map(str, argv)])
    # SIGTERM (SLURM, docker, Kubernetes) unwinds like Ctrl-C: temp files are removed on the way out, exit 143.
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    from vitbench.runners.checkpoint import install_save_request_handler

    install_save_request_handler()  # SIGUSR1: a checkpoint at the next training step, never the end of the run
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv:  # typer turns Ctrl-C into a returned 130
            if rv == 130:
                err.print("interrupted; records already written are kept")
            return rv
    except VitbenchError as exc:
        err.print(Text("error: ", style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True)
        return exc.exit_code
    except Terminated:
        err.print("terminated (SIGTERM); records already written are kept, temporary files removed")
        return 143
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = Path(exc.filename).parent if exc.filename else Path.cwd()
        err.print(Text(f"error: no space left in {where} ({exc.strerror}); free space there or write elsewhere "
                       "(--out, --output, --cache-dir); records already written are kept"), highlight=False, soft_wrap=True)
        return 2
    except aborts:
        err.print("interrupted; records already written are kept")
        return 130
    except exits as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except usage as exc:  # usage errors from the argument parser
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":
            out.print(message, highlight=False, markup=False)
            return 0
        err.print(f"error: {' '.join(str(message).split())} (see `vitbench --help`)", highlight=False, soft_wrap=True, markup=False)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    return 0


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that `finally` blocks remove temp files before exiting."""


def _raise_terminated(signum, frame):
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
