"""DDP for one cell under torchrun, and the worker's handling of per-cell files: the distributed helpers without a
process group, torchrun shares cells instead of sharding them, the worker loop on 2 gloo processes (same cells, same
order, rank 0 alone writes, a failure on one rank fails the cell on all), records of a 2-process run equal a
1-process run's, checkpoints deleted after the record and kept with --keep-checkpoints or after a failure."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suite_builder import fewshot_digits_suite
from vitbench import distributed, executors, planner, results, worker
from vitbench.cells import CellResult, RunContext
from vitbench.cli import main
from vitbench.runners.checkpoint import CellCheckpoint, CheckpointPolicy
from vitbench.runners.steplog import StepLog
from vitbench.suites import load_suite

REPO = Path(__file__).resolve().parent.parent
SUITE = fewshot_digits_suite("ex", shots=[1, 5])
BAD = """
[[tasks]]
name = "bad"
num_classes = 10
source = { kind = "digits" }
splits = { train = "all[:100]", test = "all[100:200]" }
"""
TORCHRUN = {"TORCHELASTIC_RUN_ID": "none", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2", "RANK": "1",
            "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_helpers_without_a_process_group():
    assert not torch.distributed.is_initialized()
    assert (distributed.rank(), distributed.world(), distributed.is_main(), distributed.active()) == (0, 1, True, False)
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.all_gather_object(3) == [3]
    assert distributed.init("cpu") == (0, 1) and not torch.distributed.is_initialized()  # not under torchrun
    distributed.shutdown()
    assert distributed.local_device("cpu", TORCHRUN) == "cpu" and distributed.local_device("cuda:1", TORCHRUN) == "cuda:1"


@pytest.mark.parametrize("env, expected", [
    (TORCHRUN, True),
    ({**TORCHRUN, "WORLD_SIZE": "1"}, False),  # one process: nothing to share
    ({k: v for k, v in TORCHRUN.items() if k != "TORCHELASTIC_RUN_ID"}, False),  # RANK/WORLD_SIZE alone: MPI-style
    ({"RANK": "0", "WORLD_SIZE": "4"}, False),
    ({}, False),
])
def test_launched_by_torchrun(env, expected):
    assert distributed.launched_by_torchrun(env) is expected


def test_torchrun_processes_share_cells_instead_of_sharding_the_plan():
    assert executors.env_shard(TORCHRUN) is None
    assert executors.env_shard({k: v for k, v in TORCHRUN.items() if k != "TORCHELASTIC_RUN_ID"})[0] == (2, 2)
    # inside a SLURM array the array still shards; torchrun's processes then share that shard's cells
    assert executors.env_shard({**TORCHRUN, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})[0] == (2, 2)


def _cells(tmp_path, text=SUITE):
    (tmp_path / "ex.toml").write_text(text)
    return planner.expand(load_suite(str(tmp_path / "ex.toml")), ["vit_ti16"], ["fewshot"], weights="none")


def _stub_runner(monkeypatch, seen, fail=()):
    """A runner that saves a checkpoint and a step log through ctx.cell_files, then fails for tasks in `fail`."""

    def run(cell, ctx, deps):
        seen.append(ctx.cell_files)
        ckpt = CellCheckpoint(ctx.cell_files, cell.key, ctx.checkpoint)
        with StepLog(ctx.cell_files) as log:
            for step in (1, 2, 3):
                log.write([{"step": step, "loss": 1.0}])
                if ckpt.due(step, 3):
                    ckpt.save({"step": step})
        if cell.task.name in fail:
            raise RuntimeError("diverged")
        return CellResult(metrics={"top1": 0.5})

    monkeypatch.setattr(planner, "runner_for", lambda method: run)


def test_worker_deletes_the_checkpoint_after_the_record_keeps_it_after_a_failure(tmp_path, monkeypatch):
    cells = _cells(tmp_path, SUITE + BAD)
    seen: list = []
    _stub_runner(monkeypatch, seen, fail=("bad",))
    out = tmp_path / "r"
    outcome = worker.run_cells(cells, out, RunContext(checkpoint=CheckpointPolicy(every_steps=1)))
    assert len(outcome.written) == 2 and len(outcome.failed) == 2
    for cell in cells:
        prefix = results.record_path(out, cell).with_suffix("")
        assert prefix in seen  # the runner got the prefix beside the record
        assert Path(f"{prefix}.steps.jsonl").is_file()  # the step log stays beside the record
        assert Path(f"{prefix}.ckpt.pt").exists() == (cell.task.name == "bad")  # a failed cell resumes from it
    # what a run leaves beside the records is never read as a record
    assert sorted(p.name for p in results.iter_record_files(out)) == sorted(f"{c.key}.json" for c in cells)
    assert {r["key"] for r in results.load_records(out)} == {c.key for c in cells}


def test_keep_checkpoints_and_a_rerun_of_a_recorded_cell_starts_afresh(tmp_path, monkeypatch):
    cells = _cells(tmp_path)
    _stub_runner(monkeypatch, [])
    out = tmp_path / "r"
    worker.run_cells(cells, out, RunContext(checkpoint=CheckpointPolicy(every_steps=1, keep=True)))
    ckpts = [Path(f"{results.record_path(out, c).with_suffix('')}.ckpt.pt") for c in cells]
    assert all(p.exists() for p in ckpts)  # --keep-checkpoints
    loaded = []

    def rerun(cell, ctx, deps):  # --force: the kept checkpoint of the finished run must not be resumed from
        loaded.append(CellCheckpoint(ctx.cell_files, cell.key, ctx.checkpoint).load())
        return CellResult(metrics={"top1": 0.5})

    monkeypatch.setattr(planner, "runner_for", lambda method: rerun)
    worker.run_cells(cells, out, RunContext())
    assert loaded == [None, None] and not any(p.exists() for p in ckpts)


def test_the_api_loop_gives_runners_the_same_cell_files(tmp_path, monkeypatch):
    cells = _cells(tmp_path)
    seen: list = []
    _stub_runner(monkeypatch, seen)
    out = tmp_path / "r"
    planner.execute(cells, out, RunContext(checkpoint=CheckpointPolicy(every_steps=1)))  # vitbench.evaluate's loop
    prefixes = [results.record_path(out, c).with_suffix("") for c in cells]
    assert seen == prefixes
    assert all(Path(f"{p}.steps.jsonl").is_file() and not Path(f"{p}.ckpt.pt").exists() for p in prefixes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, cwd, timeout=240):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for attempt in range(2):  # the free port found may be taken again before torchrun binds it: one retry
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *map(str, args)],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or not any(t in proc.stderr for t in ("Address already in use", "DistNetworkError", "EADDRINUSE")):
            return proc
    return proc


def test_worker_loop_on_two_gloo_processes(tmp_path):
    (tmp_path / "ex.toml").write_text(SUITE + BAD)
    out, traces = tmp_path / "r", tmp_path / "traces"
    traces.mkdir()
    proc = _torchrun([REPO / "tests" / "ddp_worker_script.py", tmp_path / "ex.toml", out, traces], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((traces / f"rank{r}.json").read_text()) for r in (0, 1))
    keys = [t["key"] for t in r0["trace"]]
    assert len(keys) == 4 and keys == [t["key"] for t in r1["trace"]]  # the same cells, in the same order
    assert all(t["together"] == [t["key"], t["key"]] for t in r0["trace"])  # at the same time
    for trace in (r0["trace"], r1["trace"]):  # the time rule: rank 0's clock, looked at every sync_every steps
        assert all(t["due"] == [[False] * 4, [False, True, False, True]] for t in trace)
    assert r0["written"] == r1["written"] and len(r0["written"]) == 2
    assert [k for k, _ in r0["failed"]] == [k for k, _ in r1["failed"]] and len(r0["failed"]) == 2  # failed on both
    assert all(msg == "rank 1: RuntimeError: only on rank 1" for _, msg in r0["failed"])  # raised on rank 1 only
    records = {r["key"]: r for r in results.load_records(out)}
    assert set(records) == set(keys)
    assert all(records[k]["details"] == {"rank": 0} for k in r0["written"])  # written by rank 0
    assert all(results.is_failed(records[k]) for k, _ in r0["failed"])
    assert all("only on rank 1" in records[k]["error"]["traceback"] and records[k]["error"]["type"] == "OtherRankFailed"
               for k, _ in r0["failed"])  # the failing rank's traceback is recorded
    for t in r0["trace"]:
        prefix = t["cell_files"]
        assert Path(f"{prefix}.ckpt.pt").exists() == (t["key"] in dict(r0["failed"]))
        steps = [json.loads(line) for line in Path(f"{prefix}.steps.jsonl").read_text().splitlines()]
        assert [s["rank"] for s in steps] == [0, 0, 0]  # only rank 0 logs


def test_an_error_of_rank_0_between_cells_stops_the_other_ranks(tmp_path):
    (tmp_path / "ex.toml").write_text(SUITE)
    traces = tmp_path / "traces"
    traces.mkdir()
    proc = _torchrun([REPO / "tests" / "ddp_worker_script.py", tmp_path / "ex.toml", tmp_path / "r", traces, "abort"],
                     tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((traces / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["error"] == "RuntimeError: rank 0 broke down" and len(r0["trace"]) == len(r1["trace"]) == 1
    assert r1["error"] == "VitbenchError: stopped on rank 0: RuntimeError: rank 0 broke down"


def _comparable(rec):
    keep = ("key", "metrics", "cell", "params", "data_fingerprint", "status")
    details = {k: v for k, v in rec["details"].items() if k != "timings"}
    return {"details": details, **{k: rec.get(k) for k in keep}}


@pytest.mark.slow
def test_fewshot_under_torchrun_writes_the_records_of_one_process(tmp_path, monkeypatch, capsys):
    (tmp_path / "ex.toml").write_text(SUITE)
    proc = _torchrun(["-m", "vitbench.cli", "fewshot", "--suite", "ex.toml", "--device", "cpu", "--out", "r2",
                      "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("2 cells (2 to run") == 1  # rank 0 alone prints
    assert len(list((tmp_path / "r2" / "logs").glob("run-*.log"))) == 1  # and writes the run log
    monkeypatch.chdir(tmp_path)
    assert main(["fewshot", "--suite", "ex.toml", "--device", "cpu", "--out", "r1", "--no-report"]) == 0
    capsys.readouterr()
    two = {r["key"]: _comparable(r) for r in results.load_records(tmp_path / "r2")}
    one = {r["key"]: _comparable(r) for r in results.load_records(tmp_path / "r1")}
    assert len(two) == 2 and two == one
