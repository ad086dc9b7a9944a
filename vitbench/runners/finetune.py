"""Fine-tuning runner: train a backbone with a new zero-initialised head on a task's train split, score test.

Recipe (paper Table 4, §B.1.1): SGD momentum 0.9, no weight decay, global-norm clipping at 1, linear warm-up
then cosine decay to 0 (update k at the schedule's step k-1, as optax), the task's training augmentation
computed on the ORIGINAL image (`vitbench/data/train_pipeline.py`: TF's sample_distorted_bounding_box
inception crop, or resize + random crop, or none; optional flip; VTAB per task, docs/preprocessing.md),
randomness keyed by (seed, step, position in the batch), squash-resize for evaluation; the whole test split
is scored (vit_jax drops the last partial batch; we do not).

Execution (never changes what is computed beyond float rounding; all recorded in the details): bf16 autocast
on CUDA (`RunContext.precision`), micro-batches (`--micro-batch`, or probed on CUDA), DDP over the processes
of `torchrun` (`vitbench/distributed.py`: each process takes its slice of every batch and of the test split,
only rank 0 writes), in-cell checkpoints (`--checkpoint-every`, `vitbench/runners/checkpoint.py`): a killed
run resumes from the last one and ends with the same weights, and a per-step JSONL log beside the record
(`vitbench/runners/steplog.py`). The update itself is `vitbench/runners/trainer.py`.
Exercised by `vitbench finetune` and `vitbench run --method finetune` (through `vitbench/methods/finetune.py`,
which owns the parameters and the dev-split learning-rate selection).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from vitbench import finetune as recipe_math
from vitbench.cells import Cell, CellResult, RunContext
from vitbench.errors import CellFailed, VitbenchError

PIPELINE = 2  # FinetuneParams.pipeline: crops on the original image, randomness keyed by (seed, step, slot)


def _images(split, prep, ctx):
    from vitbench.data.transforms import resized_images

    images_dir = None if ctx.cache_dir is None else Path(ctx.cache_dir) / "images"  # same layout as few-shot
    return resized_images(split, prep, cache_dir=images_dir, progress=ctx.progress)


def predict(trainer, images: np.ndarray, ctx: RunContext, *, rank: int = 0, world: int = 1, desc: str = "eval") -> np.ndarray:
    """Argmax class ids for uint8 NHWC `images`, in order. Under DDP each process scores its contiguous slice
    and the slices are gathered in rank order: every test example is scored exactly once."""
    from vitbench import distributed as dist

    trainer.module.eval()
    n = len(images)
    lo, hi = rank * n // world, (rank + 1) * n // world
    preds = []
    for start in range(lo, hi, ctx.eval_batch_size):
        stop = min(start + ctx.eval_batch_size, hi)
        preds.append(trainer.predict(torch.from_numpy(np.array(images[start:stop]))).cpu().numpy())
        if rank == 0:
            ctx.progress(desc, stop - lo, hi - lo)
    mine = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    return np.concatenate(dist.all_gather_object(mine)) if world > 1 else mine


def score(preds: np.ndarray, split, metric: str) -> dict[str, float]:
    """top-1 accuracy over the whole split, plus ReaL accuracy when the split carries ReaL label sets."""
    from vitbench.features import classification_metrics

    return classification_metrics(preds, split, metric)


def train_preprocessing(prep, recipe):
    """The training augmentation of `recipe` on top of the eval preprocessing `prep`; training reads the cache
    `train_preprocessing(...).train_cache()` (at `train_resize` for "resize_crop", else at the eval size)."""
    return dataclasses.replace(prep, train_crop=recipe.train_crop, hflip=recipe.hflip, train_resize=recipe.train_resize)


def _loss_curve(losses: list[float], lrs: list[float], steps: int) -> list[dict[str, float]]:
    """About 20 points: the mean training loss of each window of steps // 20 updates, and the window's last lr."""
    every = max(1, steps // 20)
    curve = []
    for end in range(every, len(losses) + 1, every):
        curve.append({"step": end, "lr": lrs[end - 1], "loss": float(np.mean(losses[end - every:end]))})
    if losses and (not curve or curve[-1]["step"] != len(losses)):
        start = curve[-1]["step"] if curve else 0
        curve.append({"step": len(losses), "lr": lrs[-1], "loss": float(np.mean(losses[start:]))})
    return curve


def _first_bad(losses: list[float], first_step: int) -> int | None:
    for i, value in enumerate(losses):
        if not np.isfinite(value):
            return first_step + i
    return None


def _rng_state(device: str) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if str(device).startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: str) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and str(device).startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"], device)


