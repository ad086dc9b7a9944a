"""The worker loop: run a plan's cells one by one, keep going past failures, share the folder with other workers.

`run_cells(todo, out_dir, ctx)` takes cells in plan order; for each cell whose dependencies have records it
claims the cell's lock (`vitbench/locks.py`), checks again that no other worker finished it meanwhile, runs
it and writes its record. A cell that raises (missing data, a bad checkpoint, out of memory, a NaN loss, any
error) leaves a failure record (`results.make_failure_record`: status "failed", the error line, type, cell,
host, time), which resume reruns; the loop goes on unless `fail_fast` (a full disk stops it anyway). A cell of a task marked
`optional = true` whose data is absent (`DataMissing`) is skipped with a note, without a record. Cells locked
by another worker are come back to until every cell is done, failed or skipped, here or elsewhere.

Each cell's runner gets `ctx.cell_files` (its record path without `.json`): a training cell keeps its
checkpoint (`.ckpt.pt`, `vitbench/runners/checkpoint.py`) and step log (`.steps.jsonl`) there. The checkpoint
is deleted once the record is written (`--keep-checkpoints` keeps it), never after a failure (the next run
resumes from it); one found beside a result of the same key (a --force or new-data rerun) is deleted first.

Under torchrun (DDP, `vitbench/distributed.py`) every rank calls `run_cells` with the same plan: rank 0 runs
the loop (locks, records, failure records, logs) and broadcasts each decision (run / skip / settled elsewhere
/ wait / stop / end); the other ranks follow (`_follow`), so all run the same cell at the same time. After a
cell the ranks agree on its outcome (`_agree`): when it raised on any rank it failed on all.
Exercised by `vitbench run` / `fewshot` / `finetune` (every executor runs this loop).
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench import distributed, locks, planner, results
from vitbench.cells import Cell, RunContext
from vitbench.errors import DataMissing, VitbenchError
from vitbench.runners.checkpoint import discard_if_recorded, remove_checkpoint

POLL_S = 0.5  # how often a worker waiting on cells running elsewhere looks again


@dataclass
class Outcome:
    """What one run of the loop did: records written, failures (here or seen from other workers), skips."""

    written: list[tuple[Cell, dict[str, Any], Path]] = field(default_factory=list)
    failed: list[tuple[Cell, dict[str, Any]]] = field(default_factory=list)
    skipped: list[tuple[Cell, str]] = field(default_factory=list)
    elsewhere: list[Cell] = field(default_factory=list)  # finished by another worker during this run
    stopped: list[Cell] = field(default_factory=list)  # not run: the run was stopped (fail-fast elsewhere)

    def extend(self, other: Outcome) -> None:
        for name in ("written", "failed", "skipped", "elsewhere", "stopped"):
            getattr(self, name).extend(getattr(other, name))


def _finished(path: Path, cell: Cell, run_start: float) -> dict[str, Any] | None:
    """The cell's record when another worker settled the cell during this run: a result or a failure record
    written since the run was planned (an older record is why the cell is in the plan: stale data, --force, a
    failure of an earlier run)."""
    try:
        if path.stat().st_mtime < run_start:
            return None
    except OSError:
        return None
    rec = results.read_record(path)
    return rec if rec is not None and rec.get("key") == cell.key else None


def _free_memory() -> None:
    """After a failed cell (e.g. CUDA out of memory) return cached blocks, so the next cell starts clean."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_cells(
    todo: list[Cell],
    out_dir: Path,
    ctx: RunContext,
    *,
    fail_fast: bool = False,
    run_start: float | None = None,
    log: Callable[[str], None] | None = None,
    on_start: Callable[[Cell, int, int], None] | None = None,
    on_end: Callable[[Cell, str, Any], None] | None = None,
    stop: Any = None,
) -> Outcome:
    """Run `todo` (plan order) and return the outcome; `on_end(cell, status, record-or-reason)` after each
    cell with status "ok", "failed" or "skipped". `stop` (an Event) ends the loop between cells."""
    from vitbench.threads import configure_threads

    configure_threads(ctx.num_threads)  # None: threads.default_threads() (recorded in each record's hardware.threads)
    run_start = time.time() if run_start is None else run_start
    log = log or (lambda line: None)
    team = distributed.active()  # DDP under torchrun: rank 0 decides, every rank runs the same cell
    if team and not distributed.is_main():
        return _follow(todo, out_dir, ctx, fail_fast=fail_fast, log=log, on_start=on_start, on_end=on_end)
    tell = distributed.broadcast_object if team else (lambda decision: decision)
    try:
        return _lead(todo, out_dir, ctx, fail_fast, run_start, log, on_start, on_end, stop, tell)
    except Exception as exc:
        if team and not getattr(exc, "raised_on_every_rank", False):  # the other ranks wait for a decision
            tell(("abort", results.error_line(exc)))
        raise


