"""Frozen-backbone features: extract pre-logits once per (weights, preprocessing, data, split) and cache them.

Owns the feature cache: `<cache dir>/features/<key>.npy` (float32 [N, D], memory-mappable) plus a
`<key>.json` sidecar written last, holding the key's ingredients, the shape and the SHA-256 of the array
bytes. A file is used only if the sidecar exists, matches the key, and the array has the recorded shape,
dtype and hash; anything else (a crash mid-write, truncation, a flipped byte) is detected, removed and
rebuilt, never silently used. The cache dir is `--cache-dir`, else `$VITBENCH_CACHE_DIR`, else
`~/.cache/vitbench` (the decoded-image cache lives beside it in `images/`). Exercised by
`vitbench fewshot` (via `vitbench.runners.fewshot`) and listed/cleared by `vitbench cache ls|clear`.

Protocol: big_vision runs the model over the whole train and test splits in a fixed order, with the same
eval preprocessing for both (docs/fewshot.md#big_vision-protocol); so do we (`torch.inference_mode`, `model.eval()`).
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitbench import env, fsutil
from vitbench.cells import RunContext
from vitbench.hashing import json_sha256
from vitbench.errors import VitbenchError

IN_PROGRESS = "sidecar missing"  # why-prefix of an entry whose sidecar is not (yet) there

FEATURE_CACHE_VERSION = 1
# Instrumentation for tests and benchmarks: batches / images that went through a backbone in this process.
COUNTERS: dict[str, int] = {"forward_batches": 0, "forward_images": 0, "extractions": 0, "cache_hits": 0, "rebuilt": 0}


def reset_counters() -> None:
    for k in COUNTERS:
        COUNTERS[k] = 0


def forward_pass_count() -> int:
    """Backbone forward batches run in this process (a second run over cached features adds none)."""
    return COUNTERS["forward_batches"]


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir` if given (`--cache-dir`), else the run's or `$VITBENCH_CACHE_DIR`, else ~/.cache/vitbench."""
    return env.cache_dir(cache_dir)


def features_dir(cache_dir: str | Path | None = None) -> Path:
    return default_cache_dir(cache_dir) / "features"


@dataclass(frozen=True)
class FeatureKey:
    """What determines the features. `model`/`task` are labels for `vitbench cache ls`, not part of the key."""

    weights_sha256: str
    preprocessing: dict[str, Any] = field(hash=False)
    split_fingerprint: str
    split: str
    model: str = ""
    task: str = ""
    feature_layer: str = "cls"  # "cls" or "representation" (Backbone.feature_layer_used)

    @property
    def digest(self) -> str:
        payload = {
            "version": FEATURE_CACHE_VERSION, "weights_sha256": self.weights_sha256,
            "preprocessing": self.preprocessing, "split_fingerprint": self.split_fingerprint, "split": self.split,
            "feature_layer": self.feature_layer,
        }
        return json_sha256(payload, 24)

    def stem(self) -> str:
        label = "_".join(p for p in (self.model, self.task, self.split) if p)
        label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        return f"{label}-{self.digest}" if label else self.digest


@dataclass
class Features:
    """Features of one split (`array`: float32 [N, D], memory-mapped) and how they were obtained."""

    array: np.ndarray
    path: Path
    key: FeatureKey
    hit: bool
    rebuilt_reason: str = ""

    def provenance(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "key": self.key.digest, "hit": self.hit, "shape": list(self.array.shape),
            "rebuilt_reason": self.rebuilt_reason or None,
        }


def feature_key(model, split, prep, *, split_name: str, model_name: str = "", task_name: str = "") -> FeatureKey:
    """The cache key of `model`'s features on `split` under preprocessing `prep`."""
    sha = (getattr(model, "weights_info", None) or {}).get("weights_sha256")
    if not sha:
        raise VitbenchError("model has no weights_info['weights_sha256']; build it with vitbench.models.create")
    output = (getattr(model, "weights_info", None) or {}).get("feature_output")
    if output:  # hf:/open_clip:/module sources: the same weights give other features per output (cls, mean, ...)
        sha = f"{sha}#{output}"
    layer = model.feature_layer_used() if hasattr(model, "feature_layer_used") else "cls"
    return FeatureKey(sha, prep.to_dict(), split.fingerprint, split_name, model_name, task_name, layer)


def _meta_path(npy: Path) -> Path:
    return npy.with_suffix(".json")


