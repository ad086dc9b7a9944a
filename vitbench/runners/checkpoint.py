"""Checkpoints inside a cell: when to save (`CheckpointPolicy`), where and how (`CellCheckpoint`).

A long cell (fine-tuning: thousands of steps) saves its state every N steps and/or M minutes
(`--checkpoint-every 500`, `10m`, `1.5h`, `500,10m`, `off`; and at the next step after a SIGUSR1) to `<record path without .json>.ckpt.pt`, beside
its record. The file is written to a temp name in the same folder, fsynced and renamed over the previous
one, so a kill at any instant leaves the previous checkpoint or the new one, never half of one (a full disk
keeps the previous one and training goes on). It holds `{"cell_key", "format", "saved_at", "state"}`: the
runner's state (model, optimizer, step, RNG, data position) under the cell's key, so a file of another cell
is never resumed from. A killed or failed cell resumes from it on the next run (also a requeued SLURM task);
the worker (`vitbench/worker.py`) deletes it once the record is written, unless `--keep-checkpoints`.
Exercised by `vitbench finetune` / `vitbench run --method finetune`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitbench.errors import VitbenchError

FORMAT = 1
SAVE_REQUESTED = threading.Event()  # set by SIGUSR1 (`save_on_signal`): the next step saves a checkpoint
SUFFIX = ".ckpt.pt"
_TOKEN = re.compile(r"^(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<unit>s|m|min|h)?$")
_MINUTES = {"s": 1 / 60, "m": 1.0, "min": 1.0, "h": 60.0}


@dataclass(frozen=True)
class CheckpointPolicy:
    """Save every `every_steps` steps and/or every `every_minutes` minutes (both None: never); `keep` leaves
    the checkpoint after the record is written."""

    every_steps: int | None = None
    every_minutes: float | None = None
    keep: bool = False

    @property
    def enabled(self) -> bool:
        return self.every_steps is not None or self.every_minutes is not None

    @classmethod
    def parse(cls, text: str | None, keep: bool = False) -> CheckpointPolicy:
        """`--checkpoint-every`: "500" (steps), "10m"/"90s"/"1.5h" (time), "500,10m" (whichever comes first),
        "off"/"none" (never); None is the default (every 30 minutes)."""
        if text is None:
            return cls(every_minutes=DEFAULT_MINUTES, keep=keep)
        raw = str(text).strip().lower()
        if raw in ("off", "none", "never"):
            return cls(keep=keep)
        steps = minutes = None
        for token in (t.strip() for t in raw.replace(" ", "").split(",")):
            m = _TOKEN.match(token)
            if not m or float(m["num"]) <= 0 or (m["unit"] is None and "." in m["num"]):
                raise VitbenchError(f"--checkpoint-every {text!r}: each part must be a step count (500), a time "
                                    "(90s, 10m, 1.5h) or both as '500,10m'; 'off' disables checkpoints")
            if m["unit"] is None:
                if steps is not None:
                    raise VitbenchError(f"--checkpoint-every {text!r} gives two step counts; give at most one")
                steps = int(m["num"])
            else:
                if minutes is not None:
                    raise VitbenchError(f"--checkpoint-every {text!r} gives two times; give at most one")
                minutes = float(m["num"]) * _MINUTES[m["unit"]]
        return cls(every_steps=steps, every_minutes=minutes, keep=keep)

    def describe(self) -> str:
        parts = ([f"{self.every_steps} steps"] if self.every_steps else []) + \
                ([f"{self.every_minutes:g} min"] if self.every_minutes else [])
        return "every " + " or ".join(parts) if parts else "off"


DEFAULT_MINUTES = 30.0
DEFAULT_POLICY = CheckpointPolicy(every_minutes=DEFAULT_MINUTES)


def checkpoint_path(prefix: Path | str) -> Path:
    return Path(f"{prefix}{SUFFIX}")


def remove_checkpoint(prefix: Path | str) -> None:
    """Delete the checkpoint of the cell whose files start with `prefix` (nothing there: nothing to do)."""
    try:
        checkpoint_path(prefix).unlink()
    except FileNotFoundError:
        pass


def discard_if_recorded(prefix: Path | str, record_path: Path | str, cell_key: str) -> bool:
    """Delete the checkpoint beside a result of the same key (a finished run's, kept by --keep-checkpoints or
    left by a kill between the record and its deletion): a rerun of a recorded cell (--force, new data) starts
    from step 0. True when one was deleted."""
    from vitbench import results

    if not checkpoint_path(prefix).exists():
        return False
    try:
        rec = results.read_record(Path(record_path))
    except VitbenchError:  # a record of an unknown schema: not ours to judge
        return False
    if rec is None or rec.get("key") != cell_key or results.is_failed(rec):
        return False
    remove_checkpoint(prefix)
    return True


class CellCheckpoint:
    """The checkpoint of one cell. `prefix` None: no checkpoints (load returns None, save does nothing).

    Under DDP every rank makes the same calls in the same order (`due` may agree over the process group);
    only the `writer` (rank 0) writes or removes the file.
    """

    def __init__(self, prefix: Path | None, cell_key: str, policy: CheckpointPolicy, writer: bool = True,
                 sync_every: int = 50) -> None:
        self.path: Path | None = None if prefix is None else checkpoint_path(prefix)
        self.cell_key = cell_key
        self.policy = policy
        self.writer = writer
        self.sync_every = max(1, int(sync_every))  # DDP: steps between agreements on the time rule (a host sync each)
        self._last = time.monotonic()
        self.saves = 0  # how many checkpoints this process wrote (provenance for the runner)

    def load(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The runner's state saved for this cell, or None (no file, or one that cannot be used: a warning)."""
        if self.path is None or not self.path.is_file():
            return None
        import torch

        try:  # our own file in the results folder: it holds RNG states and numpy objects, hence full unpickling
            payload = torch.load(self.path, map_location=map_location, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - truncated or damaged: start again rather than fail the cell
            warnings.warn(f"checkpoint {self.path} cannot be read ({type(exc).__name__}); the cell starts from step 0",
                          stacklevel=2)
            return None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
            warnings.warn(f"checkpoint {self.path} is not a vitbench checkpoint of format {FORMAT}; the cell starts "
                          "from step 0", stacklevel=2)
            return None
        if payload.get("cell_key") != self.cell_key:
            warnings.warn(f"checkpoint {self.path} belongs to cell {payload.get('cell_key')!r}, not {self.cell_key!r}; "
                          "the cell starts from step 0", stacklevel=2)
            return None
        return payload["state"]

    def due(self, step: int, total: int) -> bool:
        """Whether to save after `step` of `total` steps: a multiple of `every_steps`, or `every_minutes` since
        the last save (or the start). Never at the last step: the record follows it."""
        if self.path is None or step >= total or not self.policy.enabled:
            return False
        if self.policy.every_steps and step % self.policy.every_steps == 0:
            return True
        from vitbench import distributed

        if distributed.active():  # ranks' clocks (and signals) differ: rank 0 decides, every sync_every steps
            if step % self.sync_every:
                return False
            return bool(distributed.broadcast_object(self._time_up()))
        return self._time_up()

    def _time_up(self) -> bool:
        if SAVE_REQUESTED.is_set():  # SIGUSR1: save at the next step (`save_on_signal`)
            return True
        return bool(self.policy.every_minutes) and time.monotonic() - self._last >= self.policy.every_minutes * 60.0

    def save(self, state: dict[str, Any]) -> None:
        """Write `state` atomically (writer only); a full or failing disk keeps the previous checkpoint and warns."""
        self._last = time.monotonic()
        if self.path is None or not self.writer:
            return
        import torch

        from vitbench import fsutil

        SAVE_REQUESTED.clear()
        payload = {"cell_key": self.cell_key, "format": FORMAT,
                   "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "state": state}
        try:
            with fsutil.atomic_output(self.path, what="a checkpoint") as tmp:  # temp beside it, fsync, rename
                with open(tmp, "wb") as f:
                    torch.save(payload, f)
                    f.flush()
                    os.fsync(f.fileno())
        except (OSError, VitbenchError) as exc:  # DiskFull is a VitbenchError; the temp file is already removed
            warnings.warn(f"could not save the checkpoint {self.path} ({exc}); the previous one is kept and "
                          "training goes on", stacklevel=2)
            return
        self.saves += 1

    def remove(self) -> None:
        if self.path is not None and self.writer:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


FORWARD_TO: list[int] = []  # pids of local worker processes a SIGUSR1 is passed on to (`vitbench/executors.py`)


def _request_save(signum, frame) -> None:
    SAVE_REQUESTED.set()
    for pid in list(FORWARD_TO):
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            pass


def install_save_request_handler() -> None:
    """Make SIGUSR1 a request for a checkpoint at the next training step, for the whole process (its default
    action would end it): the CLI and local worker processes install it at start. Main thread only."""
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, _request_save)


@contextlib.contextmanager
def save_on_signal():
    """While a cell trains, SIGUSR1 asks for a checkpoint at the next step (the run goes on): a cluster job can
    ask for one before its time limit (`#SBATCH --signal=B:USR1@120` with `exec vitbench ...`), so its next
    run loses nothing. A request left when the cell ends (during its last steps or evaluation) is dropped, so
    it never makes the next cell save at its first step."""
    installed = hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGUSR1, _request_save) if installed else None
    try:
        yield
    finally:
        SAVE_REQUESTED.clear()
        if installed:
            signal.signal(signal.SIGUSR1, previous)
