"""The per-step log of a training cell: `<record path without .json>.steps.jsonl`, one JSON object a line.

Each line is what the runner reports for a step (step, lr, loss, grad_norm, images_per_s, ...), appended and
flushed as it comes, so `tail -f` follows a run and a killed run leaves every line it wrote. A run that starts
from step 0 empties the file; one resumed from a checkpoint at step k keeps the lines up to step k (a killed run
may have logged past its last checkpoint; those steps are trained again). `read_steps` reads a log back,
skipping a line torn by a kill. Only rank 0 writes (`writer`). Exercised by `vitbench finetune`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from vitbench.errors import VitbenchError

SUFFIX = ".steps.jsonl"


def steps_path(prefix: Path | str) -> Path:
    return Path(f"{prefix}{SUFFIX}")


def _plain(value: Any) -> Any:
    """JSON for numpy / torch scalars (a 0-d tensor or numpy number becomes its Python number)."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_steps(path: Path | str) -> list[dict[str, Any]]:
    """The rows of a step log, in order; a line that does not parse (torn by a kill) is skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class StepLog:
    """Append-only JSONL log of one cell's steps; does nothing when `prefix` is None or not `writer`."""

    def __init__(self, prefix: Path | None, writer: bool = True, resume_step: int = 0) -> None:
        self.path: Path | None = None if prefix is None else steps_path(prefix)
        self._file = None
        if self.path is None or not writer:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step > 0:
                from vitbench import fsutil

                kept = [r for r in read_steps(self.path) if _step(r) <= resume_step]
                fsutil.atomic_write_text(self.path, "".join(json.dumps(r, default=_plain) + "\n" for r in kept),
                                         what="the step log")
                self._file = open(self.path, "a", encoding="utf-8")
            else:
                self._file = open(self.path, "w", encoding="utf-8")
        except (OSError, VitbenchError) as exc:  # a full disk: the log is lost, never the training
            self._give_up(exc)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self._file is None or not rows:
            return
        try:
            self._file.write("".join(json.dumps(r, default=_plain) + "\n" for r in rows))
            self._file.flush()
        except OSError as exc:
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        warnings.warn(f"step log {self.path} not written from here on ({exc}); training goes on", stacklevel=3)
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _step(row: dict[str, Any]) -> float:
    try:
        return float(row.get("step", 0))
    except (TypeError, ValueError):
        return float("inf")  # no usable step number: dropped on resume
