"""The update rule's pieces (`vitbench/runners/trainer.py`) and the runner's log helpers, tested directly:
the micro-batch probe, precision choice, exact accumulation, the device-side history."""

import math

import pytest
import torch

from vitbench.errors import VitbenchError
from vitbench.runners.finetune import _first_bad, _loss_curve
from vitbench.runners.trainer import Trainer, autocast_dtype, choose_micro_batch, describe_precision


def test_probe_picks_the_largest_divisor_that_fits():
    assert choose_micro_batch(512, lambda m: m <= 100) == (64, [512, 256, 128, 64])
    assert choose_micro_batch(12, lambda m: m <= 5) == (4, [12, 6, 4])
    assert choose_micro_batch(7, lambda m: True) == (7, [7])


def test_probe_refuses_when_nothing_fits():
    with pytest.raises(VitbenchError, match="not even a micro-batch of 1"):
        choose_micro_batch(4, lambda m: False)


def test_precision_auto_is_bf16_on_cuda_only():
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("auto", "cuda:0") is torch.bfloat16
    assert autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert describe_precision(None) == "fp32"
    with pytest.raises(VitbenchError, match="unknown precision"):
        autocast_dtype("fp16", "cpu")


def test_loss_curve_windows_and_last_point():
    losses = [float(i) for i in range(1, 46)]
    curve = _loss_curve(losses, [0.1] * 45, 45)  # windows of 2 steps, plus the last step alone
    assert [p["step"] for p in curve][:3] == [2, 4, 6] and curve[-1]["step"] == 45
    assert curve[0]["loss"] == 1.5 and curve[-1]["loss"] == 45.0
    assert [p["step"] for p in _loss_curve([1.0] * 4, [0.0] * 4, 4)] == [1, 2, 3, 4]


def test_first_bad_step_is_one_based():
    assert _first_bad([1.0, 2.0], 1) is None
    assert _first_bad([1.0, math.nan, math.inf], 10) == 11


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _trainer(micro):
    torch.manual_seed(0)
    return Trainer(Tiny(), device="cpu", global_batch=8, micro_batch=micro, momentum=0.9, weight_decay=0.0,
                   grad_clip=1.0, normalize=lambda x: x.float().permute(0, 3, 1, 2) / 255.0, img_px=4)


def test_micro_batches_give_the_same_update_and_the_history_stays_on_the_device():
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 4, 4, 3), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 5, (8,), generator=gen)
    whole, parts = _trainer(None), _trainer(3)  # 3 -> the largest divisor of 8 below it: 2
    assert (whole.micro, parts.micro) == (8, 2)
    for lr in (0.5, 0.25):
        whole.update(images, labels, lr)
        parts.update(images, labels, lr)
    assert all(t.device.type == "cpu" and t.ndim == 0 for t in whole._losses)  # tensors, not floats: no sync per step
    (la, na), (lb, nb) = whole.pop_history(), parts.pop_history()
    assert la == pytest.approx(lb, rel=1e-5) and na == pytest.approx(nb, rel=1e-5)
    assert whole.pop_history() == ([], [])
    for a, b in zip(whole.module.parameters(), parts.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class OomAbove(Tiny):
    """Raises CUDA's out-of-memory error for batches larger than `limit` (what a too-big micro-batch does)."""

    def __init__(self, limit, error=torch.cuda.OutOfMemoryError, message="CUDA out of memory. Tried to allocate 2.00 GiB"):
        super().__init__()
        self.limit, self.error, self.message = limit, error, message

    def forward(self, x):
        if len(x) > self.limit:
            raise self.error(self.message)
        return super().forward(x)


def test_probe_runs_forward_and_backward_and_takes_the_largest_fitting_divisor():
    t = _trainer(None)
    t.module = OomAbove(3)
    size, tried = choose_micro_batch(8, t._fits)
    assert (size, tried) == (2, [8, 4, 2])
    assert all(p.grad is None for p in t.module.parameters())  # the probe leaves no gradients behind


def test_probe_lets_other_errors_through():
    t = _trainer(None)
    t.module = OomAbove(3, error=ValueError, message="shapes do not match")
    with pytest.raises(ValueError):
        t._fits(8)


def test_non_finite_logits_are_counted_at_evaluation():
    t = _trainer(None)
    with torch.no_grad():
        t.module.lin.weight.fill_(float("nan"))
    t.predict(torch.zeros((3, 4, 4, 3), dtype=torch.uint8))
    assert int(t.nonfinite_logits) == 3  # the runner fails the cell instead of scoring argmax(NaN) = class 0


def test_checkpoint_use_rules():
    from vitbench.runners.finetune import _rank_seed, _usable

    seg = {"from_step": 0, "device": "cpu", "precision": "fp32", "processes": 1, "micro_batch": 8}
    state = {"train_fingerprint": "f", "segments": [seg], "rngs": [], "step": 5}
    assert _usable(state, "p", "f", dict(seg), random_per_chunk=True) is state
    assert _usable(state, "p", "f", {**seg, "precision": "bf16", "micro_batch": 4}, random_per_chunk=False) is state
    with pytest.warns(UserWarning, match="micro-batch 8 x 1 process"):
        assert _usable(state, "p", "f", {**seg, "micro_batch": 4}, random_per_chunk=True) is None
    with pytest.warns(UserWarning, match="other data"):
        assert _usable(state, "p", "g", dict(seg), random_per_chunk=False) is None
    assert _rank_seed(0, 1) != _rank_seed(0, 2) and _rank_seed(0, 1) == _rank_seed(0, 1) and _rank_seed(0, 1) != 0


def test_an_error_in_one_ddp_process_ends_the_job_with_one_line():
    import subprocess
    import sys

    code = ("from vitbench.runners.finetune import _one_rank_failure_ends_the_job\n"
            "with _one_rank_failure_ends_the_job(2, 1):\n    raise OSError('image 7 is unreadable')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no traceback
    assert "process 1 of 2: OSError: image 7 is unreadable" in done.stderr and "resume" in done.stderr


class WithBatchNorm(Tiny):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(5)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(super().forward(x)))


def test_probe_leaves_running_statistics_rng_and_mode_as_they_were():
    t = _trainer(None)
    t.module = WithBatchNorm().eval()
    with torch.no_grad():
        t.module.bn.running_mean.fill_(3.0)
    before_rng = torch.get_rng_state()
    assert t._fits(4)
    assert torch.equal(t.module.bn.running_mean, torch.full((5,), 3.0)) and int(t.module.bn.num_batches_tracked) == 0
    assert torch.equal(torch.get_rng_state(), before_rng)  # dropout's draws do not depend on the probe
    assert not t.module.training and all(p.grad is None for p in t.module.parameters())


def test_sigusr1_is_a_save_request_never_the_end_of_the_process():
    import os
    import signal

    from vitbench.runners import checkpoint

    previous = signal.getsignal(signal.SIGUSR1)
    try:
        checkpoint.install_save_request_handler()
        os.kill(os.getpid(), signal.SIGUSR1)  # the default action would end this process
        assert checkpoint.SAVE_REQUESTED.wait(5)
        with checkpoint.save_on_signal():
            pass
        assert not checkpoint.SAVE_REQUESTED.is_set()  # a request left at a cell's end is dropped
    finally:
        signal.signal(signal.SIGUSR1, previous)
        checkpoint.SAVE_REQUESTED.clear()
