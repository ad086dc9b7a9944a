"""Fine-tuning cells run directly (the `finetune` method's `run_cell` and its training loop
`vitbench.runners.finetune.train_and_score`) on a tiny digits task (random-init ViT-Ti/16 at 32 px, a few steps):
the schedule applied, exact gradient accumulation, the dev-split stages, determinism, provenance."""

import math

import pytest

from vitbench.cells import Cell, RunContext
from vitbench.finetune import lr_at
from vitbench.methods import get_method
from vitbench.methods.finetune import recipe
from vitbench.runners.finetune import train_and_score
from vitbench.spec import SourceSpec, TaskSpec

TASK = TaskSpec(
    name="digits_tiny", num_classes=10, sources=(SourceSpec("digits"),),
    splits={"train": "all[:48]", "minitrain": "all[:40]", "val": "all[40:48]", "test": "all[1200:1232]"},
)
PARAMS = {"steps": 4, "lr": 0.05, "batch_size": 8, "warmup_steps": 1, "momentum": 0.9, "weight_decay": 0.0,
          "grad_clip": 1.0, "train_crop": "none", "hflip": False, "interpolation": "bilinear", "dropout": 0.0}


def run_cell(cell: Cell, ctx: RunContext, deps=()):
    return get_method("finetune").run_cell(cell, ctx, list(deps))


def cell(**params) -> Cell:
    return Cell(suite="t", task=TASK, model="vit_ti16", weights="none", method="finetune",
                params={**PARAMS, **params}, seed=0, img_size=32, weights_id="none")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    return RunContext(cache_dir=tmp_path_factory.mktemp("cache"), eval_batch_size=16)


@pytest.fixture(scope="module")
def plain(ctx):
    return run_cell(cell(), ctx)


def test_trains_with_the_recipes_schedule_and_scores_the_whole_test_split(plain):
    d = plain.details
    assert [p["step"] for p in d["loss_curve"]] == [1, 2, 3, 4]
    # optax counts updates from 0: update k uses the schedule at step k - 1 (docs/preprocessing.md)
    assert [p["lr"] for p in d["loss_curve"]] == [lr_at(s - 1, 0.05, 4, 1) for s in (1, 2, 3, 4)]
    assert d["loss_curve"][0]["lr"] == 0.0  # the first update, in the warm-up, has rate 0
    assert all(math.isfinite(p["loss"]) for p in d["loss_curve"])
    assert (d["n_train"], d["n_test"], d["train_split"], d["eval_split"]) == (48, 32, "train", "test")
    assert (d["micro_batch"], d["accumulation"]) == (8, 1)
    assert d["epochs"] == pytest.approx(4 * 8 / 48)
    assert d["recipe"]["batch_size"] == 8 and d["recipe"]["weight_decay"] == 0.0
    assert 0.0 <= plain.metrics["top1"] <= 1.0 and set(plain.metrics) == {"top1"}


def test_records_weights_preprocessing_and_split_provenance(plain):
    p = plain.provenance
    assert p["weights"]["weights_id"] == "none" and p["weights"]["weights_sha256"]
    assert p["preprocessing"]["eval"]["size"] == 32 and p["preprocessing"]["eval"]["resize"] == "squash"
    assert p["preprocessing"]["train"]["hflip"] is False and p["preprocessing"]["eval"]["train_crop"] == "none"
    assert p["test"]["n"] == 32 and p["train"]["n"] == 48
    assert p["train_fingerprint"] != p["test_fingerprint"]


@pytest.mark.slow
def test_same_cell_same_numbers(plain, ctx):
    again = run_cell(cell(), ctx)
    assert again.metrics == plain.metrics
    assert again.details["loss_curve"] == plain.details["loss_curve"]


