"""Cell claims under concurrent workers: atomic lock files, heartbeat, stale-lock takeover; three real
processes on one results folder run every cell exactly once; a worker killed with kill -9 loses nothing."""

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from suite_builder import fewshot_digits_suite
from vitbench import locks

REPO = Path(__file__).resolve().parent.parent

SUITE = fewshot_digits_suite("conc", train="all[:300]", test="all[300:700]")


def test_one_claim_at_a_time_and_release(tmp_path):
    record = tmp_path / "k.json"
    first = locks.try_claim(record, heartbeat=0.05)
    assert first is not None and locks.try_claim(record) is None
    info = json.loads(locks.lock_path(record).read_text())
    assert info["host"] == socket.gethostname() and info["pid"] == os.getpid() and info["token"] == first.token
    before = os.stat(locks.lock_path(record)).st_mtime_ns
    time.sleep(0.3)
    assert os.stat(locks.lock_path(record)).st_mtime_ns > before  # the heartbeat touches it
    first.release()
    assert not locks.lock_path(record).exists()
    second = locks.try_claim(record)
    assert second is not None and second.took_over == ""
    second.release()


def _foreign_lock(record: Path, host: str, pid: int, age_s: float) -> None:
    path = locks.lock_path(record)
    path.write_text(json.dumps({"host": host, "pid": pid, "owner": "", "token": "feedface", "time": "x"}))
    old = time.time() - age_s
    os.utime(path, (old, old))


def test_stale_locks_are_taken_over(tmp_path, monkeypatch):
    record = tmp_path / "k.json"
    _foreign_lock(record, "another-host", 12345, age_s=5)  # fresh heartbeat on another machine: respected
    assert locks.try_claim(record, stale_s=60) is None
    _foreign_lock(record, "another-host", 12345, age_s=120)  # silent for longer than the timeout: stale
    claim = locks.try_claim(record, stale_s=60)
    assert claim is not None and "no heartbeat" in claim.took_over
    claim.release()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _foreign_lock(record, socket.gethostname(), dead.pid, age_s=0)  # this host, pid gone: stale at once
    claim = locks.try_claim(record, stale_s=600)
    assert claim is not None and f"pid {dead.pid}" in claim.took_over
    claim.release()

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    path = locks.lock_path(record)
    path.write_text(json.dumps({"host": "node9", "pid": 1, "owner": "slurm:77_3", "token": "cafe"}))
    claim = locks.try_claim(record, stale_s=600)  # a requeued array task resumes its own cell at once
    assert claim is not None and "requeue" in claim.took_over
    claim.release()


def test_a_lock_taken_over_meanwhile_is_not_removed(tmp_path):
    record = tmp_path / "k.json"
    _foreign_lock(record, "another-host", 1, age_s=999)
    judged = locks.read_lock(locks.lock_path(record))
    _foreign_lock(record, "third-host", 2, age_s=0)  # someone else took it over after we judged it stale
    locks.lock_path(record).write_text(json.dumps({"host": "third-host", "pid": 2, "token": "new"}))
    assert locks._remove_stale(locks.lock_path(record), judged) is False
    assert json.loads(locks.lock_path(record).read_text())["token"] == "new"


def _env(tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "VITBENCH_CACHE_DIR": str(tmp_path / "cache"),
           "VITBENCH_LOCK_STALE_S": "120", "VITBENCH_PROGRESS_EVERY": "3600"}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    env.pop("RANK", None)
    return env


