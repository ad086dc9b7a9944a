"""The fine-tuning cell runner called directly on a tiny digits task (random-init ViT-Ti/16 at 32 px, a few
steps): the schedule it applies, exact gradient accumulation, the dev-split stage, determinism, provenance."""

import math

import pytest

from vitbench.cells import Cell, RunContext
from vitbench.finetune import lr_at
from vitbench.runners.finetune import run_cell
from vitbench.spec import SourceSpec, TaskSpec

TASK = TaskSpec(
    name="digits_tiny", num_classes=10, sources=(SourceSpec("digits"),),
    splits={"train": "all[:48]", "minitrain": "all[:40]", "val": "all[40:48]", "test": "all[1200:1232]"},
)
PARAMS = {"steps": 4, "lr": 0.05, "batch_size": 8, "warmup_steps": 1, "momentum": 0.9, "weight_decay": 0.0,
          "grad_clip": 1.0, "train_crop": "none", "hflip": False, "interpolation": "bilinear", "dropout": 0.0}


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
    assert [p["lr"] for p in d["loss_curve"]] == [lr_at(s, 0.05, 4, 1) for s in (1, 2, 3, 4)]
    assert d["loss_curve"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine decays to zero
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
