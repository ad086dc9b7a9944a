"""Full fine-tuning (the paper's VTAB / ImageNet recipe): parameters, cells, dev-split learning-rate selection.

Owns the recipe defaults (paper Table 4, §B.1.1; vit_jax `configs/common.py`): SGD momentum 0.9, batch 512,
linear warm-up then cosine decay, no weight decay, global-norm clipping at 1, 384 px, inception crop +
flip (the VTAB suites set BiT's per-task resize / random crop / flip), straight (squash) bilinear resize for
evaluation with big_vision's resize. An `lr` list is a grid: one cell per lr, or with
`lr_select = "dev"` (paper §B.1.1) one `stage = "select"` cell per lr trained on `select_train_split` and
scored on `select_eval_split`, and one `stage = "final"` cell that depends on them, retrains the best lr
on the task's training split and scores its test split. The training loop is `vitbench/runners/finetune.py`.
Exercised by `vitbench finetune` and `vitbench run --method finetune`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from vitbench.errors import VitbenchError
from vitbench.methods.base import (
    EXECUTION, Method, MethodParams, as_list, check_img_size, check_preprocessing, check_resize_impl, check_seeds, is_int,
    register,
)

TRAIN_CROPS = ("inception", "resize_crop", "none")
LR_SELECT = ("none", "dev")
# The settings of one training run, written into each record's details["recipe"].
RECIPE_FIELDS = ("steps", "lr", "batch_size", "warmup_steps", "momentum", "weight_decay", "grad_clip", "train_crop",
                 "train_resize", "hflip", "micro_batch", "dropout", "sampling", "pipeline")
# The training input pipeline's version (a key field, so records of an older pipeline never pass for new ones):
# 2 = crops computed on the original image (TF's sample_distorted_bounding_box for "inception"), randomness
# keyed by (seed, step, position in the batch): vitbench/data/train_pipeline.py. (1 cut crops from the
# decoded resized cache with one sequential generator; no longer run.)
PIPELINES = (2,)


@dataclass(frozen=True)
class FinetuneParams(MethodParams):
    steps: int = 2500
    lr: Any = 0.01  # a number, or a list of them (a grid: one cell each, or chosen on a dev split)
    batch_size: int = 512
    warmup_steps: int = 500  # vit_jax configs/common.py default; the paper states none for VTAB
    momentum: float = 0.9
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # "inception" (vit_jax), "resize_crop" (resize to train_resize, random img_size crop; BiT / Google's
    # ViT-on-VTAB config) or "none"; the VTAB suites set it per task (docs/preprocessing.md)
    train_crop: str = "inception"
    train_resize: int | None = None  # "resize_crop" only; default img_size * 448 / 384
    hflip: bool = True
    seeds: Any = field(default_factory=lambda: [0], metadata=EXECUTION)
    img_size: int | None = field(default=384, metadata=EXECUTION)
    micro_batch: int | None = field(default=None, metadata=EXECUTION)  # memory bound only: the batch stays batch_size
    interpolation: str = "bilinear"  # eval: straight (squash) resize of the whole image, as vit_jax's input pipeline
    resize_impl: str = "tf"  # TF's bilinear resize without antialiasing, truncated (big_vision / vit_jax); or "pil"
    # vit_jax's dropout_rate, placed as vit_jax does (after position embeddings, attention output, MLP denses).
    # AugReg practice and vit_jax B/16: 0; L/16 and H/14 configs used 0.1: set it per suite
    dropout: float = 0.0
    # "none" runs every lr on the training split; "dev" selects it on (select_train_split -> select_eval_split)
    lr_select: str = "none"
    select_train_split: str = ""
    select_eval_split: str = ""
    # Training batches: "stream" = vit_jax's ds.repeat().shuffle().batch(), epochs reshuffled and crossed by
    # batches, so every step sees batch_size examples even when the split is smaller (`finetune.batch_stream`).
    sampling: str = "stream"
    pipeline: int = 2

    def check(self, where: str) -> None:
        check_seeds(self.seeds, where)
        check_img_size(self.img_size, where)
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise VitbenchError(f"{where}: finetune {name} must be a positive integer, got {value!r}")
        lrs = as_list(self.lr)
        if not lrs or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf for v in lrs):
            raise VitbenchError(f"{where}: finetune lr must be a positive finite number or a list of them (a grid), got {self.lr!r}")
        check_preprocessing("squash", self.interpolation, 1.0, where)
        check_resize_impl(self.resize_impl, self.interpolation, where)
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise VitbenchError(f"{where}: finetune dropout must be in [0, 1), got {self.dropout!r}")
        if self.sampling != "stream":
            raise VitbenchError(f"{where}: finetune sampling must be 'stream' (the only batch sampler), got {self.sampling!r}")
        if self.pipeline not in PIPELINES or isinstance(self.pipeline, bool):
            raise VitbenchError(f"{where}: finetune pipeline must be one of {list(PIPELINES)} (the training input pipeline's version), got {self.pipeline!r}")
        if self.lr_select not in LR_SELECT:
            raise VitbenchError(f"{where}: finetune lr_select must be 'none' or 'dev', got {self.lr_select!r}")
        if self.train_crop not in TRAIN_CROPS or not isinstance(self.hflip, bool):
            raise VitbenchError(f"{where}: finetune train_crop must be one of {list(TRAIN_CROPS)} and hflip true/false, got {self.train_crop!r} / {self.hflip!r}")
        if self.train_resize is not None and (not is_int(self.train_resize) or self.train_resize < (self.img_size or 1)):
            raise VitbenchError(f"{where}: finetune train_resize must be an integer >= img_size ({self.img_size}), got {self.train_resize!r}")
        if not is_int(self.warmup_steps) or not 0 <= self.warmup_steps < self.steps:
            raise VitbenchError(
                f"{where}: finetune warmup_steps must be in [0, steps) (got {self.warmup_steps!r} with steps={self.steps}); "
                "with warmup == steps the cosine schedule divides by zero"
            )
        if self.micro_batch is not None and (not is_int(self.micro_batch) or self.micro_batch < 1):
            raise VitbenchError(f"{where}: finetune micro_batch must be a positive integer, got {self.micro_batch!r}")
        for name in ("momentum", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise VitbenchError(f"{where}: finetune {name} must be a number >= 0, got {value!r}")


class Finetune(Method):
    name = "finetune"
    summary = "full fine-tuning with a new zero-initialised head (SGD 0.9, warm-up + cosine, clip 1; paper Table 4)"
    Params = FinetuneParams
    label_params = ("steps", "lr", "stage")

    def check_task(self, params: FinetuneParams, task, where: str) -> None:
        if params.lr_select != "dev":
            return
        for role in ("select_train_split", "select_eval_split"):
            if getattr(params, role) not in task.splits:
                raise VitbenchError(
                    f"{where}: task {task.name!r}: lr_select = 'dev' needs finetune.{role} naming one of its splits "
                    f"{sorted(task.splits)}, got {getattr(params, role)!r}"
                )

    def expand(self, params: FinetuneParams) -> list[dict[str, Any]]:
        key_params = params.key_params()
        lrs = [float(lr) for lr in as_list(params.lr)]
        if params.lr_select == "dev" and len(lrs) > 1:
            selection = [{**key_params, "lr": lr, "stage": "select"} for lr in lrs]
            return selection + [{**key_params, "lr": None, "lr_grid": lrs, "stage": "final"}]
        return [{**key_params, "lr": lr} for lr in lrs]

    def dependencies(self, cell):
        """The dev-split cells whose scores choose the learning rate of a `stage = "final"` cell."""
        if cell.params.get("stage") != "final":
            return []
        base = {k: v for k, v in cell.params.items() if k not in ("lr_grid", "stage")}
        return [dataclasses.replace(cell, params={**base, "lr": lr, "stage": "select"}) for lr in cell.params["lr_grid"]]

    def run_cell(self, cell, ctx, deps):
        from vitbench.runners.finetune import train_and_score

        params = cell.params
        if params.get("stage") != "final":
            return train_and_score(cell, ctx, recipe(params))
        lr, scores = choose_lr(cell.task.metric, deps)  # retrain the lr chosen on the dev split
        result = train_and_score(dataclasses.replace(cell, params={**params, "lr": lr}), ctx, recipe({**params, "lr": lr}))
        result.details["lr_selection"] = {"chosen_lr": lr, "dev_scores": scores,
                                          "train_split": params["select_train_split"],
                                          "eval_split": params["select_eval_split"]}
        return result

    def setting(self, rec) -> str:
        p = rec.get("params") or {}
        base = f"{p.get('steps')} steps, batch {p.get('batch_size')}"
        if p.get("stage") == "select":
            return f"{base}, lr {p.get('lr'):g} (dev: {p.get('select_train_split')} -> {p.get('select_eval_split')})"
        if p.get("stage") == "final":
            chosen = ((rec.get("details") or {}).get("lr_selection") or {}).get("chosen_lr")
            grid = ", ".join(f"{v:g}" for v in p.get("lr_grid") or [])
            return f"{base}, lr {chosen:g} chosen on dev from [{grid}]" if chosen is not None else f"{base}, lr from [{grid}]"
        return f"{base}, lr {p.get('lr'):g}"


register(Finetune())


def recipe(params: dict[str, Any]) -> dict[str, Any]:
    """The training settings of one cell (every recipe field; `micro_batch` None when not set)."""
    return {k: params.get(k) for k in RECIPE_FIELDS}


def choose_lr(metric: str, selection_records: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """The grid lr with the best dev-split score (ties: the smaller lr), from the selection cells' records."""
    if not selection_records:
        raise VitbenchError("dev-split learning-rate selection needs the selection runs' records")
    scores: dict[str, float] = {}
    for rec in selection_records:
        scores[repr(rec["params"]["lr"])] = float(rec["metrics"].get(metric, rec["metrics"]["top1"]))
    best = max(sorted(scores, key=float), key=lambda k: scores[k])
    return float(best), scores
