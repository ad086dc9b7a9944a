"""In-cell checkpoints and the per-step log: policy parsing, atomic saves that survive a crash or a full disk,
files of another cell or torn files ignored with a warning, step-log truncation on resume and torn lines."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vitbench import fsutil
from vitbench.errors import VitbenchError
from vitbench.runners import checkpoint as ck
from vitbench.runners.checkpoint import CellCheckpoint, CheckpointPolicy
from vitbench.runners.steplog import StepLog, read_steps


@pytest.mark.parametrize("text, steps, minutes", [
    ("500", 500, None), ("10m", None, 10.0), ("10min", None, 10.0), ("1.5h", None, 90.0), ("90s", None, 1.5),
    ("500,10m", 500, 10.0), (" 10m , 500 ", 500, 10.0), ("off", None, None), ("none", None, None), ("OFF", None, None),
    (None, None, 30.0),
])
def test_policy_parsing(text, steps, minutes):
    policy = CheckpointPolicy.parse(text, keep=True)
    assert (policy.every_steps, policy.every_minutes, policy.keep) == (steps, minutes, True)
    assert policy.enabled == (steps is not None or minutes is not None)


@pytest.mark.parametrize("text", ["", "0", "0m", "1.5", "-5", "10x", "m", "500,600", "10m,1h", "5,,"])
def test_policy_parsing_refuses_bad_text_in_one_line(text):
    with pytest.raises(VitbenchError) as info:
        CheckpointPolicy.parse(text)
    assert "--checkpoint-every" in str(info.value) and "\n" not in str(info.value)


def test_due_by_steps_and_minutes_never_at_the_last_step(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(ck.time, "monotonic", lambda: clock[0])
    by_steps = CellCheckpoint(tmp_path / "k", "k", CheckpointPolicy(every_steps=5))
    assert [s for s in range(1, 21) if by_steps.due(s, 20)] == [5, 10, 15]  # 20 is the last: the record follows
    by_time = CellCheckpoint(tmp_path / "k", "k", CheckpointPolicy(every_minutes=2.0))
    assert not by_time.due(1, 100)
    clock[0] += 119.0
    assert not by_time.due(2, 100)
    clock[0] += 1.0
    assert by_time.due(3, 100) and not by_time.due(100, 100)
    by_time.save({"step": 3})  # the timer restarts at a save
    assert not by_time.due(4, 100)
    clock[0] += 120.0
    assert by_time.due(5, 100)
    assert not CellCheckpoint(None, "k", CheckpointPolicy(every_steps=1)).due(1, 10)  # no prefix: no checkpoints
    assert not CellCheckpoint(tmp_path / "k", "k", CheckpointPolicy.parse("off")).due(1, 10)


def test_save_load_round_trip_with_rng_state(tmp_path):
    ckpt = CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy(every_steps=1))
    assert ckpt.path == tmp_path / "cell.ckpt.pt" and ckpt.load() is None
    state = {"step": 7, "model": {"w": torch.arange(4.0)}, "torch_rng": torch.get_rng_state(),
             "numpy_rng": np.random.default_rng(0).bit_generator.state, "losses": [1.0, 0.5]}
    ckpt.save(state)
    got = CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy()).load()
    assert got["step"] == 7 and torch.equal(got["model"]["w"], torch.arange(4.0)) and got["losses"] == [1.0, 0.5]
    assert torch.equal(got["torch_rng"], state["torch_rng"]) and got["numpy_rng"] == state["numpy_rng"]
    payload = torch.load(ckpt.path, weights_only=False)
    assert payload["cell_key"] == "abc" and payload["format"] == 1 and payload["saved_at"]
    assert ckpt.saves == 1
    ckpt.remove()
    assert not ckpt.path.exists()
    ckpt.remove()  # nothing there: nothing to do


def test_a_reader_rank_writes_nothing(tmp_path):
    ckpt = CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy(every_steps=1), writer=False)
    ckpt.save({"step": 1})
    assert not ckpt.path.exists() and os.listdir(tmp_path) == []
    CellCheckpoint(None, "abc", CheckpointPolicy(every_steps=1)).save({"step": 1})  # no prefix: nothing


def _no_temps(folder):
    return [p for p in folder.iterdir() if ".tmp-" in p.name] == []


def test_a_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy(every_steps=1))
    ckpt.save({"step": 1, "w": torch.ones(1000)})
    before = ckpt.path.read_bytes()
    real_save = torch.save

    def half_then_crash(obj, f, *a, **k):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        ckpt.save({"step": 2, "w": torch.zeros(1000)})
    assert ckpt.path.read_bytes() == before and _no_temps(tmp_path)
    assert CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy()).load()["step"] == 1


def test_a_full_disk_keeps_the_previous_checkpoint_and_training_goes_on(tmp_path, monkeypatch):
    ckpt = CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy(every_steps=1))
    ckpt.save({"step": 1})

    def full(obj, f, *a, **k):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(UserWarning, match="previous one is kept"):
        ckpt.save({"step": 2})
    assert _no_temps(tmp_path) and ckpt.saves == 1
    assert CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy()).load()["step"] == 1


def test_another_cells_or_a_broken_checkpoint_is_ignored_with_a_warning(tmp_path):
    CellCheckpoint(tmp_path / "cell", "other-key", CheckpointPolicy()).save({"step": 5})
    with pytest.warns(UserWarning, match="belongs to cell 'other-key'"):
        assert CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy()).load() is None
    path = tmp_path / "cell.ckpt.pt"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # truncated (a copy cut short, a damaged disk)
    with pytest.warns(UserWarning, match="cannot be read"):
        assert CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy()).load() is None
    torch.save({"step": 5}, path)  # a torch file that is not a vitbench checkpoint
    with pytest.warns(UserWarning, match="not a vitbench checkpoint"):
        assert CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy()).load() is None


def test_stale_checkpoint_temps_are_swept(tmp_path):
    ckpt = CellCheckpoint(tmp_path / "s" / "key", "key", CheckpointPolicy(every_steps=1))
    ckpt.save({"step": 1})
    dead = f"{ckpt.path.name}.tmp-{fsutil.HOST}-999999999-0123abcd"  # a killed writer's temp (no such pid)
    (ckpt.path.parent / dead).write_bytes(b"half")
    assert [p.name for p in fsutil.sweep_stale_temps(tmp_path)] == [dead]
    assert ckpt.path.exists()


def test_step_log_appends_truncates_and_resumes(tmp_path):
    prefix = tmp_path / "cell"
    with StepLog(prefix) as log:
        log.write([{"step": s, "loss": np.float32(1.0 / s), "lr": torch.tensor(0.1)} for s in range(1, 6)])
    rows = read_steps(tmp_path / "cell.steps.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[1]["loss"] == pytest.approx(0.5)
    assert rows[0]["lr"] == pytest.approx(0.1)
    with open(tmp_path / "cell.steps.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn by a kill
    assert [r["step"] for r in read_steps(tmp_path / "cell.steps.jsonl")] == [1, 2, 3, 4, 5]
    with StepLog(prefix, resume_step=3) as log:  # resumed from the checkpoint at step 3: 4, 5 are trained again
        log.write([{"step": 4, "loss": 0.2}])
    assert [r["step"] for r in read_steps(tmp_path / "cell.steps.jsonl")] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "cell.steps.jsonl").read_text().splitlines()[-1])["loss"] == 0.2
    with StepLog(prefix) as log:  # a fresh start empties the log
        log.write([{"step": 1}])
    assert read_steps(tmp_path / "cell.steps.jsonl") == [{"step": 1}]


def test_step_log_does_nothing_without_a_prefix_or_as_a_reader(tmp_path):
    for log in (StepLog(None), StepLog(tmp_path / "cell", writer=False)):
        log.write([{"step": 1}])
        log.close()
    assert os.listdir(tmp_path) == [] and read_steps(tmp_path / "missing.steps.jsonl") == []


@pytest.mark.parametrize("args, message", [
    (["--checkpoint-every", "10x"], "--checkpoint-every '10x'"),
    (["--precision", "fp16"], "--precision must be one of auto, fp32, bf16"),
    (["--loader-workers", "-1"], "--loader-workers must be >= 0"),
    (["--log-every", "0"], "--log-every must be >= 1"),
])
@pytest.mark.parametrize("command", ["finetune", "run"])
def test_bad_execution_options_are_one_line_and_exit_2(command, args, message, tmp_path, capsys):
    from vitbench.cli import main

    code = main([command, "--suite", "smoke", "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_execution_options_reach_the_run_context(tmp_path):
    from vitbench.cli import execution_options
    from vitbench.commands.study import StudyOptions, settings_for

    execution = execution_options("500,10m", True, True, True, "bf16", 3, 25)
    ctx = settings_for(tmp_path, None, None, "cpu", False, 0.0, StudyOptions(), execution=execution).context()
    assert ctx.checkpoint == CheckpointPolicy(every_steps=500, every_minutes=10.0, keep=True)
    assert (ctx.compile, ctx.grad_checkpointing, ctx.precision, ctx.loader_workers, ctx.log_every) == (True, True, "bf16", 3, 25)
    default = settings_for(tmp_path, None, None, "cpu", False, 0.0, StudyOptions()).context()
    assert default.checkpoint == CheckpointPolicy(every_minutes=30.0) and default.precision == "auto"
    assert default.cell_files is None  # the worker sets it per cell


SAVER = """
import sys, torch
from vitbench.runners.checkpoint import CellCheckpoint, CheckpointPolicy
ckpt = CellCheckpoint(sys.argv[1], "abc", CheckpointPolicy(every_steps=1))
step = 0
while True:
    step += 1
    ckpt.save({"step": step, "w": torch.full((2_000_000,), float(step))})
    print(step, flush=True)
"""


def test_kill_9_while_saving_leaves_a_whole_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path / "cell")], stdout=subprocess.PIPE, env=env, text=True)
    try:
        for _ in range(3):  # a few saves done, the next one under way
            assert proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = CellCheckpoint(tmp_path / "cell", "abc", CheckpointPolicy()).load()
    assert state is not None and state["step"] >= 3 and bool((state["w"] == float(state["step"])).all())
    fsutil.sweep_stale_temps(tmp_path)  # the killed writer's temp file (if it died mid-write) goes at the next run
    assert _no_temps(tmp_path)