def load_cached(npy: Path, key: FeatureKey) -> tuple[np.ndarray | None, str]:
    """`(memmap, "")` when `npy` is a complete, verified cache entry for `key`, else `(None, why)`."""
    meta_path = _meta_path(npy)
    if not npy.exists() and not meta_path.exists():
        return None, ""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "sidecar missing or unreadable (interrupted write?)"
    if meta.get("version") != FEATURE_CACHE_VERSION or meta.get("key") != key.digest:
        return None, "sidecar does not match the key"
    try:
        stat = npy.stat()
        array = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        return None, f"array unreadable ({type(exc).__name__}: {exc})"
    if list(array.shape) != meta.get("shape") or array.dtype != np.float32 or stat.st_size != meta.get("bytes"):
        return None, f"array shape/size {list(array.shape)}/{stat.st_size} differs from the sidecar (truncated?)"
    if not fsutil.hash_matches(npy, meta.get("sha256")):  # hashed once per process per file version
        return None, "content hash differs from the sidecar (corrupt file)"
    return array, ""


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _run_backbone(model, split, prep, ctx: RunContext, out: fsutil.NpyWriter, description: str) -> None:
    """Eval preprocessing + `forward_features` over the whole split in order, appended to `out`."""
    from vitbench.data.transforms import normalize, resized_images

    images = resized_images(split, prep, cache_dir=default_cache_dir(ctx.cache_dir) / "images", progress=ctx.progress)
    n, batch = len(split), max(1, int(ctx.eval_batch_size))
    model.eval().to(ctx.device)
    ctx.progress(description, 0, n)
    with torch.inference_mode():
        for start in range(0, n, batch):
            pixels = torch.from_numpy(np.array(images[start:start + batch]))  # copy out of the read-only memmap
            # uint8 goes to the device and is normalised there: a quarter of the bytes of float input
            feats = model.forward_features(normalize(pixels.to(ctx.device, non_blocking=True), prep))
            out.write(feats.float().cpu().numpy())
            COUNTERS["forward_batches"] += 1
            COUNTERS["forward_images"] += len(pixels)
            ctx.progress(description, min(n, start + batch), n)


def _feature_dim(model) -> int:
    return int(model.feature_dim) if hasattr(model, "feature_dim") else int(model.num_features)


def load_or_extract(
    model, split, prep, ctx: RunContext, *, split_name: str, model_name: str = "", task_name: str = "",
) -> Features:
    """Cached features of `split`, extracting (once, atomically) when missing, partial or corrupt."""
    key = feature_key(model, split, prep, split_name=split_name, model_name=model_name, task_name=task_name)
    folder = features_dir(ctx.cache_dir)
    npy = folder / f"{key.stem()}.npy"
    array, why = load_cached(npy, key)
    if array is not None:
        COUNTERS["cache_hits"] += 1
        return Features(array, npy, key, hit=True)
    if why:
        warnings.warn(f"feature cache {npy} is invalid ({why}); rebuilding it", stacklevel=2)
        COUNTERS["rebuilt"] += 1
    if why and not why.startswith(IN_PROGRESS):  # an array without its sidecar may be another process's entry
        try:                                     # in its last step: replaced atomically below, never removed
            _remove(npy, _meta_path(npy))
        except OSError as exc:
            raise VitbenchError(
                f"feature cache {npy} is invalid ({why}) and cannot be removed ({exc.strerror}); "
                "delete it, or pass --cache-dir / set VITBENCH_CACHE_DIR to a writable folder"
            ) from None
    shape = (len(split), _feature_dim(model))
    try:
        writer = fsutil.NpyWriter(npy, np.float32, shape, what="the feature cache")
    except OSError as exc:  # read-only or unwritable (a full disk is DiskFull, a VitbenchError)
        raise VitbenchError(
            f"cannot write the feature cache in {folder} ({exc.strerror}); "
            "pass --cache-dir or set VITBENCH_CACHE_DIR to a writable folder"
        ) from None
    with writer:
        label = " ".join(p for p in (model_name, task_name, split_name) if p)
        _run_backbone(model, split, prep, ctx, writer, f"features {label}".strip())
        digest = writer.commit()
    COUNTERS["extractions"] += 1
    meta = {
        "version": FEATURE_CACHE_VERSION, "key": key.digest, "weights_sha256": key.weights_sha256,
        "preprocessing": key.preprocessing, "split_fingerprint": key.split_fingerprint, "split": key.split,
        "model": key.model, "task": key.task, "shape": list(shape), "dtype": "float32", "feature_layer": key.feature_layer,
        "bytes": writer.nbytes, "sha256": digest, "weights_id": (model.weights_info or {}).get("weights_id"),
    }
    fsutil.atomic_write_json(_meta_path(npy), meta, indent=1, what="the feature cache sidecar")  # last: marks complete
    return Features(np.load(npy, mmap_mode="r"), npy, key, hit=False, rebuilt_reason=why)


def extract_features(model, split, prep, ctx: RunContext, *, split_name: str = "", model_name: str = "",
                     task_name: str = "") -> np.ndarray:
    """Float32 [len(split), model.num_features] pre-logits of `split` (memory-mapped from the cache)."""
    return load_or_extract(model, split, prep, ctx, split_name=split_name, model_name=model_name,
                           task_name=task_name).array


# ------------------------------------------------------------------------------- features of one cell
@functools.lru_cache(maxsize=1)
def memo_model(name: str, weights: str, img_size: int | None, pos_interp: str = "bilinear"):
    """The backbone, kept across consecutive cells of one sweep (they share a model).

    Random init (`weights="none"`) is drawn under a fixed torch seed, so a rerun gets the same weights hash
    and reuses its cached features; the global RNG state is left untouched.
    """
    from vitbench import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return models.create(name, weights=weights, img_size=img_size, pos_interp=pos_interp)


