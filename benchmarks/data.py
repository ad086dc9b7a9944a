"""Data-layer throughput, run by hand: `PYTHONPATH=. python benchmarks/data.py [--n 512] [--size 224]`.

1. Decoded-image cache vs decoding the source each time: images/s for one epoch of uint8 batches read
   from the memory-mapped cache, against PIL decode + resize of the same JPEG files (target >= 5x).
2. Loader vs model: cache read + normalise throughput against vit_ti16 forward_features on the same
   threads (the loader must not be the bottleneck: ratio > 1).
Fixture: N synthetic 320x240 JPEGs (smooth gradients + noise) in an ImageFolder written to a temp dir.
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

from vitbench.data import load_split
from vitbench.data.transforms import Preprocessing, normalize, resize_image, resized_images
from vitbench.suites import SourceSpec, TaskSpec


def write_fixture(root: Path, n: int) -> TaskSpec:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(n):
        folder = root / "train" / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack([(xx + 7 * i) % 256, (yy + 3 * i) % 256, (xx + yy) % 256], -1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return TaskSpec(name="bench", num_classes=10, splits={"train": "train"}, sources=(SourceSpec("imagefolder", str(root)),))


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VITBENCH_CACHE_DIR"] = str(Path(tmp) / "cache")
        split = load_split(write_fixture(Path(tmp) / "imgs", args.n), "train")
        prep = Preprocessing(size=args.size, interpolation="bicubic", resize_impl="pil")
        n, bs = len(split), args.batch

        def decode_epoch():
            for lo in range(0, n, bs):
                np.stack([resize_image(split.image(i), prep) for i in range(lo, min(n, lo + bs))])

        t_build = time.perf_counter()
        cache = resized_images(split, prep)
        t_build = time.perf_counter() - t_build

        def cache_epoch():
            for lo in range(0, n, bs):
                np.array(cache[lo:lo + bs])

        def cache_normalize_epoch():
            for lo in range(0, n, bs):
                normalize(torch.from_numpy(np.array(cache[lo:lo + bs])), prep)

        t_decode = timed(decode_epoch, 1)
        t_cache = timed(cache_epoch)
        t_loader = timed(cache_normalize_epoch)

        try:
            from vitbench.models import create

            model, model_name = create("vit_ti16", weights="none", img_size=args.size), "vitbench.models vit_ti16"
        except Exception:
            import timm

            model, model_name = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=args.size), "timm vit_tiny_patch16_224"
        model.eval()
        m = min(n, 2 * bs)
        x = normalize(torch.from_numpy(np.array(cache[:bs])), prep)
        with torch.inference_mode():
            model.forward_features(x[:4])

            def model_epoch():
                for _ in range(0, m, bs):
                    model.forward_features(x)

            t_model = timed(model_epoch, 2) * n / m

    rate = lambda t: n / t
    print(f"images={n} size={args.size} batch={bs} threads={args.threads} cpus={os.cpu_count()}")
    print(f"cache build (decode+resize, thread pool): {rate(t_build):9.1f} img/s")
    print(f"decode source each epoch (PIL, 1 thread): {rate(t_decode):9.1f} img/s")
    print(f"read decoded cache (memmap uint8):        {rate(t_cache):9.1f} img/s   ratio vs decode {t_decode / t_cache:7.1f}x (target >= 5x)")
    print(f"cache read + normalize (model input):     {rate(t_loader):9.1f} img/s   ratio vs decode {t_decode / t_loader:7.1f}x")
    print(f"{model_name} forward_features:  {rate(t_model):9.1f} img/s   loader/model ratio {t_model / t_loader:7.1f}x (must be > 1)")


if __name__ == "__main__":
    main()
