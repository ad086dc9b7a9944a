"""The worker loop under DDP, run by tests/test_distributed.py as `python -m torch.distributed.run --nproc_per_node 2
tests/ddp_worker_script.py SUITE OUT TRACE_DIR [MODE]`: a traced stand-in runner (no model) records, on every rank, which
cells it ran and in what order, meets the other ranks inside each cell, asks whether a timed checkpoint is due (rank 0's clock decides), saves a checkpoint and a step log, and
raises on rank 1 only for the task named `bad`. Mode `abort`: rank 0 raises between cells."""

import json
import sys
from pathlib import Path

from vitbench import distributed, planner, worker
from vitbench.cells import CellResult, RunContext
from vitbench.runners.checkpoint import CellCheckpoint, CheckpointPolicy
from vitbench.runners.steplog import StepLog
from vitbench.suites import load_suite


def main(suite_path: str, out_dir: str, trace_dir: str, mode: str = "cells") -> int:
    rank, world = distributed.init("cpu")
    assert world == 2 and distributed.active()
    suite = load_suite(suite_path)
    cells = planner.expand(suite, ["vit_ti16"], ["fewshot"], weights="none")
    the_plan = planner.plan(cells, Path(out_dir))
    trace = []

    def runner(cell, ctx, deps):
        together = distributed.all_gather_object(cell.key)  # every rank is inside the same cell at the same time
        clock = CellCheckpoint(ctx.cell_files, cell.key, CheckpointPolicy(every_minutes=60.0), sync_every=2)
        clock._last -= 7200.0 if rank == 1 else 0.0  # rank 1's own clock says "due": rank 0's clock decides
        not_yet = [clock.due(s, 10) for s in range(1, 5)]
        clock._last -= 7200.0 if rank == 0 else 0.0
        due_now = [clock.due(s, 10) for s in range(1, 5)]
        trace.append({"key": cell.key, "together": together, "cell_files": str(ctx.cell_files),
                      "due": [not_yet, due_now]})
        ckpt = CellCheckpoint(ctx.cell_files, cell.key, ctx.checkpoint, writer=distributed.is_main())
        with StepLog(ctx.cell_files, writer=distributed.is_main()) as steps:
            for step in (1, 2, 3):
                steps.write([{"step": step, "loss": 1.0 / step, "rank": rank}])
                if ckpt.due(step, 3):
                    ckpt.save({"step": step, "rank": rank})
        if cell.task.name == "bad" and rank == 1:
            raise RuntimeError("only on rank 1")
        return CellResult(metrics={"top1": 0.25}, details={"rank": rank})

    planner.runner_for = lambda method: runner
    if mode == "abort" and rank == 0:  # rank 0 breaks down between cells: the others must not wait forever
        looked = []
        real = worker._dependencies

        def broken(*args):
            looked.append(1)
            if len(looked) == 2:
                raise RuntimeError("rank 0 broke down")
            return real(*args)

        worker._dependencies = broken
    ctx = RunContext(device="cpu", checkpoint=CheckpointPolicy(every_steps=1))
    try:
        outcome = worker.run_cells(the_plan.todo, Path(out_dir), ctx)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        Path(trace_dir, f"rank{rank}.json").write_text(json.dumps({"trace": trace, "error": f"{type(exc).__name__}: {exc}"}))
        distributed.shutdown()
        return 0
    Path(trace_dir, f"rank{rank}.json").write_text(json.dumps({
        "trace": trace,
        "written": [c.key for c, _, _ in outcome.written],
        "failed": [[c.key, rec["error"]["message"]] for c, rec in outcome.failed],
    }))
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
