"""Fine-tuning input pipeline throughput, run by hand: `PYTHONPATH=. python benchmarks/loader.py [--size 224]`.

For each training crop, image source ("cache", "memory", "original") and worker count, images/s delivered by
`vitbench.data.train_pipeline.TrainBatches` with the model replaced by a no-op (`measure_loader`, importable
by other benchmarks), plus the one-time setup (building the decoded cache, or decoding into RAM). Two splits:
VTAB-1k-like (1,000 JPEGs of about 300x300 px, smooth content + noise, written to a temp folder) and a
digits-like tiny split (the bundled sklearn digits, 8x8 px, first 1,200). Reference in the same run: a
ViT-Ti/16 training step (forward, backward, SGD) at the same size and batch, in images/s, so each line shows
loader / model (the pipeline must deliver >= 2x what the model consumes). Results: BENCHMARKS.md
"Fine-tuning input pipeline".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitbench.data.resize import Preprocessing
from vitbench.data.train_pipeline import TrainBatches


def measure_loader(split, prep_train, batch_size: int, steps: int, workers: int | None, *, source: str = "auto",
                   cache_dir=None, record: dict | None = None) -> float:
    """Images/s of `steps` training batches from `TrainBatches` with a no-op model (the first batch, which pays
    for starting the workers, is not timed). `record`, if given, receives the source used and the setup time."""
    t0 = time.perf_counter()
    batches = TrainBatches(split, prep_train, seed=0, batch_size=batch_size, workers=workers, source=source, cache_dir=cache_dir)
    setup = time.perf_counter() - t0
    with batches:
        it = iter(batches)
        next(it)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(it)  # the "model" is a no-op: the batch is dropped
        elapsed = time.perf_counter() - t0
        it.close()
    if record is not None:
        record.update(source=batches.info["source"], workers=batches.info["workers"], setup_s=setup)
    return steps * batch_size / elapsed


def model_rate(size: int, batch_size: int, steps: int = 3) -> float:
    """Images/s of a ViT-Ti/16 training step (forward, backward, SGD step) on uint8 batches of `size` px."""
    from vitbench.data.transforms import normalize
    from vitbench.models import create

    model = create("vit_ti16", weights="none", img_size=size, num_classes=10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    prep = Preprocessing(size=size)
    x = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8)
    y = torch.randint(0, 10, (batch_size,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(normalize(x, prep)), y).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def measure_training(split, prep_train, batch_size: int, steps: int, workers: int | None, *, source: str = "auto",
                     cache_dir=None) -> float:
    """Images/s of a ViT-Ti/16 training loop (forward, backward, SGD) fed by `TrainBatches`: whether loader
    workers help or steal the model's cores on this machine (first step untimed)."""
    from vitbench.data.transforms import normalize
    from vitbench.models import create

    model = create("vit_ti16", weights="none", img_size=prep_train.size, num_classes=10)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with TrainBatches(split, prep_train, seed=0, batch_size=batch_size, workers=workers, source=source,
                      cache_dir=cache_dir) as batches:
        it = iter(batches)
        t0 = None
        for k in range(steps + 1):
            if k == 1:
                t0 = time.perf_counter()
            _, x, y = next(it)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(normalize(x, prep_train)), y % 10).backward()
            opt.step()
        elapsed = time.perf_counter() - t0
        it.close()
    return steps * batch_size / elapsed


def write_vtab_like(root: Path, n: int = 1000):
    """`n` JPEGs of about 300x300 (sides 260-340), smooth colour fields + noise, 10 classes, in an ImageFolder."""
    from vitbench.data import load_split
    from vitbench.spec import SourceSpec, TaskSpec

    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = rng.integers(260, 341, size=2)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        f = rng.uniform(0.005, 0.05, size=3)
        base = 127 + 100 * np.stack([np.sin(f[0] * xx + i), np.cos(f[1] * yy), np.sin(f[2] * (xx + yy))], -1)
        img = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        folder = root / "train" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    task = TaskSpec(name="vtab_like", num_classes=10, splits={"train": "train"}, sources=(SourceSpec("imagefolder", str(root)),))
    return load_split(task, "train")


def digits_split():
    from vitbench.data import load_split
    from vitbench.spec import SourceSpec, TaskSpec

    task = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:1200]"})
    return load_split(task, "train")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224, help="training resolution for the VTAB-like split")
    ap.add_argument("--digits-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=64, help="resolution of the training-loop comparison (0: skip it)")
    ap.add_argument("--train-steps", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",")]
    print(f"cpus={os.cpu_count()} torch_threads={args.threads} torch={torch.__version__} cuda={torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        vtab = write_vtab_like(Path(tmp) / "imgs", args.n)
        print(f"fixture: {len(vtab)} JPEGs written in {time.perf_counter() - t0:.1f} s")
        cases = [("vtab_like", vtab, args.size), ("digits", digits_split(), args.digits_size)]
        for name, split, size in cases:
            m = model_rate(size, args.batch)
            print(f"\n[{name}] n={len(split)} size={size} batch={args.batch}: ViT-Ti/16 train step {m:.1f} img/s")
            preps = {"resize_crop": Preprocessing(size=size, train_crop="resize_crop", hflip=True),
                     "none": Preprocessing(size=size, train_crop="none", hflip=True),
                     "inception": Preprocessing(size=size, train_crop="inception", hflip=True)}
            for crop, prep in preps.items():
                sources = ["memory", "original"] if crop == "inception" else ["cache", "memory", "original"]
                for source in sources:
                    for w in workers:
                        rec: dict = {}
                        rate = measure_loader(split, prep, args.batch, args.steps, w, source=source,
                                              cache_dir=cache / name, record=rec)
                        print(f"  {crop:11s} {source:8s} workers={w}: {rate:9.1f} img/s  loader/model {rate / m:6.1f}x"
                              f"  (setup {rec['setup_s']:.2f} s)", flush=True)
                rec = {}
                rate = measure_loader(split, prep, args.batch, args.steps, None, source="auto", cache_dir=cache / name, record=rec)
                print(f"  {crop:11s} auto -> {rec['source']}, workers={rec['workers']}: {rate:9.1f} img/s", flush=True)
        if args.train_size:
            # workers on a CPU-only machine: a ViT-Ti/16 training loop on the heaviest path (inception on originals)
            prep = Preprocessing(size=args.train_size, train_crop="inception", hflip=True)
            print(f"\n[training loop] vtab_like, inception from originals, ViT-Ti/16 at {args.train_size} px, batch {args.batch}")
            for source in ("original", "memory"):
                for w in workers:
                    rate = measure_training(vtab, prep, args.batch, args.train_steps, w, source=source)
                    print(f"  {source:8s} workers={w}: {rate:7.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
