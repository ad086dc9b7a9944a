"""Fine-tuning protocol math: the warm-up + cosine schedule and gradient accumulation."""

import math

import pytest

from vitbench.errors import VitbenchError
from vitbench.finetune import accumulation_steps, lr_at
from vitbench.methods.finetune import FinetuneParams, recipe


def test_schedule_warmup_then_cosine_to_zero():
    base, total, warm = 0.01, 100, 10
    assert lr_at(1, base, total, warm) == pytest.approx(base * 0.1)
    assert lr_at(5, base, total, warm) == pytest.approx(base * 0.5)
    assert lr_at(10, base, total, warm) == pytest.approx(base)  # end of warm-up: full rate, progress 0
    mid = warm + (total - warm) // 2
    assert lr_at(mid, base, total, warm) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(total, base, total, warm) == pytest.approx(0.0, abs=1e-15)  # decays to 0, not a floor
    rates = [lr_at(s, base, total, warm) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # monotone after warm-up


def test_schedule_without_warmup_and_refuses_warmup_equal_steps():
    assert lr_at(1, 0.03, 500, 0) == pytest.approx(0.03 * 0.5 * (1 + math.cos(math.pi / 500)))
    with pytest.raises(VitbenchError, match="warmup_steps"):
        lr_at(1, 0.01, 500, 500)  # vit_jax would produce NaN at the last step here


def test_accumulation_keeps_the_effective_batch_exact():
    assert accumulation_steps(512, None) == (512, 1)
    assert accumulation_steps(512, 64) == (64, 8)
    assert accumulation_steps(512, 100) == (64, 8)  # largest divisor <= 100
    assert accumulation_steps(60, 25) == (20, 3)
    for batch, micro in [(512, 48), (96, 7), (64, 64)]:
        size, n = accumulation_steps(batch, micro)
        assert size * n == batch and size <= micro


def test_recipe_holds_every_training_setting_and_defaults_come_from_the_method():
    params = {**FinetuneParams(steps=10, lr=0.1, batch_size=8, warmup_steps=2).key_params(), "stage": "select"}
    r = recipe(params)
    assert r["steps"] == 10 and r["momentum"] == 0.9 and r["weight_decay"] == 0.0 and r["grad_clip"] == 1.0
    assert "stage" not in r and "seeds" not in r and r["micro_batch"] is None
