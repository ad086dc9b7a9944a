"""One cell on several processes (DDP under torchrun): the process group and the few collectives vitbench needs.

`torchrun --nproc_per_node N -m vitbench.cli finetune ...` starts N processes that share every cell instead of
sharding the plan (`launched_by_torchrun`; other launchers setting RANK/WORLD_SIZE, e.g. MPI, still shard:
`vitbench.executors.env_shard`). The CLI calls `init(device)`; the worker loop (`vitbench/worker.py`) lets rank 0
decide and broadcasts each decision; runners split a cell's work over the ranks. Every function works without a
process group (one process: rank 0 of 1, collectives return their input). Exercised by `torchrun ... vitbench.cli
finetune|run|fewshot`.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from typing import Any

TIMEOUT_S = 2 * 3600.0  # rank 0 writes records and waits on cells locked elsewhere while the others wait


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is one of several started by torchrun (`torch.distributed.run`): its elastic agent
    sets TORCHELASTIC_RUN_ID (with GROUP_RANK, LOCAL_WORLD_SIZE, ...) besides RANK / WORLD_SIZE."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        return False
    return bool(env.get("TORCHELASTIC_RUN_ID")) and "RANK" in env and world > 1


def _dist(load: bool = False):
    """torch.distributed when usable; not imported for a question alone (no torch loaded: no process group)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None and load:
        import torch.distributed as dist
    return dist if dist is not None and dist.is_available() else None


def active() -> bool:
    """A process group of more than one process is set up."""
    dist = _dist()
    return dist is not None and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist is not None and dist.is_initialized() else 0


def world() -> int:
    dist = _dist()
    return dist.get_world_size() if dist is not None and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(device: str, environ: dict[str, str] | None = None) -> str:
    """`cuda:<LOCAL_RANK>` for a plain `cuda` device under a launcher (as `executors.env_device`), else `device`."""
    env = os.environ if environ is None else environ
    local = env.get("LOCAL_RANK")
    if device == "cuda" and local is not None:
        import torch

        return f"cuda:{int(local) % max(1, torch.cuda.device_count())}"
    return device


def init(device: str) -> tuple[int, int]:
    """Join the process group torchrun prepared (backend nccl for a CUDA device, else gloo); (rank, world).
    Idempotent; outside torchrun nothing is set up and it returns (0, 1)."""
    dist = _dist(load=True)
    if dist is None:
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not launched_by_torchrun():
        return 0, 1
    device = local_device(device)
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.set_device(torch.device(device))
    timeout = _dt.timedelta(seconds=float(os.environ.get("VITBENCH_DIST_TIMEOUT_S", TIMEOUT_S)))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def shutdown() -> None:
    """Leave the process group (at the end of a command); nothing when none is set up."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        _dist().barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    _dist().all_gather_object(out, obj)
    return out
