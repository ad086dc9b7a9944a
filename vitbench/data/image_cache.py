"""Decoded-image cache: each split's images resized once to uint8 [N, S, S, 3] in a memory-mapped .npy.

Keyed by the split's fingerprint plus the resize fields of the preprocessing (size, resize mode, crop_pct,
interpolation), so repeated epochs and feature extraction never decode the source images again. Files
are written to a temporary name and renamed, so a killed run leaves no half cache. Default location:
`$VITBENCH_CACHE_DIR/images` (else ~/.cache/vitbench/images). Exercised by `vitbench run`, `fewshot`,
`finetune` and `vitbench cache`.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vitbench import env
from vitbench.data.base import stable_hash
from vitbench.data.resize import resize_image
from vitbench.errors import VitbenchError

CHUNK = 256


def image_cache_dir(cache_dir: Path | str | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else env.cache_dir() / "images"


def cache_file(split, prep, cache_dir: Path | str | None = None) -> Path:
    key = stable_hash({"fingerprint": split.fingerprint, "n": len(split), **prep.cache_key()}, length=24)
    return image_cache_dir(cache_dir) / f"{key}.npy"


def _decode_chunk(split, prep, lo: int, hi: int) -> np.ndarray:
    return np.stack([resize_image(split.image(i), prep) for i in range(lo, hi)])


def cached_resized_images(split, prep, cache_dir: Path | str | None = None, progress=None, workers: int | None = None) -> np.ndarray:
    """uint8 [N, S, S, 3] (read-only memmap); built on first use with a thread pool over chunks."""
    path = cache_file(split, prep, cache_dir)
    n, s = len(split), prep.size
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (n, s, s, 3):
            return arr
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VitbenchError(f"cannot create the image cache folder {path.parent} ({exc}); set VITBENCH_CACHE_DIR to a writable folder")
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, s, s, 3))
    bounds = [(lo, min(n, lo + CHUNK)) for lo in range(0, n, CHUNK)]
    desc = f"decoding {split.provenance.get('task', '')}/{split.provenance.get('split', '')} at {s}px"
    done = 0
    try:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            for (lo, hi), block in zip(bounds, pool.map(lambda b: _decode_chunk(split, prep, *b), bounds)):
                out[lo:hi] = block
                done += hi - lo
                if progress is not None:
                    progress(desc, done, n)
        out.flush()
        del out
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps({
            "fingerprint": split.fingerprint, "n": n, "preprocessing": prep.cache_key(),
            "task": split.provenance.get("task"), "split": split.provenance.get("split"),
        }))
    finally:
        if tmp.exists():
            tmp.unlink()
    return np.load(path, mmap_mode="r")
