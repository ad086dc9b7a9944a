"""Prepare, verify and describe local task copies: `vitbench data prepare | verify | info`.

`prepare_task` materialises a task's named splits once from its sources into Parquet shards (image bytes
kept verbatim from the source, or PNG when the source only has pixels: lossless either way) with a
manifest: source id/version, split definition, resolved index ranges, counts per class, class coverage,
sha256 per shard. Afterwards `load_split` reads them offline. `verify_task` rechecks every shard hash;
`split_info` reports sizes, classes and coverage.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vitbench.data.base import decode_image
from vitbench.data.loader import load_split
from vitbench.data.prepared import MANIFEST, entry_matches_task, manifest_path, read_manifest
from vitbench import fsutil
from vitbench.errors import VitbenchError, unknown_name
from vitbench.spec import TaskSpec

FORMAT = 1
SHARD_BYTES = 256 << 20
SHARD_ROWS = 50_000
CHUNK = 128


sha256_file = fsutil.file_sha256  # one implementation of the shard hash


def default_prepare_splits(task: TaskSpec) -> list[str]:
    """The splits runners use: train_split, val_split and test_split (in that order, deduplicated)."""
    return list(dict.fromkeys(s for s in (task.train_split, task.val_split, task.test_split) if s))


def select_splits(task: TaskSpec, wanted: list[str] | None) -> list[str]:
    if not wanted:
        return default_prepare_splits(task)
    if wanted == ["all"]:
        return list(task.splits)
    for s in wanted:
        if s not in task.splits:
            raise unknown_name(f"split of task {task.name!r}", s, task.splits)
    return wanted


def _encode_item(split, i: int, skip_corrupt: bool) -> tuple[bytes | None, str]:
    """(encoded bytes, encoding) after checking the image decodes; (None, 'corrupt') when skipped."""
    try:
        data = split.image_bytes(i)
        if data is not None:
            decode_image(data, f"{split.describe(i)} [split index {i}]")
            return data, "source"
        buf = io.BytesIO()
        split.image(i).save(buf, format="PNG")
        return buf.getvalue(), "png"
    except VitbenchError:
        if skip_corrupt:
            return None, "corrupt"
        raise


def _write_shard(path: Path, images: list[bytes], labels: list[int], keys: list[str | None]) -> dict[str, Any]:
    table = pa.table({
        "image": pa.array(images, type=pa.binary()),
        "label": pa.array(labels, type=pa.int64()),
        "key": pa.array(keys, type=pa.string()),
    })
    with fsutil.atomic_output(path, what="a prepared shard") as tmp:
        pq.write_table(table, tmp, compression="none")
    return {"rows": len(labels), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def prepare_split(task: TaskSpec, split_name: str, task_dir: Path, *, skip_corrupt=False, progress=None, workers=None) -> dict[str, Any]:
    """Materialise one named split into `task_dir/<split>/shard-*.parquet`; returns its manifest entry."""
    split = load_split(task, split_name, data_root=task_dir.parent, use_prepared=False)
    tmp = fsutil.temp_path(task_dir / split_name)  # a folder; renamed into place when every shard is written
    try:
        tmp.mkdir(parents=True)
        return _fill_split(task, split, split_name, task_dir, tmp, skip_corrupt, progress, workers)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if fsutil.is_disk_full(exc):
            raise fsutil.disk_full(task_dir, None, f"prepared shards of {task.name}/{split_name}") from None
        raise


def _fill_split(task, split, split_name, task_dir, tmp, skip_corrupt, progress, workers) -> dict[str, Any]:
    shards, buf_img, buf_lab, buf_key = [], [], [], []
    kept, skipped, encodings = [], [], {"source": 0, "png": 0}
    size = 0

    def flush():
        nonlocal buf_img, buf_lab, buf_key, size
        if not buf_lab:
            return
        name = f"shard-{len(shards):05d}.parquet"
        info = _write_shard(tmp / name, buf_img, buf_lab, buf_key)
        shards.append({"file": f"{split_name}/{name}", **info})
        buf_img, buf_lab, buf_key, size = [], [], [], 0

    n = len(split)
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        for lo in range(0, n, CHUNK):
            idx = list(range(lo, min(n, lo + CHUNK)))
            for i, (data, enc) in zip(idx, pool.map(lambda j: _encode_item(split, j, skip_corrupt), idx)):
                if data is None:
                    skipped.append(i)
                    continue
                encodings[enc] += 1
                kept.append(i)
                buf_img.append(data)
                buf_lab.append(int(split.labels[i]))
                buf_key.append(split.keys[i] if split.keys is not None else None)
                size += len(data)
                if size >= SHARD_BYTES or len(buf_lab) >= SHARD_ROWS:
                    flush()
            if progress is not None:
                progress(f"prepare {task.name}/{split_name}", min(n, lo + CHUNK), n)
    flush()
    final = task_dir / split_name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    labels = split.labels[np.asarray(kept, dtype=np.int64)]
    counts = np.bincount(labels, minlength=task.num_classes)
    provenance = dict(split.provenance)
    fingerprint = split.fingerprint
    if skipped:
        provenance["skipped_corrupt"] = {"count": len(skipped), "indices": skipped[:1000], "files": [split.describe(i) for i in skipped[:20]]}
        fingerprint = split.subset(kept, {"skipped_corrupt": skipped}).fingerprint
    provenance["n"] = len(kept)
    return {
        "fingerprint": fingerprint,
        "provenance": provenance,
        "n": len(kept),
        "counts_per_class": counts.tolist(),
        "classes_present": int((counts > 0).sum()),
        "class_coverage": float((counts > 0).mean()),
        "missing_classes": np.flatnonzero(counts == 0).tolist(),
        "skipped_corrupt": len(skipped),
        "encodings": encodings,
        "has_keys": split.keys is not None,
        "shards": shards,
    }


def write_manifest(task_dir: Path, manifest: dict[str, Any]) -> None:
    fsutil.atomic_write_json(task_dir / MANIFEST, manifest, indent=1, what="the prepared-data manifest")


def prepare_task(task: TaskSpec, root: Path, splits: list[str] | None = None, *, skip_corrupt=False, progress=None, force=False) -> dict[str, Any]:
    """Prepare `splits` (default: train/val/test splits) of `task` under `root/<task>`; returns the manifest.
    Splits already prepared from the same definition are kept unless `force`."""
    root = Path(root).expanduser()
    task_dir = root / task.name
    try:
        task_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VitbenchError(f"cannot create {task_dir} ({exc}); pass a writable --root")
    fsutil.sweep_stale_temps(task_dir)  # half-written splits of killed prepares
    manifest = read_manifest(root, task.name) or {}
    manifest.update({"format": FORMAT, "task": task.name, "task_spec": task.to_dict()})
    entries = manifest.setdefault("splits", {})
    for name in select_splits(task, splits):
        if not force and name in entries and entry_matches_task(entries[name], task, name) and not verify_entry(task_dir, entries[name]):
            continue
        entries[name] = prepare_split(task, name, task_dir, skip_corrupt=skip_corrupt, progress=progress)
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        write_manifest(task_dir, manifest)
    write_manifest(task_dir, manifest)
    return manifest


@dataclass
class ShardProblem:
    task: str
    split: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"manifest mismatch: task {self.task!r} split {self.split!r} shard {self.file}: {self.problem}"


def verify_entry(task_dir: Path, entry: dict[str, Any], task_name: str = "", split: str = "", progress=None) -> list[ShardProblem]:
    problems = []
    for k, shard in enumerate(entry.get("shards", [])):
        path = task_dir / shard["file"]
        if not path.is_file():
            problems.append(ShardProblem(task_name, split, str(path), "file missing"))
        else:
            got = sha256_file(path)
            if got != shard["sha256"]:
                problems.append(ShardProblem(task_name, split, str(path), f"sha256 {got[:12]}... != manifest {shard['sha256'][:12]}..."))
        if progress is not None:
            progress(f"verify {task_name}/{split}", k + 1, len(entry["shards"]))
    return problems


def verify_task(root: Path, task_name: str, progress=None) -> list[ShardProblem]:
    """Recheck every shard's sha256 against the manifest of `root/<task>`; problems as a list."""
    manifest = read_manifest(Path(root), task_name)
    if manifest is None:
        raise VitbenchError(f"no prepared copy of task {task_name!r}: {manifest_path(Path(root), task_name)} is missing; run `vitbench data prepare` first")
    task_dir = Path(root) / task_name
    out = []
    for split, entry in manifest.get("splits", {}).items():
        out.extend(verify_entry(task_dir, entry, task_name, split, progress))
    return out


