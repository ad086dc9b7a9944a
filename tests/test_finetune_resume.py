"""Fine-tuning at research scale, end to end through the CLI in real processes: a run killed with SIGKILL resumes
from its in-cell checkpoint and ends with the same weights as an uninterrupted run; two DDP processes under
torchrun (gloo) give the one-process loss curve; the per-step JSONL log lies beside the record."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite_builder import smoke_doc, write_suite
from vitbench.runners.steplog import read_steps

REPO = Path(__file__).resolve().parent.parent


def _suite(tmp: Path, **finetune) -> Path:
    doc = smoke_doc("resume", task={"splits": {"train": "all[:96]", "test": "all[1200:1264]"}},
                    finetune={"steps": 40, "batch_size": 16, "warmup_steps": 4, "lr": 0.03, "train_crop": "inception",
                              "hflip": True, **finetune},
                    defaults={"methods": ["finetune"]})
    return write_suite(tmp / "resume.toml", doc)


def _env(**extra) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _cmd(suite: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vitbench.cli", "finetune", "--suite", str(suite), "--out", str(out), "--no-report",
            "--threads", "1", *extra]


def _record(out: Path) -> dict:
    (path,) = [p for p in out.rglob("*.json") if ".tmp-" not in p.name and "logs" not in p.parts]
    return json.loads(path.read_text())


def _steps(out: Path) -> list[dict]:
    (path,) = list(out.rglob("*.steps.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_same_weights(tmp_path):
    suite = _suite(tmp_path, dropout=0.1)  # dropout draws from torch's RNG: its state must be checkpointed too
    done = subprocess.run(_cmd(suite, tmp_path / "whole"), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    whole = _record(tmp_path / "whole")

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(suite, out, "--checkpoint-every", "5"), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.rglob("*.ckpt.pt")):
        assert proc.poll() is None, f"finished before a checkpoint was seen: {proc.stderr.read()}"
        time.sleep(0.01)
    time.sleep(0.3)  # let it train past the checkpoint: the resumed run must drop what was logged after it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not [p for p in out.rglob("*.json") if "logs" not in p.parts], "killed before any record"
    (ckpt,) = list(out.rglob("*.ckpt.pt"))

    again = subprocess.run(_cmd(suite, out, "--checkpoint-every", "5"), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    resumed = _record(out)
    resumed_from = resumed["details"]["execution"]["resumed_from_steps"]
    assert len(resumed_from) == 1 and resumed_from[0] % 5 == 0 and 0 < resumed_from[0] < 40
    assert resumed["details"]["final_weights_sha256"] == whole["details"]["final_weights_sha256"]
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["details"]["loss_curve"] == whole["details"]["loss_curve"]
    assert not ckpt.exists()  # deleted once the record is written
    steps = _steps(out)
    assert [r["step"] for r in steps] == list(range(1, 41))  # each step once, although the killed run logged past its checkpoint
    assert [r["loss"] for r in steps] == [r["loss"] for r in _steps(tmp_path / "whole")]
    assert {"lr", "loss", "grad_norm", "images_per_s"} <= set(steps[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ddp_processes_follow_the_one_process_loss_curve(tmp_path):
    suite = _suite(tmp_path, steps=12, warmup_steps=2)
    one = subprocess.run(_cmd(suite, tmp_path / "one"), env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m"]
    two = subprocess.run(launcher + _cmd(suite, tmp_path / "two")[2:], env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _record(tmp_path / "one"), _record(tmp_path / "two")  # one record: only rank 0 writes
    assert b["details"]["execution"]["processes"] == 2 and a["details"]["execution"]["processes"] == 1
    assert b["details"]["n_test"] == a["details"]["n_test"] == 64  # every test example scored once
    la, lb = [r["loss"] for r in _steps(tmp_path / "one")], [r["loss"] for r in _steps(tmp_path / "two")]
    assert len(la) == len(lb) == 12
    assert lb == pytest.approx(la, rel=1e-4, abs=1e-5)
    assert abs(a["metrics"]["top1"] - b["metrics"]["top1"]) <= 1 / 64 + 1e-9  # at most one rounding-level flip


@pytest.mark.slow
def test_sigusr1_saves_a_checkpoint_at_the_next_step_and_training_goes_on(tmp_path):
    import torch

    suite = _suite(tmp_path, steps=400)  # long enough that the signal lands mid-training
    out = tmp_path / "signalled"
    proc = subprocess.Popen(_cmd(suite, out, "--checkpoint-every", "10h", "--keep-checkpoints", "--log-every", "1"),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (list(out.rglob("*.steps.jsonl")) and len(read_steps(next(out.rglob("*.steps.jsonl")))) >= 3):
        assert proc.poll() is None, f"finished before the signal: {proc.stderr.read()}"
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    rec = _record(out)
    assert rec["details"]["execution"]["checkpoints_written"] == 1  # the 10h timer never fired: the signal did
    (ckpt,) = list(out.rglob("*.ckpt.pt"))
    saved = torch.load(ckpt, weights_only=False)
    assert 3 <= saved["state"]["step"] < 400 and saved["cell_key"] == rec["key"]


def _kill_9_every_process_naming(marker: str) -> None:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.mark.slow
def test_ddp_with_dropout_killed_then_resumed_ends_with_the_same_weights(tmp_path):
    """Each process's dropout RNG is checkpointed: two processes resumed after SIGKILL of the whole job end
    where the uninterrupted two-process run ends."""
    suite = _suite(tmp_path, dropout=0.1)

    def launch(out, *extra):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    str(_free_port()), "-m"]
        return launcher + _cmd(suite, out, "--checkpoint-every", "5", *extra)[2:]

    whole = subprocess.run(launch(tmp_path / "whole"), env=_env(), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(launch(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.rglob("*.ckpt.pt")):
        assert proc.poll() is None, "finished before a checkpoint was seen"
        time.sleep(0.01)
    time.sleep(0.2)
    _kill_9_every_process_naming(str(out))  # the launcher and both workers (torchrun's workers outlive it)
    proc.wait()
    assert not [p for p in out.rglob("*.json") if "logs" not in p.parts], "killed before any record"
    again = subprocess.run(launch(out), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _record(tmp_path / "whole"), _record(out)
    assert len(b["details"]["execution"]["resumed_from_steps"]) == 1
    assert b["details"]["final_weights_sha256"] == a["details"]["final_weights_sha256"]
    assert b["details"]["loss_curve"] == a["details"]["loss_curve"]
