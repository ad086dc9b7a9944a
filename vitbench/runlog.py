"""Run logs and plain progress lines: what an unattended run leaves to read.

`RunLog` appends timestamped lines to `<out>/logs/run-<UTC time>-<host>-<pid>.log` (one file per process:
workers on several machines never interleave). `ProgressLines` prints `cell i/n <label>: <step> done/total,
ETA ...` lines at most every `every_s` seconds (option `--progress-every`, env VITBENCH_PROGRESS_EVERY,
default 30) when stderr is not a terminal, e.g. in a SLURM job's output file; a terminal gets rich bars
instead (`vitbench/commands/console.py`). Exercised by `vitbench run` / `fewshot` / `finetune`.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

DEFAULT_EVERY_S = 30.0


def progress_every_s(value: float | None = None) -> float:
    if value is not None:
        return float(value)
    return float(os.environ.get("VITBENCH_PROGRESS_EVERY", DEFAULT_EVERY_S))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunLog:
    """Line-buffered log file of one process's run; `write` never raises (a full disk must not stop a run)."""

    def __init__(self, out_dir: Path, tag: str = "run") -> None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.path = Path(out_dir) / "logs" / f"{tag}-{stamp}-{socket.gethostname()}-{os.getpid()}.log"
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8", buffering=1)
        except OSError:
            self._file = None

    def write(self, message: str) -> None:
        if self._file is None:
            return
        with self._lock:
            try:
                for line in str(message).splitlines() or [""]:
                    self._file.write(f"{_now()} {line}\n")
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def eta_text(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressLines:
    """Throttled plain progress lines for logs: the current cell (i/n, label, ETA of the run) and its step."""

    def __init__(self, n_cells: int, *, every_s: float | None = None, stream: TextIO | None = None,
                 log: RunLog | None = None, prefix: str = "", enabled: bool = True) -> None:
        self.n = n_cells
        self.every_s = progress_every_s(every_s)
        self.stream = stream if stream is not None else sys.stdout
        self.log = log
        self.prefix = prefix
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.finished = 0
        self.cells_s = 0.0  # time spent in finished cells
        self.cell_i = 0
        self.label = ""
        self.cell_t0 = self.t0
        self._last = 0.0
        self._step: dict[str, float] = {}  # step description -> start time

    def run_eta(self, cell_eta: float | None = None) -> float | None:
        """Seconds left for the run: the running cell's own ETA (when known) plus the mean time of the finished
        cells times the cells after it; never less than the running cell's ETA."""
        if cell_eta is not None:  # inside a cell: it, then the cells after it
            after = self.n - self.finished - 1
            if after <= 0:
                return cell_eta
            return None if not self.finished else cell_eta + self.cells_s / self.finished * after
        if not self.finished:
            return None
        return self.cells_s / self.finished * (self.n - self.finished)

    def emit(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        line = f"{self.prefix}{text}"
        if self.log is not None:
            self.log.write(line)
        if self.enabled:
            try:
                print(line, file=self.stream, flush=True)
            except (OSError, ValueError):
                pass

    def cell_started(self, i: int, label: str) -> None:
        self.cell_i, self.label, self.cell_t0 = i, label, time.monotonic()
        self._step.clear()
        self.emit(f"cell {i + 1}/{self.n} {label}: started (run ETA {eta_text(self.run_eta())})")

    def cell_ended(self, status: str, detail: str = "") -> None:
        """A finished cell: shown when the interval has passed, always when it failed or was skipped."""
        self.finished += 1
        took = time.monotonic() - self.cell_t0
        self.cells_s += took
        tail = f": {detail}" if detail else ""
        self.emit(f"cell {self.cell_i + 1}/{self.n} {self.label}: {status} in {took:.1f}s{tail} "
                  f"(run ETA {eta_text(self.run_eta())})", force=status != "ok")

    def step(self, description: str, done: int, total: int) -> None:
        """A `RunContext.progress` callback: steps or batches inside the current cell."""
        now = time.monotonic()
        start = self._step.setdefault(description, now)
        eta = (now - start) / done * (total - done) if done else None
        self.emit(f"cell {self.cell_i + 1}/{self.n} {self.label}: {description} {done}/{total} "
                  f"(ETA {eta_text(eta)}, run ETA {eta_text(self.run_eta(eta))})")
