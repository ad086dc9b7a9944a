"""Fine-tuning runner: train a backbone with a new zero-initialised head on a task's train split, score test.

Recipe (paper Table 4, §B.1.1): SGD momentum 0.9, no weight decay, global-norm clipping at 1, linear warm-up
then cosine decay to 0 (update k at the schedule's step k-1, as optax), the task's training augmentation
(inception crop, resize + random crop, or none; optional flip; VTAB per task, docs/preprocessing.md),
squash-resize for evaluation; the whole test split is scored (vit_jax drops the last partial batch; we do
not). `micro_batch` accumulates gradients over chunks of each update's batch; the batch stream is the same.
Exercised by `vitbench finetune` and `vitbench run --method finetune` (through `vitbench/methods/finetune.py`,
which owns the parameters and the dev-split learning-rate selection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitbench import finetune as recipe_math
from vitbench.cells import Cell, CellResult, RunContext


def _images(split, prep, ctx):
    from vitbench.data.transforms import resized_images

    images_dir = None if ctx.cache_dir is None else Path(ctx.cache_dir) / "images"  # same layout as few-shot
    return resized_images(split, prep, cache_dir=images_dir, progress=ctx.progress)


@torch.inference_mode()
def predict(model: torch.nn.Module, images: np.ndarray, prep, ctx: RunContext, desc: str = "eval") -> np.ndarray:
    """Argmax class ids for uint8 NHWC `images`, in order, batch by batch."""
    from vitbench.data.transforms import normalize

    model.eval()
    preds = []
    n, bs = len(images), ctx.eval_batch_size
    for start in range(0, n, bs):
        batch = torch.from_numpy(np.array(images[start : start + bs])).to(ctx.device)
        logits = model(normalize(batch, prep))
        preds.append(logits.argmax(dim=1).cpu().numpy())
        ctx.progress(desc, min(start + bs, n), n)
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def score(preds: np.ndarray, split, metric: str) -> dict[str, float]:
    """top-1 accuracy over the whole split, plus ReaL accuracy when the split carries ReaL label sets."""
    from vitbench.features import classification_metrics

    return classification_metrics(preds, split, metric)


def train_preprocessing(prep, recipe):
    """The training augmentation of `recipe` on top of the eval preprocessing `prep`; training reads the cache
    `train_preprocessing(...).train_cache()` (at `train_resize` for "resize_crop", else at the eval size)."""
    return dataclasses.replace(prep, train_crop=recipe.train_crop, hflip=recipe.hflip, train_resize=recipe.train_resize)


def train_and_score(cell: Cell, ctx: RunContext, recipe: Mapping[str, Any]) -> CellResult:
    """Fine-tune `cell.model` on `cell.task` with `recipe` (`vitbench.methods.finetune.recipe`), score the eval split."""
    from vitbench.data import load_split
    from vitbench.data.order import check_class_coverage
    from vitbench.data.transforms import preprocessing_for, train_augment
    from vitbench.models import create

    # micro_batch travels on the cell, outside the key (the batch stream does not depend on it)
    recipe = SimpleNamespace(**{**recipe, "micro_batch": cell.micro_batch or recipe.get("micro_batch")})
    task = cell.task
    torch.manual_seed(cell.seed)
    model = create(cell.model, weights=cell.weights, img_size=cell.img_size, num_classes=task.num_classes,
                   pos_interp=cell.pos_interp, dropout=recipe.dropout)
    model.to(ctx.device)
    prep = preprocessing_for(model.data_config, size=cell.img_size, resize="squash",
                             interpolation=cell.params.get("interpolation", "bilinear"),
                             resize_impl=cell.params.get("resize_impl", "tf"))
    prep_train = train_preprocessing(prep, recipe)
    prep = dataclasses.replace(prep, train_crop="none", hflip=False)  # evaluation: no augmentation

    selecting = cell.params.get("stage") == "select"  # lr selection: train on the dev-train split, score dev
    train_name = cell.params["select_train_split"] if selecting else task.train_split
    eval_name = cell.params["select_eval_split"] if selecting else task.test_split
    train_split, test_split = (load_split(task, name, data_root=ctx.data_root, skip_corrupt=ctx.skip_corrupt)
                               for name in (train_name, eval_name))
    coverage = check_class_coverage(task, train_name, train_split.labels, eval_name, test_split.labels)  # before decoding
    train_images, test_images = _images(train_split, prep_train.train_cache(), ctx), _images(test_split, prep, ctx)

    micro, n_micro = recipe_math.accumulation_steps(recipe.batch_size, recipe.micro_batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(cell.seed)
    labels = torch.from_numpy(np.asarray(train_split.labels, dtype=np.int64))
    n_train = len(train_split)
    stream = recipe_math.batch_stream(n_train, recipe.batch_size, gen)  # every step sees batch_size examples
    log_every = max(1, recipe.steps // 20)
    loss_curve, running = [], []
    model.train()
    for step in range(1, recipe.steps + 1):
        lr = recipe_math.update_lr(step, recipe.lr, recipe.steps, recipe.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        # the whole update's batch is drawn first and sorted (kinder to the memory map), then cut into
        # micro-batches: the examples and their augmentation draws do not depend on the micro-batch size
        batch_idx = np.sort(next(stream))
        step_loss = 0.0
        for lo in range(0, len(batch_idx), micro):
            idx = batch_idx[lo : lo + micro]
            batch = torch.from_numpy(train_images[idx]).to(ctx.device)  # fancy indexing copies: writable
            target = labels[idx].to(ctx.device)
            x = train_augment(batch, prep_train, gen)
            # mean over the whole batch: each chunk's summed loss / batch size (exact for unequal chunks too)
            loss = F.cross_entropy(model(x), target, reduction="sum") / len(batch_idx)
            loss.backward()
            step_loss += loss.item()
        recipe_math.check_finite_loss(step_loss, step, lr)
        running.append(step_loss)
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        if step % log_every == 0 or step == recipe.steps:
            loss_curve.append({"step": step, "lr": lr, "loss": float(np.mean(running))})
            running = []
        ctx.progress(f"finetune {task.name}", step, recipe.steps)

    preds = predict(model, test_images, prep, ctx, desc=f"eval {task.name}")
    metrics = score(preds, test_split, task.metric)
    details = {
        "recipe": dict(vars(recipe)),
        "micro_batch": micro,
        "accumulation": n_micro,
        "lr_schedule": "update k uses the schedule at step k-1 (optax / vit_jax)",
        "dropout": model.weights_info.get("dropout"),
        "class_coverage": coverage,
        "loss_curve": loss_curve,
        "final_train_loss": loss_curve[-1]["loss"] if loss_curve else None,
        "n_train": n_train,
        "n_test": len(test_split),
        "train_split": train_name,
        "eval_split": eval_name,
        "epochs": recipe.steps * recipe.batch_size / max(n_train, 1),
        "examples_seen": recipe.steps * recipe.batch_size,
        "sampling": recipe_math.SAMPLING,
    }
    provenance = {
        "weights": getattr(model, "weights_info", {}),
        "preprocessing": {"eval": prep.to_dict(), "train": prep_train.to_dict(), "train_cache": prep_train.train_cache().cache_key(),
                          "note": "train augmentation is applied to the decoded cache resized to train_cache.size"},
        "train": train_split.provenance,
        "test": test_split.provenance,
        "train_fingerprint": train_split.fingerprint,
        "test_fingerprint": test_split.fingerprint,
    }
    return CellResult(metrics=metrics, details=details, provenance=provenance)