def _rank_seed(seed: int, rank: int) -> int:
    from vitbench.hashing import json_sha256

    return int(json_sha256({"dropout_seed": seed, "rank": rank}, 15), 16)


def _usable(state, path, fingerprint: str, execution: dict[str, Any], random_per_chunk: bool):
    """The checkpoint's state when this run may continue it, else None (with a warning: the cell starts at 0).

    Refused: a checkpoint trained on other data; and, when dropout or BatchNorm make each chunk's computation
    depend on how the batch is cut, one saved with another micro-batch or number of processes (resuming would
    not be the run it claims to continue). Other changes (precision, device) are kept in `segments`."""
    if not state:
        return None
    why = None
    if state.get("train_fingerprint") != fingerprint:
        why = "was trained on other data than the split has now"
    elif "segments" not in state or "rngs" not in state:
        why = "predates execution segments"
    elif random_per_chunk:
        last = state["segments"][-1]
        if (last.get("micro_batch"), last.get("processes")) != (execution["micro_batch"], execution["processes"]):
            why = (f"was saved with micro-batch {last.get('micro_batch')} x {last.get('processes')} process(es), this run "
                   f"has {execution['micro_batch']} x {execution['processes']}; with dropout or BatchNorm that changes the training")
    if why:
        warnings.warn(f"checkpoint {path} {why}; the cell starts from step 0", stacklevel=3)
        return None
    return state


@contextlib.contextmanager
def _one_rank_failure_ends_the_job(world: int, rank: int):
    """Under DDP an error on one process (a corrupt image in its slice, out of memory) would leave the others
    waiting in a collective until the timeout: it ends the job instead, with one line (torchrun stops the
    others). The same command resumes the cell from its last checkpoint. NaN losses are seen by every process
    at the same step (the loss is all-reduced) and fail the cell normally."""
    try:
        yield
    except CellFailed:
        raise
    except Exception as exc:  # noqa: BLE001
        if world == 1:
            raise
        print(f"vitbench: process {rank} of {world}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
              "an error in one process ends a torchrun job (no failure record); once its cause is fixed (e.g. --skip-corrupt "
              "for unreadable images), the same command resumes from the last checkpoint",
              file=sys.stderr, flush=True)
        os._exit(1)