def _lead(todo, out_dir, ctx, fail_fast, run_start, log, on_start, on_end, stop, tell) -> Outcome:
    """The loop proper (alone, or as rank 0 telling the other ranks each decision)."""
    out = Outcome()
    pending = list(todo)
    failed: dict[str, str] = {}  # key -> error line
    skipped: dict[str, str] = {}
    started = 0
    waiting_noted = False
    while pending:
        if stop is not None and stop.is_set():
            tell(("stop",))  # the last decision the other ranks get
            out.stopped.extend(pending)
            return out
        progressed = False
        for cell in list(pending):
            if stop is not None and stop.is_set():
                break
            path = results.record_path(out_dir, cell)
            rec = _finished(path, cell, run_start)
            if rec is not None:
                pending.remove(cell)
                progressed = True
                tell(("elsewhere", cell.key, rec))
                _settled_elsewhere(cell, rec, out, failed, log)
                continue
            state, deps = _dependencies(cell, out_dir, failed, skipped, {c.key for c in pending})
            if state == "wait":
                continue
            claim = locks.try_claim(path)
            if claim is None:
                continue
            with claim:
                if claim.took_over:
                    log(f"took over the lock of {cell.label}: {claim.took_over}")
                rec = _finished(path, cell, run_start)  # another worker may have finished it meanwhile
                pending.remove(cell)
                progressed = True
                if rec is not None:
                    tell(("elsewhere", cell.key, rec))
                    _settled_elsewhere(cell, rec, out, failed, log)
                    continue
                if state.startswith("skipped:"):
                    tell(("skipped", cell.key, state[len("skipped:"):]))
                    _skipped(cell, state[len("skipped:"):], out, skipped, log, on_end)
                    continue
                tell(("run", cell.key, state, deps, started))
                if on_start:
                    on_start(cell, started, len(todo))
                started += 1
                _run_one(cell, deps, state, path, out_dir, ctx, out, failed, skipped, log, on_end, fail_fast)
        if pending and not progressed:
            tell(("wait",))
            if not waiting_noted:
                held = [(c.label, locks.holder(results.record_path(out_dir, c))) for c in pending]
                busy = [f"{label} ({info.get('host')}:{info.get('pid')})" for label, info in held if info]
                log(f"waiting on {len(pending)} cell(s): {len(busy)} running elsewhere"
                    + (f", e.g. {busy[0]}" if busy else "") + ", the rest after them")
                waiting_noted = True
            time.sleep(POLL_S)
        else:
            waiting_noted = False
    tell(("end",))
    return out


def _follow(todo: list[Cell], out_dir: Path, ctx: RunContext, *, fail_fast: bool, log, on_start, on_end) -> Outcome:
    """The loop of a rank other than 0 under DDP: do what rank 0 decided, step by step (run the same cell, at
    the same time, writing nothing); rank 0 holds the locks and writes records, logs and reports."""
    by_key = {c.key: c for c in todo}
    out = Outcome()
    decided: set[str] = set()
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    while True:
        decision = distributed.broadcast_object(None)
        kind = decision[0]
        if kind == "end":
            break
        if kind == "stop":
            out.stopped.extend(c for c in todo if c.key not in decided)
            break
        if kind == "wait":  # rank 0 waits on cells running elsewhere
            continue
        if kind == "abort":
            raise VitbenchError(f"stopped on rank 0: {decision[1]}")
        cell = by_key[decision[1]]
        decided.add(cell.key)
        if kind == "elsewhere":
            _settled_elsewhere(cell, decision[2], out, failed, log)
        elif kind == "skipped":
            _skipped(cell, decision[2], out, skipped, log, on_end)
        elif kind == "run":
            state, deps, started = decision[2:]
            if on_start:
                on_start(cell, started, len(todo))
            _run_one(cell, deps, state, results.record_path(out_dir, cell), out_dir, ctx, out, failed, skipped, log,
                     on_end, fail_fast)
    return out


