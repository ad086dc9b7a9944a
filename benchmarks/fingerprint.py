"""Cost of data identity for local folders, run by hand: `PYTHONPATH=. python benchmarks/fingerprint.py [--n 100000]`.

Builds an ImageFolder of N tiny files (100 classes, `train/` and `test/`), then times, in the same run:
1. the reference: listing the folder (`os.walk`, names only), which any run does anyway;
2. `tree_stat` (one `stat` per file + hashing (path, size, mtime_ns)), as for `disk`/`torchvision` roots;
3. opening the folder as an `imagefolder` source (its listing: a cost every run already pays), then its
   `identity()` (labels and (size, mtime_ns) of every file): what a run adds to fingerprint the data;
4. hashing the image bytes instead (sha256 of every file), the alternative not taken.
It prints seconds, the ratio to the listing, and the estimate per 1M files (linear in N).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from vitbench.data.fingerprint import tree_stat
from vitbench.data.sources.folders import open_imagefolder
from vitbench.suites import SourceSpec, TaskSpec


def build(root: Path, n: int, size: int) -> None:
    payload = os.urandom(size)
    for i in range(n):
        split = "test" if i % 5 == 0 else "train"
        folder = root / split / f"c{i % 100:03d}"
        if i < 200:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").write_bytes(payload)


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--bytes", type=int, default=2048, help="size of each file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        t0 = time.perf_counter()
        build(root, args.n, args.bytes)
        print(f"built {args.n} files of {args.bytes} B in {time.perf_counter() - t0:.1f} s under {root}")
        task = TaskSpec(name="bench", num_classes=100, splits={"train": "train", "test": "test"},
                        sources=(SourceSpec("imagefolder", str(root)),))

        def listing():
            return sum(len(files) for _, _, files in os.walk(root))

        def by_content():
            for d, _, files in os.walk(root):
                for f in files:
                    hashlib.sha256(Path(d, f).read_bytes()).hexdigest()

        reader = open_imagefolder(task.sources[0], task, None)
        rows = [
            ("list names (os.walk) - reference", timed(listing)),
            ("tree_stat: stat + hash per file", timed(lambda: tree_stat(root))),
            ("imagefolder open (listing, existing cost)", timed(lambda: open_imagefolder(task.sources[0], task, None))),
            ("imagefolder identity() (added per run)", timed(lambda: reader.identity())),
            ("sha256 of every file's bytes", timed(by_content, repeat=1)),
        ]
        ref = rows[0][1]
        print(f"{'step':40s} {'s':>8s} {'x listing':>10s} {'s per 1M files':>15s}")
        for name, sec in rows:
            print(f"{name:40s} {sec:8.3f} {sec / ref:10.2f} {sec * 1e6 / args.n:15.1f}")


if __name__ == "__main__":
    main()
