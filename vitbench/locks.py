"""Cell claims: one lock file per running cell, so workers sharing a results folder never run a cell twice at once.

A claim is `<record path>.lock`, created atomically (`O_CREAT | O_EXCL`: exactly one creator wins, also on
NFS v3+), holding JSON {host, pid, owner, token, time}. While the cell runs a daemon thread touches the file
every `heartbeat_s`; the claim is released (the file removed) when the cell ends, also on an error or Ctrl-C.
A lock left by a worker that died (kill -9, node failure, preemption) is *stale* and taken over when
  - its heartbeat (mtime) is older than `stale_s` (any host), or
  - it names this host and a pid that no longer runs, or
  - it names the same scheduler task as the claimer (a requeued SLURM array task resuming its own cell).
Takeover renames the stale file away (only one claimer's rename succeeds) and checks it moved the lock it
judged stale before claiming afresh. Exercised by every `vitbench run` (the worker loop in
`vitbench/worker.py`); tuned by VITBENCH_LOCK_STALE_S and VITBENCH_LOCK_HEARTBEAT_S.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STALE_S = 600.0  # a live worker touches its lock every 30 s; 10 min of silence means it is gone
DEFAULT_HEARTBEAT_S = 30.0


def stale_after_s() -> float:
    return float(os.environ.get("VITBENCH_LOCK_STALE_S", DEFAULT_STALE_S))


def heartbeat_s() -> float:
    return float(os.environ.get("VITBENCH_LOCK_HEARTBEAT_S", min(DEFAULT_HEARTBEAT_S, stale_after_s() / 4)))


def scheduler_task() -> str:
    """The scheduler task this process is ('slurm:<array job>_<task>' or 'slurm:<job>'), '' outside one."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job:
        return ""
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"slurm:{job}_{task}" if task else f"slurm:{job}"


def lock_path(record_path: Path) -> Path:
    return Path(str(record_path) + ".lock")


def read_lock(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written (create and write are two steps) or damaged: judged by its age alone


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by another user
    return True


def stale_reason(path: Path, info: dict[str, Any], *, stale_s: float | None = None) -> str:
    """Why the lock at `path` (content `info`) is stale, or '' when its owner may still be running."""
    stale_s = stale_after_s() if stale_s is None else stale_s
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return "gone"
    pid = info.get("pid")
    if info.get("host") == socket.gethostname() and isinstance(pid, int):  # checked first: the surest reason
        if pid == os.getpid() and info.get("token") not in _HELD:
            return "left by an earlier claim of this process"
        if pid != os.getpid() and not _pid_alive(pid):
            return f"pid {pid} on this host is gone"
    if age > stale_s:
        return f"no heartbeat for {age:.0f}s (> {stale_s:.0f}s)"
    task = scheduler_task()
    if task and info.get("owner") == task and info.get("token") not in _HELD:
        return f"left by this scheduler task ({task}) before its requeue"
    if not info and age > 60:
        return f"unreadable for {age:.0f}s"
    return ""


_HELD: set[str] = set()  # tokens of the claims this process holds


@dataclass
class Claim:
    """A held lock; `release()` (or leaving the `with` block) removes it and stops the heartbeat."""

    path: Path
    token: str
    took_over: str = ""  # why a stale lock was replaced, '' when the cell was free
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start_heartbeat(self, every_s: float) -> None:
        def beat() -> None:
            while not self._stop.wait(every_s):
                try:
                    os.utime(self.path)
                except OSError:
                    pass  # removed under us (should not happen); the cell still finishes and writes its record

        self._thread = threading.Thread(target=beat, name=f"lock-heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        _HELD.discard(self.token)
        info = read_lock(self.path)
        if info is not None and info.get("token") == self.token:  # never remove a lock another worker took over
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create(path: Path) -> Claim | None:
    token = secrets.token_hex(8)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return None
    info = {"host": socket.gethostname(), "pid": os.getpid(), "owner": scheduler_task(), "token": token,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f)
    except OSError as exc:  # e.g. a full disk: no claim, and no empty lock left behind
        try:
            os.unlink(path)
        except OSError:
            pass
        from vitbench import fsutil

        raise fsutil.disk_full(path.parent, what="a result record's claim (lock file)") if fsutil.is_disk_full(exc) else exc
    _HELD.add(token)
    return Claim(path=path, token=token)


def try_claim(record_path: Path, *, heartbeat: float | None = None, stale_s: float | None = None) -> Claim | None:
    """Claim the cell whose record is `record_path`; None when another live worker holds it."""
    path = lock_path(record_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    claim = _create(path)
    took_over = ""
    if claim is None:
        info = read_lock(path)
        if info is None:  # released between our create and read: try once more
            claim = _create(path)
        else:
            why = stale_reason(path, info, stale_s=stale_s)
            if not why or not _remove_stale(path, info):
                return None
            took_over = why
            claim = _create(path)
    if claim is None:
        return None
    claim.took_over = took_over
    claim.start_heartbeat(heartbeat or heartbeat_s())
    return claim


def _remove_stale(path: Path, judged: dict[str, Any]) -> bool:
    """Move the stale lock aside; True when the file moved was the one judged stale (then it is deleted)."""
    aside = path.with_name(f"{path.name}.stale-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)  # atomic: of several workers taking over, one rename succeeds
    except FileNotFoundError:
        return True  # someone else removed it; our O_EXCL create decides who claims
    moved = read_lock(aside) or {}
    if judged and moved.get("token") != judged.get("token"):
        try:  # we moved a fresh claim made in the meantime: put it back unless yet another one exists
            os.link(aside, path)
        except OSError:
            pass
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def holder(record_path: Path) -> dict[str, Any] | None:
    """The content of the cell's lock, when one exists (for 'running elsewhere' notes)."""
    return read_lock(lock_path(record_path))