def train_and_score(cell: Cell, ctx: RunContext, recipe: Mapping[str, Any]) -> CellResult:
    """Fine-tune `cell.model` on `cell.task` with `recipe` (`vitbench.methods.finetune.recipe`), score the eval split."""
    import time

    from vitbench import distributed as dist
    from vitbench.data import load_split
    from vitbench.data.order import check_class_coverage
    from vitbench.data.train_pipeline import TrainBatches
    from vitbench.data.transforms import normalize, preprocessing_for
    from vitbench.models import create
    from vitbench.models.backbone import state_dict_sha256
    from vitbench.runners.checkpoint import CellCheckpoint, save_on_signal
    from vitbench.runners.steplog import StepLog
    from vitbench.runners.trainer import Trainer, describe_precision

    if dist.launched_by_torchrun() and not dist.active():
        dist.init(ctx.device)
    rank, world = dist.rank(), dist.world()
    main = rank == 0
    # micro_batch travels on the cell, outside the key (the batch stream does not depend on it)
    recipe = SimpleNamespace(**{**recipe, "micro_batch": cell.micro_batch or recipe.get("micro_batch")})
    if recipe.batch_size % world:
        raise VitbenchError(f"batch size {recipe.batch_size} does not split over {world} processes; "
                            f"run with a number of processes that divides it")
    task = cell.task
    torch.manual_seed(cell.seed)  # the new head is zero; random-init weights and dropout draw from this
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
    n_train = len(train_split)
    if n_train < 1:
        raise VitbenchError(f"task {task.name!r} split {train_name!r} is empty; nothing to fine-tune on")

    trainer = Trainer(model, device=ctx.device, global_batch=recipe.batch_size, micro_batch=recipe.micro_batch,
                      momentum=recipe.momentum, weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip,
                      precision=ctx.precision, compile=ctx.compile, grad_checkpointing=ctx.grad_checkpointing,
                      world=world, normalize=lambda x: normalize(x, prep_train), img_px=prep.size)
    if rank:  # dropout masks must differ between processes (rank 0 keeps the one-process stream)
        torch.manual_seed(_rank_seed(cell.seed, rank))
    execution = {"from_step": 0, "device": str(ctx.device).split(":")[0], "precision": describe_precision(trainer.dtype),
                 "processes": world, "micro_batch": trainer.micro}
    ckpt = CellCheckpoint(ctx.cell_files, cell.key, ctx.checkpoint, writer=main, sync_every=min(ctx.log_every, 50))
    state = _usable(ckpt.load(), ckpt.path, train_split.fingerprint, execution,
                    random_per_chunk=bool(recipe.dropout) or trainer.has_batchnorm)
    start = int(state["step"]) if state else 0
    if world > 1 and dist.all_gather_object(start) != [start] * world:
        raise VitbenchError(f"the checkpoint {ckpt.path} is not visible to every process; put the results folder on a shared file system")
    losses, norms, lrs, resumes, segments, bad = [], [], [], [], [execution], None
    if state:
        trainer.load_state_dict(state["trainer"])
        losses, norms, lrs = list(state["losses"]), list(state["grad_norms"]), list(state["lrs"])
        resumes = list(state.get("resumes", [])) + [start]
        segments = list(state["segments"]) + [{**execution, "from_step": start}]  # how each stretch of steps ran
    steplog = StepLog(ctx.cell_files, writer=main, resume_step=start)
    images_dir = None if ctx.cache_dir is None else Path(ctx.cache_dir) / "images"
    batches = TrainBatches(train_split, prep_train, seed=cell.seed, batch_size=recipe.batch_size, start_step=start,
                           rank=rank, world=world, workers=ctx.loader_workers, cache_dir=images_dir,
                           progress=ctx.progress, pin_memory=str(ctx.device).startswith("cuda"), device=ctx.device)
    model.train()
    window_start, window_t0 = start, time.perf_counter()
    train_t0 = window_t0
    with _one_rank_failure_ends_the_job(world, rank), save_on_signal():
        try:
            stream = iter(batches)
            first = next(stream)  # starts the loader, which may draw from torch's global RNG: before the RNG is restored
            if state:
                # dropout continues from this process's draws (another process count: refused above when it matters)
                _set_rng_state(state["rngs"][rank] if rank < len(state["rngs"]) else state["rngs"][0], ctx.device)
            for step, images, labels in itertools.chain([first], stream):
                if step > recipe.steps:
                    break
                lr = recipe_math.update_lr(step, recipe.lr, recipe.steps, recipe.warmup_steps)
                trainer.update(images, labels, lr)
                lrs.append(lr)
                if main:
                    ctx.progress(f"finetune {task.name}", step, recipe.steps)
                # one host sync per window, at steps every process agrees on (so all of them fail together on a NaN);
                # `due` is asked on every rank at every step (under DDP the ranks agree on rank 0's clock)
                due = ckpt.due(step, recipe.steps)
                if step % ctx.log_every and step != recipe.steps and not due:
                    continue
                new_losses, new_norms = trainer.pop_history()
                losses += new_losses
                norms += new_norms
                seconds = time.perf_counter() - window_t0
                rate = (step - window_start) * recipe.batch_size / max(seconds, 1e-9)
                steplog.write([{"step": s, "lr": lrs[s - 1], "loss": losses[s - 1], "grad_norm": norms[s - 1],
                                "images_per_s": rate} for s in range(window_start + 1, step + 1)])
                window_start, window_t0 = step, time.perf_counter()
                if bad is None:  # a NaN gradient norm with a finite loss leaves NaN weights all the same
                    bad = _first_bad([a + b for a, b in zip(new_losses, new_norms)], step - len(new_losses) + 1)
                if bad is not None and (step % ctx.log_every == 0 or step == recipe.steps):
                    raise CellFailed(
                        f"fine-tuning diverged: training loss {losses[bad - 1]}, gradient norm {norms[bad - 1]} at step {bad} (learning rate {lrs[bad - 1]:g}); "
                        "no number is recorded for this cell (its failure record says why). Lower --lr (or the suite's finetune.lr)")
                if bad is None and due:
                    # every process's RNG (each draws its own dropout masks); the gather is on every rank
                    rngs = dist.all_gather_object(_rng_state(ctx.device)) if world > 1 else [_rng_state(ctx.device)]
                    ckpt.save({"step": step, "trainer": trainer.state_dict(), "rngs": rngs, "segments": segments,
                               "train_fingerprint": train_split.fingerprint,
                               "losses": losses, "grad_norms": norms, "lrs": lrs, "resumes": resumes, "loader": batches.info})
        finally:
            batches.close()
            steplog.close()
        train_s = time.perf_counter() - train_t0

        test_images = _images(test_split, prep, ctx)
        preds = predict(trainer, test_images, ctx, rank=rank, world=world, desc=f"eval {task.name}")
    nonfinite = int(trainer.nonfinite_logits) if trainer.nonfinite_logits is not None else 0
    if world > 1:
        nonfinite = sum(dist.all_gather_object(nonfinite))
    if nonfinite:  # argmax of NaN logits is class 0: a plausible chance-level number
        raise CellFailed(f"the fine-tuned model gives non-finite logits for {nonfinite} of {len(test_split)} evaluation images; "
                         "no number is recorded for this cell. Lower --lr (or the suite's finetune.lr)")
    metrics = score(preds, test_split, task.metric)
    micro = trainer.micro
    details = {
        "recipe": dict(vars(recipe)),
        "micro_batch": micro,
        "accumulation": trainer.local_batch // micro,
        "micro_batch_choice": trainer.micro_info,
        "lr_schedule": "update k uses the schedule at step k-1 (optax / vit_jax)",
        "dropout": model.weights_info.get("dropout"),
        "class_coverage": coverage,
        "loss_curve": _loss_curve(losses, lrs, recipe.steps),
        "final_train_loss": float(np.mean(losses[-max(1, recipe.steps // 20):])) if losses else None,
        "final_grad_norm": norms[-1] if norms else None,
        "n_train": n_train,
        "n_test": len(test_split),
        "train_split": train_name,
        "eval_split": eval_name,
        "epochs": recipe.steps * recipe.batch_size / n_train,
        "examples_seen": recipe.steps * recipe.batch_size,
        "sampling": recipe_math.SAMPLING,
        "execution": {"precision": describe_precision(trainer.dtype) + (" (training and evaluation)" if trainer.dtype else ""),
                      "processes": world, "compile": trainer.compiled, "segments": segments,
                      "grad_checkpointing": trainer.grad_checkpointing, "resumed_from_steps": resumes,
                      "train_seconds_this_run": round(train_s, 3), "log_every": ctx.log_every,
                      "checkpoint": ctx.checkpoint.describe(), "checkpoints_written": ckpt.saves,
                      "loader": batches.info},
        # a digest of the trained weights: equal digests mean identical training (e.g. resumed vs uninterrupted)
        "final_weights_sha256": state_dict_sha256(trainer.module.state_dict()),
    }
    provenance = {
        "weights": getattr(model, "weights_info", {}),
        "preprocessing": {"eval": prep.to_dict(), "train": prep_train.to_dict(),
                          "note": "train augmentation computed on the original decoded image (or its exact resized "
                                  "cache for resize_crop / none): details.execution.loader"},
        "train": train_split.provenance,
        "test": test_split.provenance,
        "train_fingerprint": train_split.fingerprint,
        "test_fingerprint": test_split.fingerprint,
    }
    return CellResult(metrics=metrics, details=details, provenance=provenance)
