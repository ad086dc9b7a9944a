"""vitbench.threads and `--threads`: passive OpenMP waits before torch loads, the count applied and recorded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitbench import threads
from vitbench.errors import VitbenchError

REPO = Path(__file__).resolve().parent.parent


def _env_without_omp():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO)
    return env


def test_cli_sets_a_passive_wait_policy_before_torch_is_imported_unless_the_user_chose():
    code = ("import sys, vitbench.threads as t; assert 'torch' not in sys.modules; import os, vitbench.cli; "
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['KMP_BLOCKTIME'])")
    out = subprocess.run([sys.executable, "-c", code], env=_env_without_omp(), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "0"]
    out = subprocess.run([sys.executable, "-c", code], env={**_env_without_omp(), "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ACTIVE", "0"]


def test_default_is_omp_num_threads_or_the_cores_this_process_may_use(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")
    assert threads.default_threads() == 3
    for unset in ("", "auto"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert threads.default_threads() == threads.available_cores()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= threads.default_threads() == threads.available_cores() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert threads.available_cores() <= len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert threads._cgroup_cpu_limit(quota) == 2
    quota.write_text("max 100000\n")
    assert threads._cgroup_cpu_limit(quota) is None
    assert threads._cgroup_cpu_limit(tmp_path / "absent") is None


def test_configure_applies_the_count_and_validates():
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1 == torch.get_num_threads()
        assert threads.thread_settings()["torch"] == 1
        assert threads.configure_threads(None) == threads.default_threads()
    finally:
        torch.set_num_threads(before)
    for bad in (0, -2):
        with pytest.raises(VitbenchError, match="--threads must be >= 1"):
            threads.check_threads(bad)


def test_run_context_threads_are_applied_and_recorded(tmp_path, monkeypatch):
    from vitbench import planner
    from vitbench.cells import Cell, CellResult, RunContext
    from vitbench.suites import SourceSpec, TaskSpec

    seen = []

    def runner(cell, ctx, deps=()):
        seen.append(torch.get_num_threads())
        return CellResult(metrics={"top1": 0.5}, provenance={"weights": {"weights_id": "none"}})

    monkeypatch.setattr(planner, "runner_for", lambda method: runner)
    task = TaskSpec(name="t", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:10]", "test": "all[10:20]"})
    cell = Cell("s", task, "vit_ti16", "none", "fewshot", {"shots": 1}, 0, 32)
    before = torch.get_num_threads()
    try:
        written = planner.execute([cell], tmp_path, RunContext(num_threads=1))
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    record = json.loads(written[0][2].read_text())
    assert record["hardware"]["threads"]["torch"] == 1
    assert record["hardware"]["threads"]["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY")


def test_threads_option_is_validated_with_one_line(tmp_path, capsys, monkeypatch):
    from vitbench.cli import main

    monkeypatch.chdir(tmp_path)
    for command in ("run", "fewshot", "finetune"):
        assert main([command, "--suite", "smoke", "--threads", "0", "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert "--threads must be >= 1" in err and len(err.strip().splitlines()) == 1
    assert main(["fewshot", "--suite", "smoke", "--threads", "1", "--dry-run"]) == 0
