"""Fine-tuning protocol math: the learning-rate schedule and gradient accumulation.

The paper fine-tunes with SGD (momentum 0.9, no weight decay), global-norm gradient clipping at 1, batch
512, linear warm-up then cosine decay to zero (Table 4, §B.1.1; vit_jax `utils.create_learning_rate_schedule`,
docs/finetune.md#vit_jax, docs/preprocessing.md). Pure functions, tested directly; the training loop
that uses them is `vitbench/runners/finetune.py`, the defaults are `vitbench/methods/finetune.py`
(`vitbench finetune`, `vitbench run --method finetune`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from vitbench.errors import VitbenchError


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int) -> float:
    """Learning rate at training step `step` (1-based, as vit_jax counts): warm-up, then cosine to 0.

    warm-up factor = min(1, step / warmup); progress = clip((step - warmup) / (total - warmup), 0, 1);
    lr = base * warmup_factor * 0.5 * (1 + cos(pi * progress)). `warmup_steps >= total_steps` is refused:
    vit_jax divides by zero there and its last step gets a NaN rate.
    """
    if total_steps < 1:
        raise VitbenchError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise VitbenchError(f"warmup_steps must be in [0, {total_steps}), got {warmup_steps}")
    progress = min(max((step - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if warmup_steps:
        lr *= min(1.0, step / warmup_steps)
    return lr


def update_lr(update: int, base_lr: float, total_steps: int, warmup_steps: int) -> float:
    """Learning rate of optimizer update `update` (1-based) as vit_jax applies it: optax's `scale_by_schedule`
    counts from 0, so update k uses the schedule at step k-1 (the first update has rate 0 when there is a
    warm-up, the last one lr_at(total - 1)); vit_jax `train.py` + optax, docs/preprocessing.md."""
    if not 1 <= update <= total_steps:
        raise VitbenchError(f"update must be in [1, {total_steps}], got {update}")
    return lr_at(update - 1, base_lr, total_steps, warmup_steps)


def accumulation_steps(batch_size: int, micro_batch: int | None) -> tuple[int, int]:
    """(micro-batch size, number of micro-batches) whose product is exactly `batch_size`.

    The effective batch is what the protocol fixes (512 in the paper); micro-batching only bounds memory.
    The largest divisor of `batch_size` that is <= `micro_batch` is used, so no example is dropped or
    double-counted.
    """
    if micro_batch is None or micro_batch >= batch_size:
        return batch_size, 1
    if micro_batch < 1:
        raise VitbenchError(f"micro_batch must be >= 1, got {micro_batch}")
    size = max(d for d in range(1, micro_batch + 1) if batch_size % d == 0)
    return size, batch_size // size


SAMPLING = "repeated shuffled stream: ds.repeat().shuffle().batch() as vit_jax (epochs reshuffled, batches cross them)"


def batch_stream(n_train: int, batch_size: int, gen: torch.Generator) -> Iterator[np.ndarray]:
    """Index batches of exactly `batch_size` from an endless stream of shuffled epochs of `n_train` examples.

    vit_jax's input pipeline repeats and shuffles the training split before batching, so a batch may span two
    epochs, and a batch larger than the split holds examples more than once: every step trains on
    `batch_size` examples, as the record claims, and each example is seen equally often (+-1 per epoch).
    """
    if n_train < 1:
        raise VitbenchError("the training split is empty; nothing to fine-tune on")
    order, cursor = torch.randperm(n_train, generator=gen), 0
    while True:
        parts, need = [], batch_size
        while need:
            if cursor == n_train:
                order, cursor = torch.randperm(n_train, generator=gen), 0
            take = min(need, n_train - cursor)
            parts.append(order[cursor:cursor + take])
            cursor += take
            need -= take
        yield torch.cat(parts).numpy()