def prepared_tasks(root: Path) -> list[str]:
    root = Path(root)
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []


def split_info(task: TaskSpec, root: Path, split: str) -> dict[str, Any]:
    """Size, classes present, coverage and source of one split (prepared copy or sources), or why absent."""
    manifest = read_manifest(Path(root), task.name) or {}
    entry = manifest.get("splits", {}).get(split)
    if entry is not None and entry_matches_task(entry, task, split):
        return {"split": split, "expression": task.splits[split], "n": entry["n"], "classes_present": entry["classes_present"],
                "coverage": entry["class_coverage"], "where": "prepared", "lossy": entry["provenance"].get("lossy", False),
                "substitutions": entry["provenance"].get("substitutions", []),
                "order": (entry["provenance"].get("order") or {}).get("kind", "native")}
    try:
        s = load_split(task, split, data_root=root)
    except VitbenchError as exc:
        return {"split": split, "expression": task.splits[split], "n": None, "where": "absent", "why": str(exc)}
    present = int(np.unique(s.labels).size)
    return {"split": split, "expression": task.splits[split], "n": len(s), "classes_present": present,
            "coverage": present / task.num_classes, "where": f"{s.provenance['source']['kind']}:{s.provenance['source']['id']}",
            "lossy": s.provenance.get("lossy", False), "substitutions": s.provenance.get("substitutions", []),
            "order": (s.provenance.get("order") or {}).get("kind", "native")}