@functools.lru_cache(maxsize=4)
def memo_split(task, split_name: str, data_root, skip_corrupt: bool):
    from vitbench.data import load_split

    return load_split(task, split_name, data_root=data_root, skip_corrupt=skip_corrupt)


def clear_memo() -> None:
    """Forget the model and splits kept between cells (tests; or after the data on disk changed)."""
    memo_model.cache_clear()
    memo_split.cache_clear()


def forget_splits() -> None:
    """Forget the splits kept between cells: each `vitbench run` reads the data as it is when it starts."""
    memo_split.cache_clear()


@dataclass
class CellFeatures:
    """A cell's frozen backbone, its eval preprocessing, and per split name: (split, cached features)."""

    model: Any
    prep: Any
    splits: dict[str, tuple[Any, Features]]

    def provenance(self, roles: dict[str, str]) -> dict[str, Any]:
        """Record provenance; `roles` names the splits by role, e.g. {"train": "train800val200", "test": "test"}
        (the report reads the `train` / `test` entries for lossy or incomplete data)."""
        return {"weights": dict(self.model.weights_info), "preprocessing": self.prep.to_dict(),
                **{role: self.splits[name][0].provenance for role, name in roles.items()},
                "feature_cache": {role: self.splits[name][1].provenance() for role, name in roles.items()}}


def cell_features(cell, ctx: RunContext, split_names: list[str]) -> CellFeatures:
    """Cached features of `cell.model` on the named splits of `cell.task`, eval preprocessing, no augmentation.

    The preprocessing comes from the cell's params (`vitbench.methods.base.FeatureParams`), so methods on
    frozen features (few-shot, kNN, linear probe) share this cache when their preprocessing agrees.
    """
    import dataclasses

    from vitbench.data.transforms import preprocessing_for

    p = cell.params
    model = memo_model(cell.model, cell.weights, cell.img_size, cell.pos_interp)
    prep = preprocessing_for(model.data_config, size=cell.img_size, resize=p["resize"], interpolation=p["interpolation"],
                             crop_pct=p["crop_pct"], resize_impl=p.get("resize_impl", "tf"))
    prep = dataclasses.replace(prep, train_crop="none", hflip=False)  # frozen features: no augmentation
    out: dict[str, tuple[Any, Features]] = {}
    for name in dict.fromkeys(split_names):
        split = memo_split(cell.task, name, ctx.data_root, ctx.skip_corrupt)
        out[name] = (split, load_or_extract(model, split, prep, ctx, split_name=name, model_name=cell.model,
                                            task_name=cell.task.name))
    return CellFeatures(model, prep, out)


def classification_metrics(predictions: np.ndarray, split, metric: str) -> dict[str, float]:
    """top-1 accuracy over the whole split, plus ReaL accuracy when the task asks for it or the split has label sets."""
    out = {"top1": float((np.asarray(predictions) == split.labels).mean()) if len(predictions) else float("nan")}
    real_sets = getattr(split, "real_labels", None)
    if real_sets is not None:
        from vitbench.data.real import real_accuracy

        out["real"] = float(real_accuracy(predictions, real_sets))
    if metric == "real" and "real" not in out:
        out["real"] = float("nan")
    return out


# ----------------------------------------------------------------------------------------- cache listing
def list_feature_cache(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One dict per cache entry (model, task, split, shape, bytes, path, status), newest first."""
    folder = features_dir(cache_dir)
    rows = []
    for npy in sorted(folder.glob("*.npy")) if folder.is_dir() else []:
        row: dict[str, Any] = {"path": str(npy), "bytes": npy.stat().st_size, "status": "ok"}
        try:
            meta = json.loads(_meta_path(npy).read_text(encoding="utf-8"))
            row.update({k: meta.get(k) for k in ("model", "task", "split", "shape", "weights_id")})
            if meta.get("bytes") != row["bytes"]:
                row["status"] = "partial (rebuilt on next use)"
        except (OSError, ValueError):
            row["status"] = "incomplete (rebuilt on next use)"
        row["modified"] = npy.stat().st_mtime
        rows.append(row)
    return sorted(rows, key=lambda r: -r["modified"])


def clear_feature_cache(cache_dir: str | Path | None = None, *, model: str = "", task: str = "") -> tuple[int, int]:
    """Delete feature cache entries (all, or those matching `model`/`task`); returns (entries, bytes) freed."""
    folder = features_dir(cache_dir)
    if not folder.is_dir():
        return 0, 0
    count = freed = 0
    for npy in folder.glob("*.npy*"):
        if npy.suffix != ".npy" and ".tmp-" not in npy.name:
            continue
        meta_path = _meta_path(npy) if npy.suffix == ".npy" else None
        if model or task:
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path else {}
            except (OSError, ValueError):
                meta = {}
            if (model and meta.get("model") != model) or (task and meta.get("task") != task):
                continue
        freed += npy.stat().st_size
        count += 1
        _remove(npy, *([meta_path] if meta_path else []))
    for stray in folder.glob("*.json"):  # sidecars whose array is gone
        if not stray.with_suffix(".npy").exists() and not (model or task):
            _remove(stray)
    fsutil.forget_verified()
    return count, freed