def _skipped(cell: Cell, why: str, out: Outcome, skipped: dict[str, str], log, on_end) -> None:
    skipped[cell.key] = why
    out.skipped.append((cell, why))
    log(f"skipped {cell.label}: {why}")
    if on_end:
        on_end(cell, "skipped", why)


def _settled_elsewhere(cell: Cell, rec: dict[str, Any], out: Outcome, failed: dict[str, str], log) -> None:
    if results.is_failed(rec):
        failed[cell.key] = (rec.get("error") or {}).get("message", "failed")
        out.failed.append((cell, rec))
        log(f"failed elsewhere {cell.label}: {failed[cell.key]}")
    else:
        out.elsewhere.append(cell)
        log(f"done elsewhere {cell.label} ({rec.get('host', '?')})")


def _dependencies(cell: Cell, out_dir: Path, failed: dict[str, str], skipped: dict[str, str],
                  pending: set[str]) -> tuple[str, list[dict[str, Any]]]:
    """("ready", records) | ("wait", []) | ("failed:<dep>", []) | ("skipped:<why>", []) | ("missing:<dep>", [])."""
    recs = []
    for dep in planner.dependencies(cell):
        if dep.key in failed:
            return f"failed:{dep.label}: {failed[dep.key]}", []
        if dep.key in skipped:
            return f"skipped:{skipped[dep.key]}", []
        rec = results.read_record(results.record_path(out_dir, dep))
        if rec is not None and rec.get("key") == dep.key and not results.is_failed(rec):
            recs.append(rec)
            continue
        if dep.key in pending or locks.holder(results.record_path(out_dir, dep)):
            return "wait", []
        return f"missing:{dep.label}", []
    return "ready", recs


class OtherRankFailed(VitbenchError):
    """Under DDP: the cell raised on another rank (this rank's own run of it went through); `stops` when that
    error stops the whole run (a full disk)."""

    def __init__(self, message: str, stops: bool = False) -> None:
        super().__init__(message)
        self.stops = stops


def _stops_the_run(exc: Exception) -> bool:
    """Errors no later cell can escape, so the run stops with their line: a full disk (nothing more can be
    written, failure records included) and a record of an unknown schema (never written over)."""
    from vitbench import fsutil

    if isinstance(exc, OtherRankFailed):
        return exc.stops
    return isinstance(exc, (fsutil.DiskFull, results.UnknownSchema)) or fsutil.is_disk_full(exc)


def _agree(error: Exception | None, text: str) -> tuple[Exception | None, str]:
    """Under DDP, every rank's outcome of the cell: when the cell raised on any rank, it failed on all of them
    (this rank's own error, else the first failing rank's line), so every rank takes the same path next."""
    mine = None if error is None else {"rank": distributed.rank(), "line": results.error_line(error),
                                       "stops": _stops_the_run(error), "traceback": text[-4000:]}
    first = next((e for e in distributed.all_gather_object(mine) if e is not None), None)
    if first is None or error is not None:
        return error, text
    return (OtherRankFailed(f"rank {first['rank']}: {first['line']}", stops=first["stops"]),
            f"raised on rank {first['rank']}:\n{first['traceback']}")  # rank 0 records the failing rank's traceback


def _data_missing(cell, ctx) -> bool:
    """Whether an optional task's data is absent, when its cell failed on something else first (e.g. weights that
    cannot be loaded offline): such a task is skipped, as when the data check comes first."""
    from vitbench.data.loader import load_split

    try:
        load_split(cell.task, cell.task.test_split, data_root=ctx.data_root)
    except DataMissing:
        return True
    except Exception:  # noqa: BLE001 - the data is there but something else is wrong: the cell's own error stands
        return False
    return False


