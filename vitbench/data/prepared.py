"""Reading prepared task copies: `<root>/<task>/manifest.json` plus Parquet shards per split.

`vitbench data prepare` (vitbench/data/prepare.py) writes them; `load_split` reads them first, fully
offline. Shard columns: `image` (encoded bytes: the source's own bytes, or PNG), `label` (int64, label
transform already applied), `key` (file name or null). Each shard's sha256 is checked against the manifest on
first use in a process (`fsutil.hash_matches`), so a corrupt shard stops the run with one line pointing to
`vitbench data verify` / `prepare` instead of feeding wrong labels or images into a number.
Exercised by every `vitbench run` after a prepare.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vitbench import fsutil
from vitbench.data.base import ImageSplit, decode_image
from vitbench.errors import VitbenchError
from vitbench.spec import TaskSpec

MANIFEST = "manifest.json"


def manifest_path(root: Path, task_name: str) -> Path:
    return Path(root) / task_name / MANIFEST


def read_manifest(root: Path, task_name: str) -> dict[str, Any] | None:
    path = manifest_path(root, task_name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VitbenchError(f"{path}: unreadable manifest ({exc}); rerun `vitbench data prepare` for task {task_name!r}")


def entry_matches_task(entry: dict[str, Any], task: TaskSpec, split: str) -> bool:
    """Whether a manifest split entry was prepared from the same definition the task has now."""
    from vitbench.data.order import HASHED_BY_DEFAULT

    prov = entry.get("provenance", {})
    # copies sliced from a class-grouped source before slices had a recorded order are stale (docs/slices.md)
    unordered = "order" not in prov and (prov.get("source") or {}).get("kind") in HASHED_BY_DEFAULT
    return (
        prov.get("paper_expression") == task.splits.get(split)
        and prov.get("num_classes") == task.num_classes
        and not unordered
    )


@lru_cache(maxsize=64)
def _open_shard(path: str) -> pa.Table:
    return pq.read_table(path, memory_map=True)


class _ShardedColumn:
    """Row access across a split's shards without loading images up front."""

    def __init__(self, files: list[Path]):
        self.files = [str(f) for f in files]
        self.tables = [_open_shard(f) for f in self.files]
        self.offsets = np.cumsum([0] + [t.num_rows for t in self.tables])

    def locate(self, i: int) -> tuple[int, int]:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return s, i - int(self.offsets[s])

    def value(self, column: str, i: int) -> Any:
        s, r = self.locate(i)
        return self.tables[s].column(column)[r].as_py()

    def column(self, column: str) -> list[Any]:
        return [v for t in self.tables for v in t.column(column).to_pylist()]


def _check_shard(path: Path, shard: dict[str, Any], task: TaskSpec, split: str, root: Path) -> None:
    """The shard's bytes hash to the manifest's sha256 (hashed once per process per file version)."""
    if not fsutil.hash_matches(path, shard.get("sha256")):
        from vitbench.data.loader import suite_command_hint

        raise VitbenchError(
            f"prepared shard {path} (task {task.name!r} split {split!r}) does not match its manifest sha256 (corrupt "
            f"or replaced); check with `vitbench data verify --root {root}` and rebuild with "
            f"`{suite_command_hint(task, root)} --force`"
        )


def load_prepared_split(task: TaskSpec, split: str, root: Path) -> ImageSplit | None:
    """The prepared copy of `task`/`split` under `root`, or None when there is none (or it is stale)."""
    manifest = read_manifest(root, task.name)
    if manifest is None or split not in manifest.get("splits", {}):
        return None
    entry = manifest["splits"][split]
    if not entry_matches_task(entry, task, split):
        return None
    base = Path(root) / task.name
    files = [base / s["file"] for s in entry["shards"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise VitbenchError(f"prepared task {task.name!r} split {split!r}: shard {missing[0]} is missing; rerun `vitbench data prepare` for it")
    for f, shard in zip(files, entry["shards"]):
        _check_shard(f, shard, task, split, root)
    try:
        shards = _ShardedColumn(files)
    except (OSError, pa.ArrowException) as exc:
        raise VitbenchError(
            f"prepared task {task.name!r} split {split!r}: a shard is unreadable ({type(exc).__name__}); "
            f"run `vitbench data verify --root {root}` and re-prepare the task with `vitbench data prepare ... --force`"
        ) from None
    labels = np.asarray(shards.column("label"), dtype=np.int64)
    keys = shards.column("key") if entry.get("has_keys") else None

    def describe(i: int) -> str:
        s, r = shards.locate(i)
        return f"{shards.files[s]} row {r}"

    provenance = dict(entry["provenance"])
    provenance["prepared"] = {"root": str(root), "manifest": str(manifest_path(root, task.name)), "created": manifest.get("created")}
    return ImageSplit(
        labels=labels,
        fingerprint=entry["fingerprint"],
        provenance=provenance,
        load_image=lambda i: decode_image(shards.value("image", i), describe(i)),
        describe=describe,
        keys=keys,
        load_bytes=lambda i: shards.value("image", i),
    )
