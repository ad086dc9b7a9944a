"""The worker loop under DDP, run by tests/test_distributed.py as `python -m torch.distributed.run --nproc_per_node 2
tests/ddp_worker_script.py SUITE OUT TRACE_DIR`: a traced stand-in runner (no model) records, on every rank, which
cells it ran and in what order, meets the other ranks inside each cell, saves a checkpoint and a step log, and
raises on rank 1 only for the task named `bad`."""

import json
import sys
from pathlib import Path

from vitbench import distributed, planner, worker
from vitbench.cells import CellResult, RunContext
from vitbench.runners.checkpoint import CellCheckpoint, CheckpointPolicy
from vitbench.runners.steplog import StepLog
from vitbench.suites import load_suite


def main(suite_path: str, out_dir: str, trace_dir: str) -> int:
    rank, world = distributed.init("cpu")
    assert world == 2 and distributed.active()
    suite = load_suite(suite_path)
    cells = planner.expand(suite, ["vit_ti16"], ["fewshot"], weights="none")
    the_plan = planner.plan(cells, Path(out_dir))
    trace = []

    def runner(cell, ctx, deps):
        together = distributed.all_gather_object(cell.key)  # every rank is inside the same cell at the same time
        trace.append({"key": cell.key, "together": together, "cell_files": str(ctx.cell_files)})
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
    ctx = RunContext(device="cpu", checkpoint=CheckpointPolicy(every_steps=1))
    outcome = worker.run_cells(the_plan.todo, Path(out_dir), ctx)
    Path(trace_dir, f"rank{rank}.json").write_text(json.dumps({
        "trace": trace,
        "written": [c.key for c, _, _ in outcome.written],
        "failed": [[c.key, rec["error"]["message"]] for c, rec in outcome.failed],
    }))
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