def _run_one(cell, deps, state, path, out_dir, ctx, out, failed, skipped, log, on_end, fail_fast) -> None:
    team, writer = distributed.active(), distributed.is_main()  # under DDP only rank 0 writes
    log(f"start {cell.label} [{cell.key}]")
    t0 = time.perf_counter()
    prefix = path.with_suffix("")  # the cell's checkpoint and step log sit beside its record
    ctx = dataclasses.replace(ctx, cell_files=prefix)
    if writer and discard_if_recorded(prefix, path, cell.key):
        log(f"removed the checkpoint of {cell.label}: its run is recorded, this one starts from step 0")
    if team:
        distributed.barrier()  # no rank looks for the checkpoint before rank 0 judged it
    error, text = None, ""
    try:
        if state.startswith("failed:"):
            raise VitbenchError(f"not run: the cell it depends on, {state[len('failed:'):]}")
        if state.startswith("missing:"):
            raise VitbenchError(f"the record of {state[len('missing:'):]} it depends on is missing in {out_dir}; "
                                "it belongs to the same plan and shard, so rerun the same command")
        result = planner.runner_for(cell.method)(cell, ctx, deps)
        from vitbench.data.fingerprint import cell_data_fingerprint

        record = results.make_record(cell, result, time.perf_counter() - t0, ctx.device,
                                     data_fingerprint=cell_data_fingerprint(cell, ctx.data_root))
        written = path if team else results.write_record(out_dir, cell, record)
    except Exception as exc:  # noqa: BLE001 - any error inside a cell becomes its failure record
        error, text = exc, traceback.format_exc()
    if team:  # the record is written once every rank got through the cell, and the ranks learn how that went
        error, text = _agree(error, text)
        if error is None:
            if writer:
                try:
                    written = results.write_record(out_dir, cell, record)
                except Exception as exc:  # noqa: BLE001 - e.g. a full disk: every rank stops
                    error, text = exc, traceback.format_exc()
            error, text = _agree(error, text)
    if error is not None:
        _failed(error, text, cell, path, out_dir, ctx, out, failed, skipped, log, on_end, fail_fast, t0, writer, team)
        return
    if writer and not ctx.checkpoint.keep:
        remove_checkpoint(prefix)  # the record is written; a failed or killed cell keeps it to resume from
    out.written.append((cell, record, written))
    log(f"done {cell.label} in {record['wall_time_s']:.1f}s -> {written}")
    if on_end:
        on_end(cell, "ok", record)


def _failed(exc, text, cell, path, out_dir, ctx, out, failed, skipped, log, on_end, fail_fast, t0, writer, team) -> None:
    if team and (fail_fast or _stops_the_run(exc)):
        try:
            exc.raised_on_every_rank = True  # every rank raises it here: rank 0 tells them nothing more
        except AttributeError:
            pass
    if _stops_the_run(exc):
        raise exc
    optional = cell.task.optional and writer and (isinstance(exc, DataMissing) or _data_missing(cell, ctx))
    if team:
        optional = distributed.broadcast_object(optional)  # rank 0 looked at the data
    if optional:
        skipped[cell.key] = f"optional task {cell.task.name!r}: its data is not present"
        out.skipped.append((cell, skipped[cell.key]))
        log(f"skipped {cell.label}: {skipped[cell.key]} ({exc})")
        if on_end:
            on_end(cell, "skipped", skipped[cell.key])
        return
    _free_memory()
    rec = results.make_failure_record(cell, exc, ctx.device, wall_time_s=time.perf_counter() - t0, traceback_text=text)
    failed[cell.key] = rec["error"]["message"]
    out.failed.append((cell, rec))
    if writer:
        try:
            old = results.read_record(path)
        except VitbenchError:  # a record of an unknown schema: never overwritten
            old = {}
        if old is not None and not results.is_failed(old):  # --force over a result: keep the earlier result
            log(f"failed {cell.label} (its earlier result is kept): {failed[cell.key]}\n{text}")
        else:
            try:
                results.write_record(out_dir, cell, rec)
            except OSError as werr:
                log(f"could not write the failure record of {cell.label}: {werr}")
            log(f"failed {cell.label}: {failed[cell.key]}\n{text}")
    if on_end:
        on_end(cell, "failed", rec)
    if fail_fast:
        raise exc
