"""Cells: the unit of work (task x model x method x params x seed), what a runner gets and returns.

The planner (`vitbench/planner.py`) expands a suite into `Cell`s; a method (`vitbench/methods/*.py`)
turns one `Cell` plus a `RunContext` into a `CellResult`; the results store (`vitbench/results.py`)
writes it as one JSON record keyed by `cell_key`. Exercised by every `vitbench run`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from vitbench.hashing import canonical_json, json_sha256  # noqa: F401  (canonical_json re-exported)
from vitbench.runners.checkpoint import DEFAULT_POLICY, CheckpointPolicy
from vitbench.spec import TaskSpec

# Bump when a protocol change alters numbers for an unchanged config, so old records stop matching.
# 2: fine-tuning takes the schedule at step k-1 for update k (optax), dropout placed as vit_jax, big_vision's resize.
PROTOCOL_VERSION = 2


@dataclass(frozen=True)
class Cell:
    """One measurement. `params` holds every method parameter that changes the number (JSON-able)."""

    suite: str
    task: TaskSpec
    model: str
    weights: str
    method: str
    params: dict[str, Any] = field(hash=False)
    seed: int = 0
    img_size: int | None = None
    weights_id: str = ""  # resolved, e.g. "timm/vit_base_patch16_224.orig_in21k" or "file:<sha256>"
    pos_interp: str = "bilinear"  # position-embedding resize at a non-native img_size (bilinear = Google's)
    micro_batch: int | None = None  # gradient-accumulation chunk: bounds memory, not part of the key (same numbers)

    def key_payload(self) -> dict[str, Any]:
        """Everything that changes the number; its hash is the record key."""
        return {
            "protocol_version": PROTOCOL_VERSION,
            "task": self.task.to_dict(),  # without its prose (description, caveats): prose never changes a number
            "model": self.model,
            "weights_id": self.weights_id or self.weights,
            "method": self.method,
            "params": self.params,
            "seed": self.seed,
            "img_size": self.img_size,
            "pos_interp": self.pos_interp,
        }

    @cached_property
    def key(self) -> str:
        """The record key, computed once per cell (a cell and its params are never modified).

        Equal to `cell_key(self.key_payload())`; the task's canonical JSON is computed once per task and
        spliced in, since it is the bulk of the payload and shared by many cells.
        """
        payload = {**self.key_payload(), "task": _TASK_SLOT}
        text = canonical_json(payload).replace(_TASK_SLOT_JSON, _task_json(self.task), 1)
        return hashlib.sha256(text.encode()).hexdigest()[:20]  # = json_sha256(key_payload(), 20)

    @property
    def label(self) -> str:
        """Short human name, e.g. `smoke/digits vit_ti16 fewshot shots=5 seed=0`."""
        shown = " ".join(f"{k}={v}" for k, v in self.shown_params().items())
        return f"{self.suite}/{self.task.name} {self.model} {self.method} {shown} seed={self.seed}".replace("  ", " ")


    def shown_params(self) -> dict[str, Any]:
        """The parameters its method names for labels and plan tables (`Method.label_params`), when set."""
        from vitbench.methods import find_method

        method = find_method(self.method)
        names = method.label_params if method is not None else ()
        return {k: self.params[k] for k in names if self.params.get(k) is not None}


def cell_key(payload: dict[str, Any]) -> str:
    return json_sha256(payload, 20)


_TASK_SLOT = "\x00task\x00"  # cannot occur in a canonical JSON text (a raw NUL is always escaped)
_TASK_SLOT_JSON = json.dumps(_TASK_SLOT)
_TASK_JSON: dict[int, tuple[TaskSpec, str]] = {}


def _task_json(task: TaskSpec) -> str:
    hit = _TASK_JSON.get(id(task))
    if hit is None or hit[0] is not task:
        hit = _TASK_JSON[id(task)] = (task, canonical_json(task.to_dict()))
    return hit[1]


ProgressFn = Callable[[str, int, int], None]


def no_progress(description: str, done: int, total: int) -> None:
    """Default progress callback: does nothing. The CLI passes one that drives a rich progress bar."""


PRECISIONS = ("auto", "fp32", "bf16")  # RunContext.precision


@dataclass
class RunContext:
    """Where and how cells run; not part of the cell key (it must not change the numbers)."""

    data_root: Path | None = None
    cache_dir: Path | None = None
    device: str = "cpu"
    eval_batch_size: int = 128
    num_threads: int | None = None  # torch + BLAS threads, applied by planner.execute; None: threads.default_threads()
    progress: ProgressFn = no_progress
    skip_corrupt: bool = False
    # Per-cell files beside the record (`<record path without .json>`: `.ckpt.pt`, `.steps.jsonl`), set by the
    # worker for each cell; None: the runner keeps no checkpoint and no step log.
    cell_files: Path | None = None
    checkpoint: CheckpointPolicy = DEFAULT_POLICY  # --checkpoint-every / --keep-checkpoints
    compile: bool = False  # --compile: torch.compile the training model
    grad_checkpointing: bool = False  # --grad-checkpointing: recompute activations in backward (memory for time)
    precision: str = "auto"  # --precision: auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    loader_workers: int | None = None  # --loader-workers: training input processes (None: the runner's choice)
    log_every: int = 50  # --log-every: steps between device syncs, step-log flushes and progress updates


@dataclass
class CellResult:
    """What a runner returns: headline metrics, method details, and provenance of every number."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
