"""CLI start-up, run by hand: `PYTHONPATH=. python benchmarks/cli.py [--rounds 5]`.

Times `vitbench --help`, `ls suites`, `ls tasks --suite vtab`, `ls models` and `validate paper` in fresh
interpreters, against `python -c "import torch"` measured in the same run: these commands do not import torch,
so each should take well under the torch import (target: ratio <= 0.5). Prints the median of the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = [["--help"], ["ls", "suites"], ["ls", "tasks", "--suite", "vtab"], ["ls", "models"], ["validate", "paper"]]


def wall(args: list[str], rounds: int) -> float:
    times = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    rounds = ap.parse_args().rounds
    ref = wall(["-c", "import torch"], rounds)
    print(f"reference `import torch`: {ref:.2f} s (median of {rounds})")
    for cmd in COMMANDS:
        t = wall(["-m", "vitbench.cli", *cmd], rounds)
        print(f"vitbench {' '.join(cmd):<26} {t:.2f} s   ratio to import torch {t / ref:.2f}")


if __name__ == "__main__":
    main()
