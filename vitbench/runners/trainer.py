"""One optimizer update of fine-tuning, as fast as the device allows without changing what it computes.

Owns `Trainer`: SGD (foreach on CPU, fused on CUDA), bf16 autocast on CUDA with fp32 master weights
(`precision`), micro-batches that accumulate exactly to the update's batch, DDP gradient averaging across
processes (`vitbench.distributed`), global-norm clipping, optional `torch.compile` and gradient
checkpointing, and losses / gradient norms kept on the device (`pop_history` is the only host sync, once per
log window). Also `choose_micro_batch`, the automatic micro-batch probe. The loop around it is
`vitbench/runners/finetune.py` (`vitbench finetune`, `vitbench run --method finetune`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from vitbench.errors import VitbenchError
from vitbench.finetune import accumulation_steps

PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`: bf16 on CUDA for "auto"; None means plain fp32."""
    if precision not in PRECISIONS:
        raise VitbenchError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
    cuda = str(device).startswith("cuda")
    if precision == "fp32" or (precision == "auto" and not cuda):
        return None
    return torch.bfloat16


def describe_precision(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else "bf16 autocast, fp32 master weights and optimizer state"


def autocast(device: str, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=str(device).split(":")[0], dtype=dtype)


def divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def choose_micro_batch(batch: int, fits: Callable[[int], bool]) -> tuple[int, list[int]]:
    """The largest divisor of `batch` for which `fits(size)` holds (tried from the largest down), and the sizes
    tried. Divisors only: every update still sums exactly `batch` examples, so the result does not depend on it."""
    tried = []
    for size in divisors_desc(batch):
        tried.append(size)
        if fits(size):
            return size, tried
    raise VitbenchError(f"not even a micro-batch of 1 fits in memory (tried {tried}); use a smaller model or resolution")


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Trainer:
    """Model + optimizer + the update rule. `update(images, labels, lr)` runs one optimizer step on this
    process's share of the update's batch; the loss it adds to the history is the whole (global) batch mean."""

    def __init__(self, model: torch.nn.Module, *, device: str, global_batch: int, micro_batch: int | None,
                 momentum: float, weight_decay: float, grad_clip: float, precision: str = "auto",
                 compile: bool = False, grad_checkpointing: bool = False, world: int = 1,
                 normalize: Callable[[torch.Tensor], torch.Tensor], img_px: int):
        self.device = device
        self.world = world
        self.global_batch = global_batch
        self.local_batch = global_batch // world
        self.grad_clip = grad_clip
        self.normalize = normalize
        self.img_px = img_px
        self.dtype = autocast_dtype(precision, device)
        self.module = model  # unwrapped: what checkpoints and the weights hash see
        if grad_checkpointing:
            trunk = getattr(model, "trunk", model)
            if not hasattr(trunk, "set_grad_checkpointing"):
                raise VitbenchError(f"--grad-checkpointing: {type(trunk).__name__} does not support it (timm models do)")
            trunk.set_grad_checkpointing(True)
        self.grad_checkpointing = grad_checkpointing
        net = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[torch.device(device).index] if str(device).startswith("cuda") else None)
        self.net = torch.compile(net) if compile else net
        self.compiled = compile
        cuda = str(device).startswith("cuda")
        # fused SGD on CUDA (one kernel for all parameters), foreach (few kernels) elsewhere; same update rule
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=momentum, weight_decay=weight_decay,
                                         **({"fused": True} if cuda else {"foreach": True}))
        self.micro, self.micro_info = self._micro_batch(micro_batch)
        self.nonfinite_logits: torch.Tensor | None = None
        self.has_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self._losses: list[torch.Tensor] = []
        self._norms: list[torch.Tensor] = []

    def _micro_batch(self, micro_batch: int | None) -> tuple[int, dict[str, Any]]:
        if micro_batch is not None:
            size, _ = accumulation_steps(self.local_batch, micro_batch)  # the largest divisor <= micro_batch
            return size, {"chosen": size, "how": f"--micro-batch {micro_batch} (largest divisor of {self.local_batch})"}
        if not str(self.device).startswith("cuda"):
            return self.local_batch, {"chosen": self.local_batch, "how": "whole batch (no probe on CPU)"}
        size, tried = choose_micro_batch(self.local_batch, self._fits)
        if self.world > 1:  # every process must cut its share alike: the smallest choice of all
            from vitbench import distributed

            size = min(distributed.all_gather_object(size))
        return size, {"chosen": size, "how": "probed: largest divisor that fits in GPU memory", "tried": tried}

    def _fits(self, size: int) -> bool:
        """One forward + backward of `size` images at the training resolution; False on out-of-memory."""
        reserve = None
        was_training = self.module.training
        # the probe must leave no trace: BatchNorm running statistics and the RNG (dropout) are restored after it
        buffers = {name: b.clone() for name, b in self.module.named_buffers()}
        cuda = str(self.device).startswith("cuda")
        rng = torch.random.fork_rng(devices=[torch.device(self.device).index or 0] if cuda else [])
        rng.__enter__()
        self.module.train()  # dropout masks take memory too
        try:
            # the optimizer's momentum buffers (and, under DDP, the gradient buckets) do not exist yet: hold their size
            n_params = sum(p.numel() for p in self.module.parameters())
            reserve = torch.empty(n_params * (2 if self.world > 1 else 1), device=self.device)
            x = torch.zeros((size, 3, self.img_px, self.img_px), device=self.device)
            with autocast(self.device, self.dtype):
                loss = self.module(x).float().sum()
            loss.backward()
            return True
        except Exception as exc:  # noqa: BLE001 - only out-of-memory means "does not fit"
            if not _is_oom(exc):
                raise
            return False
        finally:
            del reserve
            self.module.train(was_training)
            self.module.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, b in self.module.named_buffers():
                    b.copy_(buffers[name])
            rng.__exit__(None, None, None)
            torch.cuda.empty_cache()

    def update(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
        """One SGD update on uint8 NHWC `images` (this process's share of the batch) with learning rate `lr`."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        n = len(labels)
        total = torch.zeros((), device=self.device)
        for lo in range(0, n, self.micro):
            last = lo + self.micro >= n
            # DDP averages gradients over processes; each process's share is summed / global batch x world,
            # so the average is the global batch mean whatever the split (exact for unequal chunks too)
            sync = contextlib.nullcontext() if last or self.world == 1 else self.net.no_sync()
            with sync:
                x = self.normalize(images[lo : lo + self.micro])
                with autocast(self.device, self.dtype):
                    logits = self.net(x)
                loss = F.cross_entropy(logits.float(), labels[lo : lo + self.micro], reduction="sum") / self.global_batch
                (loss * self.world).backward()
            total += loss.detach()
        if self.world > 1:  # the global mean for the log: the sum of every process's share (no host sync)
            import torch.distributed as dist

            dist.all_reduce(total)
        params = [p for p in self.module.parameters() if p.grad is not None]
        # the norm is always computed (logged); clipping at 0 means "off"
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip else float("inf"), foreach=True)
        self.optimizer.step()
        self._losses.append(total)
        self._norms.append(norm.detach())

    def pop_history(self) -> tuple[list[float], list[float]]:
        """(losses, grad norms) of the updates since the last call, as floats: the one host sync of a window."""
        if not self._losses:
            return [], []
        losses = torch.stack(self._losses).float().cpu().tolist()
        norms = torch.stack(self._norms).float().cpu().tolist()
        self._losses, self._norms = [], []
        return losses, norms

    @torch.inference_mode()
    def predict(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """Argmax class ids; counts non-finite logits on the device (`nonfinite_logits`), since the argmax of
        NaN logits is a plausible-looking class 0."""
        with autocast(self.device, self.dtype):
            logits = self.module(self.normalize(batch_uint8.to(self.device, non_blocking=True)))
        bad = (~torch.isfinite(logits)).any(dim=1).sum()
        self.nonfinite_logits = bad if self.nonfinite_logits is None else self.nonfinite_logits + bad
        return logits.argmax(dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
