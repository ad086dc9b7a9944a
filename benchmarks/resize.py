"""Resize throughput, run by hand: `PYTHONPATH=. python benchmarks/resize.py [--n 200] [--threads 1]`.

big_vision's resize (`resize_impl = "tf"`: TF bilinear without antialiasing, truncated to uint8) against PIL's
bilinear resize (`resize_impl = "pil"`) on the same decoded images, for the shapes the protocols use:
a 500x375 photo squashed to 256 (few-shot, then centre crop 224), to 384 (fine-tune eval) and to 448
(VTAB fine-tune train cache), and a 32x32 CIFAR image upscaled to 384. Prints images/s and the ratio
tf / pil (the cache is built once per split, so this is a one-off cost per split and preprocessing).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from vitbench.data.transforms import Preprocessing, resize_image


def rate(images, prep, repeat: int = 2) -> float:
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        for im in images:
            resize_image(im, prep)
        best = max(best, len(images) / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)) for _ in range(args.n)]
    small = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(args.n)]
    cases = [("500x375 -> 256 squash, crop 224", photos, dict(size=224, resize="squash_crop", crop_pct=0.875)),
             ("500x375 -> 384 squash", photos, dict(size=384)),
             ("500x375 -> 448 squash", photos, dict(size=448)),
             ("32x32 -> 384 squash", small, dict(size=384))]
    print(f"{'case':34s} {'tf img/s':>10s} {'pil img/s':>10s} {'tf/pil':>7s}")
    for name, images, kw in cases:
        tf, pil = rate(images, Preprocessing(**kw)), rate(images, Preprocessing(**kw, resize_impl="pil"))
        print(f"{name:34s} {tf:10.1f} {pil:10.1f} {tf / pil:7.2f}")


if __name__ == "__main__":
    main()
