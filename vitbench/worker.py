"""The worker loop: run a plan's cells one by one, keep going past failures, share the folder with other workers.

`run_cells(todo, out_dir, ctx)` takes cells in plan order; for each cell whose dependencies have records it
claims the cell's lock (`vitbench/locks.py`), checks again that no other worker finished it meanwhile, runs
it and writes its record. A cell that raises (missing data, a bad checkpoint, out of memory, a NaN loss, any
error) leaves a failure record (`results.make_failure_record`: status "failed", the error line, type, cell,
host, time), which resume reruns; the loop goes on unless `fail_fast` (a full disk stops it anyway). A cell of a task marked
`optional = true` whose data is absent (`DataMissing`) is skipped with a note, without a record. Cells locked
by another worker are come back to until every cell is done, failed or skipped, here or elsewhere.
Exercised by `vitbench run` / `fewshot` / `finetune` (every executor runs this loop).
"""

from __future__ import annotations

import gc
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench import locks, planner, results
from vitbench.cells import Cell, RunContext
from vitbench.errors import DataMissing, VitbenchError

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
    out = Outcome()
    pending = list(todo)
    failed: dict[str, str] = {}  # key -> error line
    skipped: dict[str, str] = {}
    started = 0
    waiting_noted = False
    while pending:
        if stop is not None and stop.is_set():
            out.stopped.extend(pending)
            break
        progressed = False
        for cell in list(pending):
            if stop is not None and stop.is_set():
                break
            path = results.record_path(out_dir, cell)
            rec = _finished(path, cell, run_start)
            if rec is not None:
                pending.remove(cell)
                progressed = True
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
                    _settled_elsewhere(cell, rec, out, failed, log)
                    continue
                if state.startswith("skipped:"):
                    skipped[cell.key] = state[len("skipped:"):]
                    out.skipped.append((cell, skipped[cell.key]))
                    log(f"skipped {cell.label}: {skipped[cell.key]}")
                    if on_end:
                        on_end(cell, "skipped", skipped[cell.key])
                    continue
                if on_start:
                    on_start(cell, started, len(todo))
                started += 1
                _run_one(cell, deps, state, path, out_dir, ctx, out, failed, skipped, log, on_end, fail_fast)
        if pending and not progressed:
            if not waiting_noted:
                held = [(c.label, locks.holder(results.record_path(out_dir, c))) for c in pending]
                busy = [f"{label} ({info.get('host')}:{info.get('pid')})" for label, info in held if info]
                log(f"waiting on {len(pending)} cell(s): {len(busy)} running elsewhere"
                    + (f", e.g. {busy[0]}" if busy else "") + ", the rest after them")
                waiting_noted = True
            time.sleep(POLL_S)
        else:
            waiting_noted = False
    return out


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


def _stops_the_run(exc: Exception) -> bool:
    """Errors no later cell can escape, so the run stops with their line: a full disk (nothing more can be
    written, failure records included) and a record of an unknown schema (never written over)."""
    from vitbench import fsutil

    return isinstance(exc, (fsutil.DiskFull, results.UnknownSchema)) or fsutil.is_disk_full(exc)


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
    log(f"start {cell.label} [{cell.key}]")
    t0 = time.perf_counter()
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
        written = results.write_record(out_dir, cell, record)
    except Exception as exc:  # noqa: BLE001 - any error inside a cell becomes its failure record
        if _stops_the_run(exc):
            raise
        if cell.task.optional and (isinstance(exc, DataMissing) or _data_missing(cell, ctx)):
            skipped[cell.key] = f"optional task {cell.task.name!r}: its data is not present"
            out.skipped.append((cell, skipped[cell.key]))
            log(f"skipped {cell.label}: {skipped[cell.key]} ({exc})")
            if on_end:
                on_end(cell, "skipped", skipped[cell.key])
            return
        text = traceback.format_exc()
        _free_memory()
        rec = results.make_failure_record(cell, exc, ctx.device, wall_time_s=time.perf_counter() - t0, traceback_text=text)
        failed[cell.key] = rec["error"]["message"]
        out.failed.append((cell, rec))
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
            raise
        return
    out.written.append((cell, record, written))
    log(f"done {cell.label} in {record['wall_time_s']:.1f}s -> {written}")
    if on_end:
        on_end(cell, "ok", record)
