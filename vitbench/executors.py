"""Where the worker loop runs: in this process, in one process per GPU, or as a SLURM job array (submitit).

- `env_shard()`: inside a SLURM array (SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT) or under a launcher that
  sets RANK / WORLD_SIZE (MPI-style), the shard i/n of this process, so `--shard` is not typed by hand; under
  torchrun the processes share every cell instead (DDP, `vitbench/distributed.py`), so no shard;
  `env_device()` picks the process's GPU from LOCAL_RANK / SLURM_LOCALID.
- `run_local(...)`: `--executor local`; one worker process per visible GPU (`--workers`, default the GPU
  count, 1 on CPU: in-process). Workers share the plan and claim cells by lock file (`vitbench/locks.py`).
- `submit_slurm(...)`: `--executor slurm`; one array task per group of cells (a final cell with its selection
  cells), through submitit (`pip install 'vitbench[slurm]'`), requeued on preemption or time-out: the
  requeued task resumes, since finished cells have records, its own stale lock is taken over at once and the
  interrupted cell's checkpoint is in the results folder.
Exercised by `vitbench run --executor local|slurm`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.cells import Cell, RunContext
from vitbench.errors import VitbenchError
from vitbench.runners.checkpoint import DEFAULT_POLICY, CheckpointPolicy
from vitbench.worker import Outcome, run_cells

EXECUTORS = ("local", "slurm")


def env_shard(environ: dict[str, str] | None = None) -> tuple[tuple[int, int], str] | None:
    """((i, n), where it came from) for this process from its launcher's variables, or None (also under
    torchrun, whose processes run each cell together)."""
    from vitbench.distributed import launched_by_torchrun

    env = os.environ if environ is None else environ
    tid, count = env.get("SLURM_ARRAY_TASK_ID"), env.get("SLURM_ARRAY_TASK_COUNT")
    if tid is not None and count is not None and not env.get("VITBENCH_IN_JOB"):
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        i, n = int(tid) - lo + 1, int(count)  # array ids may start at any number (--array=1-8)
        if 1 <= i <= n:
            return (i, n), f"SLURM_ARRAY_TASK_ID={tid} of SLURM_ARRAY_TASK_COUNT={count}"
    if launched_by_torchrun(env):
        return None
    rank, world = env.get("RANK", env.get("PMI_RANK", env.get("OMPI_COMM_WORLD_RANK"))), \
        env.get("WORLD_SIZE", env.get("PMI_SIZE", env.get("OMPI_COMM_WORLD_SIZE")))
    if rank is not None and world is not None and int(world) > 1:
        return (int(rank) + 1, int(world)), f"rank {rank} of world size {world}"
    return None


def env_device(environ: dict[str, str] | None = None) -> str | None:
    """`cuda:<local rank>` when a launcher gave this process a local rank and a GPU is visible."""
    env = os.environ if environ is None else environ
    local = env.get("LOCAL_RANK", env.get("SLURM_LOCALID"))
    if local is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(local) % torch.cuda.device_count()}"


@dataclass
class Settings:
    """What every worker needs besides its cells (picklable, for worker processes and SLURM jobs)."""

    out_dir: Path
    data_root: Path | None = None
    cache_dir: Path | None = None
    device: str = "cpu"
    skip_corrupt: bool = False
    fail_fast: bool = False
    run_start: float = field(default_factory=time.time)
    progress_every_s: float | None = None
    threads: int | None = None  # --threads (None: the process default)
    # how cells run, never what they compute (RunContext's fields of the same names)
    checkpoint: CheckpointPolicy = DEFAULT_POLICY
    compile: bool = False
    grad_checkpointing: bool = False
    precision: str = "auto"
    loader_workers: int | None = None
    log_every: int = 50

    def context(self, device: str | None = None) -> RunContext:
        return RunContext(data_root=self.data_root, cache_dir=self.cache_dir, device=device or self.device,
                          skip_corrupt=self.skip_corrupt, num_threads=self.threads, checkpoint=self.checkpoint,
                          compile=self.compile, grad_checkpointing=self.grad_checkpointing, precision=self.precision,
                          loader_workers=self.loader_workers, log_every=self.log_every)


def run_quiet(cells: list[Cell], settings: Settings, device: str | None = None, tag: str = "worker", stop: Any = None) -> Outcome:
    """The worker loop with progress lines and a run log, no terminal UI (worker processes, SLURM tasks)."""
    from vitbench.runlog import ProgressLines, RunLog

    if settings.cache_dir:
        os.environ["VITBENCH_CACHE_DIR"] = str(settings.cache_dir)
    ctx = settings.context(device)
    log = RunLog(settings.out_dir, tag=tag)
    log.write(f"{tag}: {len(cells)} cells on {ctx.device}")
    lines = ProgressLines(len(cells), every_s=settings.progress_every_s, log=log, prefix=f"[{tag}] ")
    ctx.progress = lines.step

    def on_end(cell, status, rec):
        detail = rec if isinstance(rec, str) else (rec.get("error") or {}).get("message", "") if status == "failed" else ""
        lines.cell_ended(status, detail)

    try:
        return run_cells(cells, settings.out_dir, ctx, fail_fast=settings.fail_fast,
                         run_start=settings.run_start, log=log.write,
                         on_start=lambda c, i, n: lines.cell_started(i, c.label), on_end=on_end, stop=stop)
    finally:
        log.close()


def _summary(outcome: Outcome) -> dict[str, Any]:
    """An outcome as plain data (keys and records), to send from a worker process."""
    return {
        "written": [(c.key, rec, str(p)) for c, rec, p in outcome.written],
        "failed": [(c.key, rec) for c, rec in outcome.failed],
        "skipped": [(c.key, why) for c, why in outcome.skipped],
        "elsewhere": [c.key for c in outcome.elsewhere],
        "stopped": [c.key for c in outcome.stopped],
    }


def _outcome(summary: dict[str, Any], by_key: dict[str, Cell]) -> Outcome:
    return Outcome(
        written=[(by_key[k], rec, Path(p)) for k, rec, p in summary["written"]],
        failed=[(by_key[k], rec) for k, rec in summary["failed"]],
        skipped=[(by_key[k], why) for k, why in summary["skipped"]],
        elsewhere=[by_key[k] for k in summary["elsewhere"]],
        stopped=[by_key[k] for k in summary["stopped"]],
    )


def _worker_entry(index: int, device: str, cells: list[Cell], settings: Settings, stop, results_q) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops workers (Ctrl-C reaches the whole group)
    from vitbench.runners.checkpoint import install_save_request_handler

    install_save_request_handler()  # the parent passes SIGUSR1 on: a checkpoint at the next step
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))
    try:
        outcome = run_quiet(cells, settings, device=device, tag=f"worker{index}", stop=stop)
        results_q.put((index, _summary(outcome), None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which prints the one line
        stop.set()
        from vitbench.results import error_line

        results_q.put((index, None, (type(exc).__name__, error_line(exc), isinstance(exc, VitbenchError))))


def worker_devices(device: str, workers: int | None) -> list[str]:
    """One device per worker: every visible GPU for `cuda` (or `workers` of them), else `workers` x the device."""
    if device == "cuda":
        import torch

        n = torch.cuda.device_count()
        count = workers or n
        return [f"cuda:{i % n}" for i in range(count)]
    return [device] * (workers or 1)


def run_local(cells: list[Cell], settings: Settings, devices: list[str]) -> Outcome:
    """Run `cells` in one spawned worker process per entry of `devices`; they share the plan and claim cells."""
    if settings.threads is None and not any(d.startswith("cuda") for d in devices):
        from dataclasses import replace

        from vitbench.threads import default_threads

        settings = replace(settings, threads=max(1, default_threads() // len(devices)))  # CPU workers share the cores
    spawn = mp.get_context("spawn")  # fork after torch/CUDA init is unsafe
    stop, results_q = spawn.Event(), spawn.Queue()
    procs = [spawn.Process(target=_worker_entry, args=(i, dev, cells, settings, stop, results_q), daemon=False)
             for i, dev in enumerate(devices)]
    from vitbench.runners import checkpoint as ckpt

    for p in procs:
        p.start()
        ckpt.FORWARD_TO.append(p.pid)
    by_key = {c.key: c for c in cells}
    total, errors, got = Outcome(), [], set()
    try:
        while len(got) < len(procs):
            try:
                index, summary, error = results_q.get(timeout=1.0)
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if i not in got and not p.is_alive() and p.exitcode not in (0, None)]
                for i in dead:  # killed (OOM killer, kill -9): its lock goes stale; the others take its cell over
                    got.add(i)
                    errors.append(("WorkerDied", f"worker {i} ({devices[i]}) died (exit code {procs[i].exitcode}); "
                                   "its unfinished cell is taken over by the other workers or the next run", False))
                continue
            got.add(index)
            if summary is not None:
                total.extend(_outcome(summary, by_key))
            if error is not None:
                errors.append(error)
    except BaseException:
        stop.set()
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join(timeout=30)
        ckpt.FORWARD_TO[:] = [pid for pid in ckpt.FORWARD_TO if pid not in {p.pid for p in procs}]
    fatal = [e for e in errors if e[0] != "WorkerDied"]
    if fatal:
        name, line, user = fatal[0]
        raise VitbenchError(line) if user else RuntimeError(f"{name}: {line}")
    if errors:
        from vitbench.commands.console import err

        for _, line, _ in errors:
            err.print(f"[yellow]warning[/]: {line}")
    return total


# ----------------------------------------------------------------------------------------------- SLURM (submitit)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise VitbenchError("--executor slurm needs submitit: pip install 'vitbench[slurm]'") from None
    return submitit


class StudyJob:
    """One array task: the worker loop on its cells. Checkpointable: on preemption or time-out submitit calls
    `checkpoint`, which requeues the same task; it resumes since finished cells have records, and the cell it
    was running resumes from its in-cell checkpoint beside the record (`vitbench/runners/checkpoint.py`)."""

    def __init__(self, cells: list[Cell], settings: Settings) -> None:
        self.cells = cells
        self.settings = settings

    def __call__(self) -> dict[str, Any]:
        os.environ["VITBENCH_IN_JOB"] = "1"  # cells come from the plan, not from the array variables
        device = env_device() or self.settings.device
        if device == "cuda":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        outcome = run_quiet(self.cells, self.settings, device=device, tag="job")
        return _summary(outcome)

    def checkpoint(self, *args: Any, **kwargs: Any):
        return _submitit().helpers.DelayedSubmission(StudyJob(self.cells, self.settings))


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_node: int = 1
    account: str | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    array_parallelism: int = 64
    jobs: int | None = None  # array size; default one task per group of cells


def job_chunks(cells: list[Cell], jobs: int | None) -> list[list[Cell]]:
    """Cells grouped for array tasks: groups (a cell with its dependencies) kept whole, in plan order, packed
    round-robin into `jobs` chunks (default: one chunk per group)."""
    from vitbench.planner import ordered

    cells, group = ordered(cells)
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(group[c.key], []).append(c)
    parts = list(groups.values())
    n = min(jobs or len(parts), len(parts))
    chunks: list[list[Cell]] = [[] for _ in range(n)]
    for i, part in enumerate(parts):
        chunks[i % n].extend(part)
    return chunks


def submit_slurm(cells: list[Cell], settings: Settings, options: SlurmOptions, *, cluster: str | None = None):
    """Submit `cells` as one job array; returns (jobs, log folder). `cluster` 'local'/'debug' runs the same
    submission on this machine (env VITBENCH_SUBMITIT_CLUSTER, used by the tests)."""
    submitit = _submitit()
    cluster = cluster or os.environ.get("VITBENCH_SUBMITIT_CLUSTER") or "slurm"
    if cluster == "slurm" and submitit.AutoExecutor.which() != "slurm":
        raise VitbenchError("--executor slurm: no SLURM here (sbatch not found); run on a SLURM login node, "
                            "or use --executor local")
    folder = Path(settings.out_dir) / "logs" / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": options.time_min, "gpus_per_node": options.gpus_per_node,
                              "tasks_per_node": 1, "nodes": 1, "name": "vitbench"}
    if options.cpus_per_task:
        params["cpus_per_task"] = options.cpus_per_task
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.account:
        params["slurm_account"] = options.account
    params["slurm_array_parallelism"] = options.array_parallelism
    executor.update_parameters(**params)
    chunks = job_chunks(cells, options.jobs)
    jobs = executor.submit_array([StudyJob(chunk, settings) for chunk in chunks]) if hasattr(executor, "submit_array") \
        else [executor.submit(StudyJob(chunk, settings)) for chunk in chunks]
    return jobs, folder.parent


def wait_slurm(jobs, cells: list[Cell]) -> Outcome:
    """Wait for every array task and merge their outcomes (a task that failed as a whole is reported)."""
    by_key = {c.key: c for c in cells}
    total = Outcome()
    for job in jobs:
        try:
            total.extend(_outcome(job.result(), by_key))
        except Exception as exc:  # noqa: BLE001 - a task that crashed outside a cell: its cells rerun on resume
            first = str(exc).strip().splitlines()
            raise VitbenchError(f"SLURM task {job.job_id} failed: {first[-1] if first else type(exc).__name__}; "
                                f"see {job.paths.stderr}") from None
    return total

