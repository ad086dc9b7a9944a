"""Decoded-image cache: each split's images resized once to uint8 [N, S, S, 3] in a memory-mappable .npy.

Keyed by the split's fingerprint (which carries the data's identity, `vitbench.data.fingerprint`) plus the
resize fields of the preprocessing (size, resize mode, crop_pct, interpolation), so repeated epochs and
feature extraction never decode the source images again. Integrity, as for the feature cache: the array is
streamed into a preallocated temp file, fsynced and renamed (`vitbench.fsutil.NpyWriter`); then a `<key>.json`
sidecar holding the key, shape, byte count and SHA-256 is written last. An entry is used only when the
sidecar matches and the bytes hash to it (checked on first use per process); anything else (truncation,
zeroed or random bytes, a missing sidecar) is removed and rebuilt, so features are never computed from
unverified images. Default location: `$VITBENCH_CACHE_DIR/images` (else ~/.cache/vitbench/images).
Exercised by `vitbench run`, `fewshot`, `finetune` and `vitbench cache`.
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vitbench import env, fsutil
from vitbench.data.base import stable_hash
from vitbench.data.resize import resize_image
from vitbench.errors import VitbenchError

IN_PROGRESS = "sidecar missing"  # why-prefix of an entry whose sidecar is not (yet) there

CHUNK = 256
IMAGE_CACHE_VERSION = 2  # 2: sidecar with sha256 (version-1 entries, unverifiable, are rebuilt)


def image_cache_dir(cache_dir: Path | str | None = None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else env.cache_dir() / "images"


def cache_file(split, prep, cache_dir: Path | str | None = None) -> Path:
    key = stable_hash({"fingerprint": split.fingerprint, "n": len(split), **prep.cache_key()}, length=24)
    return image_cache_dir(cache_dir) / f"{key}.npy"


def _decode_chunk(split, prep, lo: int, hi: int) -> np.ndarray:
    return np.stack([resize_image(split.image(i), prep) for i in range(lo, hi)])


def load_verified(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str]:
    """`(memmap, "")` for a complete entry whose bytes hash to its sidecar, else `(None, why)` ("" = absent)."""
    meta_path = path.with_suffix(".json")
    if not path.exists() and not meta_path.exists():
        return None, ""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "sidecar missing or unreadable (interrupted write?)"
    if not isinstance(meta, dict) or meta.get("version") != IMAGE_CACHE_VERSION or meta.get("key") != path.stem:
        return None, "sidecar does not match the key"
    try:
        size = path.stat().st_size
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        return None, f"array unreadable ({type(exc).__name__})"
    if tuple(arr.shape) != tuple(shape) or arr.dtype != np.uint8 or size != meta.get("bytes"):
        return None, f"array shape/size {tuple(arr.shape)}/{size} differs from the sidecar (truncated?)"
    if not fsutil.hash_matches(path, meta.get("sha256")):
        return None, "content hash differs from the sidecar (corrupt file)"
    return arr, ""


def _discard(path: Path, why: str) -> None:
    warnings.warn(f"decoded-image cache {path} is invalid ({why}); rebuilding it", stacklevel=3)
    for p in (path, path.with_suffix(".json")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise VitbenchError(
                f"decoded-image cache {path} is invalid ({why}) and cannot be removed ({exc.strerror}); "
                "delete it or pass --cache-dir with a writable folder"
            ) from None


def cached_resized_images(split, prep, cache_dir: Path | str | None = None, progress=None, workers: int | None = None) -> np.ndarray:
    """uint8 [N, S, S, 3] (read-only memmap, verified); built on first use with a thread pool over chunks."""
    path = cache_file(split, prep, cache_dir)
    n, s = len(split), prep.size
    shape = (n, s, s, 3)
    arr, why = load_verified(path, shape)
    if arr is not None:
        return arr
    if why and not why.startswith(IN_PROGRESS):  # no sidecar yet: maybe another process's entry in its last
        _discard(path, why)                      # step; replaced atomically below, never removed
    elif why:
        warnings.warn(f"decoded-image cache {path} is invalid ({why}); rebuilding it", stacklevel=2)
    bounds = [(lo, min(n, lo + CHUNK)) for lo in range(0, n, CHUNK)]
    desc = f"decoding {split.provenance.get('task', '')}/{split.provenance.get('split', '')} at {s}px"
    done = 0  # computed before the writer exists: nothing runs between its creation and `with writer`
    try:
        writer = fsutil.NpyWriter(path, np.uint8, shape, what="the decoded-image cache")
    except OSError as exc:  # read-only or unwritable cache folder (a full disk is DiskFull, a VitbenchError)
        raise VitbenchError(
            f"cannot write the decoded-image cache for {split.provenance.get('task', '')}/"
            f"{split.provenance.get('split', '')} at {s}px in {path.parent} ({exc.strerror}); "
            "pass --cache-dir (or set VITBENCH_CACHE_DIR) to a writable folder"
        ) from None
    with writer:
        pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))
        try:
            for (lo, hi), block in zip(bounds, pool.map(lambda b: _decode_chunk(split, prep, *b), bounds)):
                writer.write(block)
                done += hi - lo
                if progress is not None:
                    progress(desc, done, n)
        finally:  # on Ctrl-C / SIGTERM drop the queued chunks instead of decoding the rest of the split first
            pool.shutdown(wait=True, cancel_futures=True)
        digest = writer.commit()
    fsutil.atomic_write_json(path.with_suffix(".json"), {  # written last: its presence means "complete"
        "version": IMAGE_CACHE_VERSION, "key": path.stem, "fingerprint": split.fingerprint, "n": n,
        "shape": list(shape), "bytes": writer.nbytes, "sha256": digest, "preprocessing": prep.cache_key(),
        "task": split.provenance.get("task"), "split": split.provenance.get("split"),
    }, indent=1, what="the decoded-image cache sidecar")
    return np.load(path, mmap_mode="r")