def _worker(tmp_path: Path, shots: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vitbench.cli", "fewshot", "--suite", "conc.toml", "--shots", shots, "--out", "res",
           "--no-report", *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def executions(out_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Per cell key: how often a worker started it and how often one finished it (from the run logs)."""
    started: dict[str, int] = {}
    done: dict[str, int] = {}
    for log in (out_dir / "logs").glob("*.log"):
        for line in log.read_text().splitlines():
            words = line.split()
            if len(words) > 2 and words[1] == "start":
                key = words[-1].strip("[]")
                started[key] = started.get(key, 0) + 1
            if len(words) > 2 and words[1] == "done" and "->" in line:
                key = Path(words[-1]).stem
                done[key] = done.get(key, 0) + 1
    return started, done


def _valid_records(out_dir: Path) -> list[dict]:
    from vitbench import results

    recs = results.load_records(out_dir)
    assert all(r["status"] == "ok" and 0 <= r["metrics"]["top1"] <= 1 for r in recs)
    return recs


@pytest.mark.slow
def test_three_concurrent_processes_run_every_cell_exactly_once(tmp_path):
    (tmp_path / "conc.toml").write_text(SUITE)
    shots = "1,2,3,4,5,6"
    procs = [_worker(tmp_path, shots) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    started, done = executions(tmp_path / "res")
    recs = _valid_records(tmp_path / "res")
    assert len(recs) == 6 and len({r["key"] for r in recs}) == 6
    assert set(done) == {r["key"] for r in recs} and set(done.values()) == {1} and set(started.values()) == {1}
    assert len({r["host"] for r in recs}) == 1 and sum("written by other workers" in o for o, _ in outs) >= 1
    per_worker = sorted(sum(1 for line in p.read_text().splitlines() if line.split()[1:2] == ["done"] and "->" in line)
                        for p in (tmp_path / "res" / "logs").glob("*.log"))
    print(f"3 workers, 6 cells: {sum(done.values())} executions, cells per worker {per_worker}")


@pytest.mark.slow
def test_killing_one_of_three_workers_loses_nothing_and_recomputes_nothing_finished(tmp_path):
    (tmp_path / "conc.toml").write_text(SUITE)
    shots = "1,2,3,4,5,6,7,8"
    procs = [_worker(tmp_path, shots) for _ in range(3)]
    victim = random.Random(os.getpid()).randrange(3)
    deadline = time.time() + 300
    lock_seen = None
    while time.time() < deadline and lock_seen is None:  # kill the victim while it holds a cell's lock
        for lock in (tmp_path / "res").rglob("*.lock"):
            info = locks.read_lock(lock) or {}
            if info.get("pid") == procs[victim].pid:
                lock_seen = lock
                break
        time.sleep(0.02)
    assert lock_seen is not None
    procs[victim].kill()  # kill -9
    procs[victim].wait()
    killed_cell = Path(str(lock_seen)[: -len(".lock")])
    outs = [p.communicate(timeout=600) for i, p in enumerate(procs) if i != victim]
    assert all(p.returncode == 0 for i, p in enumerate(procs) if i != victim), [e[-2000:] for _, e in outs]
    started, done = executions(tmp_path / "res")
    recs = _valid_records(tmp_path / "res")
    keys = {r["key"] for r in recs}
    logs = {p.name: p.read_text() for p in (tmp_path / "res" / "logs").glob("*.log")}
    why = f"victim {procs[victim].pid}, killed cell {killed_cell.stem}, {len(recs)} records {sorted(keys)}, logs {logs}"
    assert len(recs) == 8 and killed_cell.stem in keys, why  # nothing lost: the killed worker's cell was taken over
    assert set(done.values()) == {1} and set(done) == keys, why  # nothing finished was computed twice
    assert not list((tmp_path / "res").rglob("*.lock")), why
    assert f"pid {procs[victim].pid} on this host is gone" in " ".join(logs.values()), why
    rerun = subprocess.run([sys.executable, "-m", "vitbench.cli", "fewshot", "--suite", "conc.toml", "--shots", shots,
                            "--out", "res", "--dry-run"], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert "0 to run, 8 already done" in rerun.stdout
    print(f"killed worker {victim} (kill -9) during {killed_cell.stem}: 8/8 records, executions per cell "
          f"{sorted(done.values())}, starts {sum(started.values())} (the killed cell started twice: "
          f"{started.get(killed_cell.stem)})")
