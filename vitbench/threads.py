"""CPU threads of the computing commands: the default count, applying `--threads N`, and what is recorded.

Owns `quiet_openmp_env` (called by `vitbench/cli.py` before torch is imported), `default_threads`,
`configure_threads` (applied by `vitbench.planner.execute` from `RunContext.num_threads`) and
`thread_settings` (written into every record's `hardware.threads`). Exercised by `vitbench run/fewshot/finetune
--threads N`; measured by `benchmarks/threads.py`.

Why: OpenMP's default wait policy spins idle worker threads for a while after every parallel region. When
other processes share the cores, the spinning threads take the CPU that the working thread needs (a smoke run
measured 4.7x slower with 2 spinning threads than with 1 on a shared 2-core machine; BENCHMARKS.md "Threads").
A passive wait policy makes idle workers sleep, so using every available core is safe by default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from vitbench.errors import VitbenchError

# OpenMP reads these once, when the runtime is loaded (at `import torch`); the user's own values win.
QUIET_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}  # GNU/LLVM OpenMP; Intel OpenMP


def quiet_openmp_env(environ: dict[str, str] | None = None) -> None:
    """Set a passive OpenMP wait policy unless the user set one. Must run before torch is imported."""
    environ = os.environ if environ is None else environ
    for name, value in QUIET_OPENMP.items():
        environ.setdefault(name, value)


def _cgroup_cpu_limit(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Cores allowed by a cgroup v2 CPU quota ('max 100000' = unlimited), rounded up; None if unknown."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a container CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit else cores)


def default_threads() -> int:
    """Threads used when `--threads` is not given: `OMP_NUM_THREADS` when the user set it, else every core the
    process may use (waits are passive, so idle threads do not take cores from other jobs)."""
    try:  # OpenMP allows a list per nesting level, e.g. "4,2"; the first is the one torch uses
        user = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        user = 0
    return user if user >= 1 else available_cores()


def check_threads(n: int | None) -> int | None:
    if n is not None and (isinstance(n, bool) or int(n) < 1):
        raise VitbenchError(f"--threads must be >= 1, got {n}; omit it to use the {default_threads()} available cores")
    return None if n is None else int(n)


def configure_threads(n: int | None = None) -> int:
    """Use `n` torch intra-op threads (None: `default_threads()`); returns the count in use.

    Inter-op threads are set to the same count once, when torch still allows it (before any parallel work).
    """
    import torch

    n = check_threads(n) or default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        if torch.get_num_interop_threads() != n:
            torch.set_num_interop_threads(n)
    except RuntimeError:  # torch allows it only before inter-op parallel work started; keep what runs
        pass
    _limit_numpy_blas(n)
    return torch.get_num_threads()


def _limit_numpy_blas(n: int) -> None:
    """numpy's own BLAS (few-shot Gram matrices) gets the same count; threadpoolctl comes with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(n, user_api="blas")


def thread_settings() -> dict[str, Any]:
    """What the record keeps: torch intra/inter-op threads and the OpenMP wait policy in effect."""
    import torch

    return {
        "torch": torch.get_num_threads(),
        "interop": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "available_cores": available_cores(),
    }