@pytest.mark.slow
def test_micro_batches_accumulate_to_the_same_step(plain, ctx):
    """batch 8 as 2 x 4: the same examples per step and the mean of the micro-batch losses, so the same
    training up to float rounding."""
    micro = run_cell(cell(micro_batch=4), ctx)
    assert (micro.details["micro_batch"], micro.details["accumulation"]) == (4, 2)
    for a, b in zip(micro.details["loss_curve"], plain.details["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    assert micro.metrics["top1"] == pytest.approx(plain.metrics["top1"], abs=1 / 32)


def test_selection_stage_trains_on_the_dev_split_and_scores_the_eval_split(ctx):
    sel = run_cell(cell(stage="select", select_train_split="minitrain", select_eval_split="val"), ctx)
    d = sel.details
    assert (d["train_split"], d["eval_split"], d["n_train"], d["n_test"]) == ("minitrain", "val", 40, 8)
    assert sel.provenance["test"]["n"] == 8


def test_the_training_loop_takes_its_recipe_as_given(ctx):
    """`train_and_score` trains with the recipe it is handed (here lr 0.2 over the cell's 0.05)."""
    c = cell()
    result = train_and_score(c, ctx, {**recipe(c.params), "lr": 0.2})
    assert [p["lr"] for p in result.details["loss_curve"]] == [lr_at(s - 1, 0.2, 4, 1) for s in (1, 2, 3, 4)]
    assert result.details["recipe"]["lr"] == 0.2


def test_final_stage_retrains_the_lr_its_selection_records_chose(ctx):
    grid = [0.01, 0.05]
    final = cell(lr=None, lr_grid=grid, stage="final", select_train_split="minitrain", select_eval_split="val")
    deps = get_method("finetune").dependencies(final)
    assert [d.params["lr"] for d in deps] == grid and {d.params["stage"] for d in deps} == {"select"}
    records = [{"params": d.params, "metrics": {"top1": score}} for d, score in zip(deps, (0.4, 0.3))]
    result = run_cell(final, ctx, records)
    assert result.details["lr_selection"]["chosen_lr"] == 0.01  # the better dev score, not the larger lr
    assert result.details["lr_selection"]["dev_scores"] == {"0.01": 0.4, "0.05": 0.3}
    assert result.details["loss_curve"][1]["lr"] == lr_at(1, 0.01, 4, 1)  # update 2 at schedule step 1
    assert (result.details["train_split"], result.details["eval_split"]) == ("train", "test")


def test_execution_is_recorded_and_cpu_trains_in_fp32(plain):
    ex = plain.details["execution"]
    assert ex["precision"] == "fp32" and ex["processes"] == 1 and ex["resumed_from_steps"] == []
    assert ex["loader"]["source"] in ("cache", "memory", "original") and "Philox" in ex["loader"]["rng"]
    assert len(plain.details["final_weights_sha256"]) == 64


@pytest.mark.slow
def test_gradient_checkpointing_recomputes_the_same_training(plain, ctx):
    import dataclasses

    again = run_cell(cell(), dataclasses.replace(ctx, grad_checkpointing=True))
    assert again.details["execution"]["grad_checkpointing"] is True
    for a, b in zip(again.details["loss_curve"], plain.details["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_bf16_autocast_is_recorded_and_close_to_fp32(plain, ctx):
    import dataclasses

    bf16 = run_cell(cell(), dataclasses.replace(ctx, precision="bf16"))
    assert bf16.details["execution"]["precision"].startswith("bf16 autocast")
    for a, b in zip(bf16.details["loss_curve"], plain.details["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=0.05)


@pytest.mark.slow
@pytest.mark.skipif(__import__("shutil").which("cc") is None, reason="torch.compile on CPU needs a C compiler")
def test_compiled_model_trains_the_same(plain, ctx):
    import dataclasses

    compiled = run_cell(cell(), dataclasses.replace(ctx, compile=True))
    assert compiled.details["execution"]["compile"] is True
    for a, b in zip(compiled.details["loss_curve"], plain.details["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
