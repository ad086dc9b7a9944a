"""Planner: expand a suite into cells, skip finished ones (resume), and execute the rest.

Parameters resolve in three layers: the protocol defaults below (the paper / big_vision), then the suite
file's `[defaults]`, `[fewshot]` and `[finetune]` tables, then command-line overrides. Exercised by
`vitbench run`, `vitbench fewshot` and `vitbench finetune` (`--dry-run` prints the plan, `--shard i/n` runs
a slice of it, so several machines or GPUs can share one results folder).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench import results
from vitbench.cells import Cell, CellResult, RunContext
from vitbench.errors import VitbenchError
from vitbench.suites import METHODS, Suite, TaskSpec

# big_vision `get_fewshot_lsr` defaults (fewshot_and_paper.md §1.3); grid 2^-10..2^19 as scenic/vmoe (§1.4).
FEWSHOT_DEFAULTS: dict[str, Any] = {
    "shots": [1, 5, 10, 25],
    "seeds": [0, 1, 2],
    "l2": 2.0**10,
    "l2_select": "fixed",
    "l2_grid": [2.0**e for e in range(-10, 20)],
    "precision": "float64",
    "cv_folds": 5,
    "img_size": None,
    # big_vision's few-shot preprocessing: resize both sides to 256 (bilinear, aspect not kept), central crop 224
    # (fewshot_and_paper.md §1.3); at other sizes the same ratio, size / 0.875.
    "resize": "squash_crop",
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    # big_vision's resize op: TF bilinear without antialiasing, truncated to uint8 ("pil": PIL's resize)
    "resize_impl": "tf",
    # big_vision reads out["pre_logits"]: tanh(Dense) when the checkpoint has a representation layer, else the
    # class token after the final LayerNorm ("cls": always the class token); docs/preprocessing.md
    "feature_layer": "pre_logits",
}
# The paper's recipe (Table 4, §B.1.1): SGD momentum 0.9, batch 512, cosine decay, no weight decay, global-norm
# clipping at 1, 384 px, inception crop + flip (vit_jax); the VTAB suites set BiT's per-task resize / random crop /
# flip instead (docs/preprocessing.md).
FINETUNE_DEFAULTS: dict[str, Any] = {
    "steps": 2500,
    "lr": 0.01,
    "batch_size": 512,
    "warmup_steps": 500,  # vit_jax configs/common.py default; the paper states none for VTAB (§1.2, §1.5)
    "momentum": 0.9,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "train_crop": "inception",  # or "resize_crop" (resize to train_resize, random crop) or "none"; VTAB: per task
    "train_resize": None,  # "resize_crop" only: side before the random crop (default img_size * 448 / 384)
    "hflip": True,
    "seeds": [0],
    "img_size": 384,
    "micro_batch": None,
    # eval: straight (squash) resize of the whole image, bilinear, as vit_jax's input pipeline (§1.2)
    "interpolation": "bilinear",
    "resize_impl": "tf",
    "dropout": 0.0,  # AugReg practice and vit_jax B/16 (§1.2); L/16 and H/14 configs used 0.1: set it per suite
    # Learning-rate selection over an `lr` grid (paper §B.1.1): "none" runs every lr on the training split;
    # "dev" trains each lr on `select_train_split`, scores `select_eval_split`, then retrains the best lr on the
    # task's training split and scores its test split (one final cell).
    "lr_select": "none",
    "select_train_split": "",
    "select_eval_split": "",
}
TRAIN_CROPS = ("inception", "resize_crop", "none")
FEATURE_LAYERS = ("pre_logits", "cls")
POS_INTERP = ("bilinear", "bicubic")  # bilinear align-corners = Google's resize; bicubic = timm / torchvision
L2_SELECT_MODES = ("fixed", "mean-rank", "leave-self-out", "cv")
# Parameters that do not change the number (execution details) stay out of the cell key; `micro_batch` travels
# on the cell outside its key (the training batch stream does not depend on it).
NOT_IN_KEY = {"seeds", "img_size", "micro_batch"}


@dataclass
class Plan:
    cells: list[Cell]
    done: list[Cell] = field(default_factory=list)
    todo: list[Cell] = field(default_factory=list)


def _merge(*layers: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if v is not None:
                out[k] = v
    return out


def method_params(suite: Suite, method: str, overrides: dict[str, Any] | None = None, task: TaskSpec | None = None) -> dict[str, Any]:
    """Resolved parameters of `method` (defaults < suite table < the task's own table < overrides), validated."""
    base = FEWSHOT_DEFAULTS if method == "fewshot" else FINETUNE_DEFAULTS
    table = suite.fewshot if method == "fewshot" else suite.finetune
    task_table = (task.fewshot if method == "fewshot" else task.finetune) if task is not None else {}
    _check_fields(table, base, f"{suite.path}: [{method}]")
    if task is not None:
        _check_fields(task_table, base, f"{suite.path}: task {task.name!r} field '{method}'")
    img = {"img_size": suite.defaults.get("img_size")}
    from_files = _merge(base, img, table, task_table)
    _validate(from_files, method, f"{suite.path}" + (f": task {task.name!r}" if task else ""))
    params = _merge(from_files, overrides)
    if overrides and any(v is not None for v in overrides.values()):
        _validate(params, method, "command-line options")
    return params


def _check_fields(table: dict[str, Any], valid: dict[str, Any], where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise VitbenchError(f"{where}: unknown field(s) {unknown}; valid: {sorted(valid)}")


def _as_list(value: Any) -> list:
    """A list of the values, duplicates dropped (first occurrence kept): `--shots 1,1` is one cell."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return list(dict.fromkeys(values))


def _validate(params: dict[str, Any], method: str, where: str) -> None:
    seeds = _as_list(params["seeds"])
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise VitbenchError(f"{where}: seeds must be non-negative integers, got {params['seeds']!r}")
    if params.get("img_size") is not None and (not isinstance(params["img_size"], int) or params["img_size"] < 8):
        raise VitbenchError(f"{where}: img_size must be an integer >= 8, got {params['img_size']!r}")
    if method == "fewshot":
        shots = _as_list(params["shots"])
        if not shots or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in shots):
            raise VitbenchError(f"{where}: shots must be positive integers like 1,5,10,25, got {params['shots']!r}")
        if params["l2_select"] not in L2_SELECT_MODES:
            raise VitbenchError(f"{where}: l2_select must be one of {list(L2_SELECT_MODES)}, got {params['l2_select']!r}")
        if not (isinstance(params["l2"], (int, float)) and params["l2"] > 0 and math.isfinite(params["l2"])):
            raise VitbenchError(f"{where}: l2 must be a positive number, got {params['l2']!r}")
        _check_preprocessing(params, where)
        if params["feature_layer"] not in FEATURE_LAYERS:
            raise VitbenchError(f"{where}: feature_layer must be one of {list(FEATURE_LAYERS)}, got {params['feature_layer']!r}")
        if params["precision"] not in ("float64", "float32", "mixed"):
            raise VitbenchError(f"{where}: precision must be float64, mixed (float64 solve, float32 prediction) or float32, got {params['precision']!r}")
    else:
        for name in ("steps", "batch_size"):
            if not isinstance(params[name], int) or isinstance(params[name], bool) or params[name] < 1:
                raise VitbenchError(f"{where}: finetune {name} must be a positive integer, got {params[name]!r}")
        lrs = _as_list(params["lr"])
        if not lrs or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in lrs):
            raise VitbenchError(f"{where}: finetune lr must be a positive number or a list of them (a grid), got {params['lr']!r}")
        _check_preprocessing({**params, "resize": "squash", "crop_pct": 1.0}, where)
        if not (isinstance(params["dropout"], (int, float)) and 0.0 <= params["dropout"] < 1.0):
            raise VitbenchError(f"{where}: finetune dropout must be in [0, 1), got {params['dropout']!r}")
        if params["lr_select"] not in ("none", "dev"):
            raise VitbenchError(f"{where}: finetune lr_select must be 'none' or 'dev', got {params['lr_select']!r}")
        if params["train_crop"] not in TRAIN_CROPS or not isinstance(params["hflip"], bool):
            raise VitbenchError(f"{where}: finetune train_crop must be one of {list(TRAIN_CROPS)} and hflip true/false, got {params['train_crop']!r} / {params['hflip']!r}")
        resize_to = params.get("train_resize")
        if resize_to is not None and (not isinstance(resize_to, int) or isinstance(resize_to, bool) or resize_to < (params.get("img_size") or 1)):
            raise VitbenchError(f"{where}: finetune train_resize must be an integer >= img_size ({params.get('img_size')}), got {resize_to!r}")
        micro = params.get("micro_batch")
        if micro is not None and (not isinstance(micro, int) or isinstance(micro, bool) or micro < 1):
            raise VitbenchError(f"{where}: finetune micro_batch must be a positive integer, got {micro!r}")
        if not isinstance(params["warmup_steps"], int) or not 0 <= params["warmup_steps"] < params["steps"]:
            raise VitbenchError(
                f"{where}: finetune warmup_steps must be in [0, steps) (got {params['warmup_steps']!r} with steps={params['steps']}); "
                "with warmup == steps the cosine schedule divides by zero"
            )


def _check_preprocessing(params: dict[str, Any], where: str) -> None:
    from vitbench.data.transforms import PIL_INTERPOLATION, RESIZE_IMPLS, RESIZE_MODES

    if params["resize_impl"] not in RESIZE_IMPLS:
        raise VitbenchError(f"{where}: resize_impl must be one of {list(RESIZE_IMPLS)} (tf = big_vision's resize, pil = PIL's), got {params['resize_impl']!r}")
    if params["resize_impl"] == "tf" and params["interpolation"] != "bilinear":
        raise VitbenchError(f"{where}: resize_impl 'tf' is bilinear only, got interpolation {params['interpolation']!r}; set resize_impl = 'pil' for other filters")

    if params["resize"] not in RESIZE_MODES:
        raise VitbenchError(f"{where}: resize must be one of {list(RESIZE_MODES)}, got {params['resize']!r}")
    if params["interpolation"] not in PIL_INTERPOLATION:
        raise VitbenchError(f"{where}: interpolation must be one of {sorted(PIL_INTERPOLATION)}, got {params['interpolation']!r}")
    if not (isinstance(params["crop_pct"], (int, float)) and 0.1 <= params["crop_pct"] <= 1.0):
        raise VitbenchError(f"{where}: crop_pct must be in [0.1, 1], got {params['crop_pct']!r}")


def resolve_weights_id(model: str, weights: str) -> str:
    from vitbench.models import resolve_weights_id as _resolve

    return _resolve(model, weights)


def expand(
    suite: Suite,
    models: Iterable[str],
    methods: Iterable[str],
    *,
    weights: str = "default",
    tasks: list[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    pos_interp: str = "bilinear",
) -> list[Cell]:
    """Cells for task x model x method x params x seed, in a stable order."""
    overrides = overrides or {}
    if pos_interp not in POS_INTERP:
        raise VitbenchError(f"position-embedding interpolation must be one of {list(POS_INTERP)}, got {pos_interp!r}")
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise VitbenchError(f"unknown method {m!r}; use one of {list(METHODS)} or 'all'")
    selected = suite.select(tasks)
    cells: list[Cell] = []
    for model in models:
        weights_id = resolve_weights_id(model, weights)
        for method in methods:
            for task in selected:
                params = method_params(suite, method, overrides.get(method), task)
                if method == "finetune" and params["lr_select"] == "dev":
                    _check_dev_splits(params, task, suite.path)
                for variant in _variants(method, params):
                    for seed in _as_list(params["seeds"]):
                        cells.append(
                            Cell(
                                suite=suite.name, task=task, model=model, weights=weights, method=method,
                                params=variant, seed=seed, img_size=params.get("img_size"), weights_id=weights_id,
                                pos_interp=pos_interp, micro_batch=params.get("micro_batch"),
                            )
                        )
    return cells


def _check_dev_splits(params: dict[str, Any], task: TaskSpec, where: str) -> None:
    for role in ("select_train_split", "select_eval_split"):
        if params[role] not in task.splits:
            raise VitbenchError(
                f"{where}: task {task.name!r}: lr_select = 'dev' needs finetune.{role} naming one of its splits "
                f"{sorted(task.splits)}, got {params[role]!r}"
            )


def selection_cells(final: Cell) -> list[Cell]:
    """The dev-split cells whose scores choose the learning rate of a `stage = "final"` fine-tuning cell."""
    base = {k: v for k, v in final.params.items() if k not in ("lr_grid", "stage")}
    return [dataclasses.replace(final, params={**base, "lr": lr, "stage": "select"}) for lr in final.params["lr_grid"]]


def choose_lr(final: Cell, out_dir: Path) -> tuple[float, dict[str, float]]:
    """The grid lr with the best dev-split score (ties: the smaller lr), from the selection cells' records."""
    scores: dict[str, float] = {}
    for cell in selection_cells(final):
        rec = results.read_record(results.record_path(out_dir, cell))
        if rec is None:
            raise VitbenchError(
                f"{final.label}: the dev-split run for lr={cell.params['lr']:g} has no record in {out_dir}; "
                "run the whole plan (not a --shard of it) so selection runs finish before the final run"
            )
        metric = final.task.metric
        scores[repr(cell.params["lr"])] = float(rec["metrics"].get(metric, rec["metrics"]["top1"]))
    best = max(sorted(scores, key=float), key=lambda k: scores[k])
    return float(best), scores


def _variants(method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One parameter set per cell: few-shot over shots, fine-tuning over a learning-rate grid."""
    key_params = {k: v for k, v in params.items() if k not in NOT_IN_KEY}
    if method == "fewshot":
        variants = [{**key_params, "shots": s} for s in _as_list(params["shots"])]
        if params["l2_select"] == "fixed":
            for v in variants:
                v["l2_grid"] = []  # only the fixed value is solved; recorded as such
        return variants
    lrs = [float(lr) for lr in _as_list(params["lr"])]
    if params["lr_select"] == "dev" and len(lrs) > 1:
        selection = [{**key_params, "lr": lr, "stage": "select"} for lr in lrs]
        return selection + [{**key_params, "lr": None, "lr_grid": lrs, "stage": "final"}]
    return [{**key_params, "lr": lr} for lr in lrs]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`'i/n'` (1-based) -> (i, n); None passes through."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VitbenchError(f"--shard must look like i/n (e.g. 2/4), got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise VitbenchError(f"--shard {text!r}: need 1 <= i <= n")
    return i, n


def plan(cells: list[Cell], out_dir: Path, *, force: bool = False, shard: tuple[int, int] | None = None) -> Plan:
    """Split `cells` into done (a valid record exists) and todo; `shard` keeps every n-th cell by key."""
    if shard:
        i, n = shard
        cells = [c for c in cells if int(c.key, 16) % n == i - 1]
    p = Plan(cells=cells)
    for c in cells:
        (p.todo if force or not results.is_done(out_dir, c) else p.done).append(c)
    return p


Runner = Callable[[Cell, RunContext], CellResult]


def runner_for(method: str) -> Runner:
    if method == "fewshot":
        from vitbench.runners.fewshot import run_cell
    elif method == "finetune":
        from vitbench.runners.finetune import run_cell
    else:
        raise VitbenchError(f"unknown method {method!r}")
    return run_cell


def execute(
    todo: list[Cell],
    out_dir: Path,
    ctx: RunContext,
    *,
    on_start: Callable[[Cell, int, int], None] | None = None,
    on_done: Callable[[Cell, dict[str, Any], Path], None] | None = None,
) -> list[tuple[Cell, dict[str, Any], Path]]:
    """Run each cell and write its record as soon as it finishes (so an interruption loses one cell at most)."""
    written = []
    for i, cell in enumerate(todo):
        if on_start:
            on_start(cell, i, len(todo))
        t0 = time.perf_counter()
        if cell.params.get("stage") == "final":  # retrain the lr chosen on the dev split
            lr, scores = choose_lr(cell, out_dir)
            result = runner_for(cell.method)(dataclasses.replace(cell, params={**cell.params, "lr": lr}), ctx)
            result.details["lr_selection"] = {"chosen_lr": lr, "dev_scores": scores,
                                              "train_split": cell.params["select_train_split"],
                                              "eval_split": cell.params["select_eval_split"]}
        else:
            result = runner_for(cell.method)(cell, ctx)
        record = results.make_record(cell, result, time.perf_counter() - t0, ctx.device)
        path = results.write_record(out_dir, cell, record)
        written.append((cell, record, path))
        if on_done:
            on_done(cell, record, path)
    return written
