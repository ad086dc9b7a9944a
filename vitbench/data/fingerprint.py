"""Data identity: what a split's fingerprint is made of, and the data fingerprint of a cell.

A split's fingerprint (`ImageSplit.fingerprint`, keying both caches) hashes the source's `identity()`, the
slice ranges, the label transform and the class count. The identity is:
- a prepared copy: the fingerprint its manifest recorded at `vitbench data prepare` (shards are verified
  against the manifest's sha256 on first use, `vitbench.data.prepared`);
- a hub dataset (`hf`, `wds` by id): id, config, revision and the `datasets` library's own fingerprint;
- local files (`imagefolder`, `vtab1k_folder`, local `parquet`/`disk`/`wds`, `torchvision` roots): a hash of
  (relative path, size, mtime_ns) of every file (`files_stat`, `tree_stat`): replacing a file, even by one of
  the same size, changes it, without reading image bytes (one `stat` per file);
- the embedded `digits`: a sha256 of the arrays shipped in the package.
A cell's data fingerprint (`cell_data_fingerprint`) hashes the fingerprints of the splits it reads; the record
stores it, and resume counts a record as done only when it equals the current data's
(`vitbench.planner.plan`). Computed when cells run (memoised per process), not by `--dry-run`.
Exercised by every `vitbench run|fewshot|finetune`; `benchmarks/bench_fingerprint.py` times it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vitbench.data.base import stable_hash

_SPLITS: dict[str, str] = {}  # memo: (task, split, data root) -> split fingerprint, for this process
_CELLS: dict[tuple, str] = {}  # memo: (task, splits, data root) -> cell data fingerprint


def files_stat(paths: Iterable[Path | str], root: Path | str | None = None) -> dict[str, Any]:
    """{"files": n, "stat_sha256": hash of (path relative to `root`, size, mtime_ns) per file, in order}."""
    h, n = hashlib.sha256(), 0
    base = str(root) + os.sep if root is not None else None
    for p in paths:
        p = str(p)
        try:
            st = os.stat(p)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1  # a missing file is part of the identity too
        rel = p[len(base):] if base and p.startswith(base) else p
        h.update(f"{rel}\t{size}\t{mtime}\n".encode())
        n += 1
    return {"files": n, "stat_sha256": h.hexdigest()}


def _walk(folder: str, out: list[tuple[str, int, int]]) -> None:
    with os.scandir(folder) as entries:
        for e in entries:
            if e.is_dir(follow_symlinks=True):
                _walk(e.path, out)
            elif e.is_file(follow_symlinks=True):
                st = e.stat(follow_symlinks=True)
                out.append((e.path, st.st_size, st.st_mtime_ns))


def tree_stat(root: Path | str) -> dict[str, Any]:
    """`files_stat` of every file under `root` (recursively, sorted by relative path; hidden files included)."""
    root = str(root)
    if os.path.isfile(root):
        return files_stat([root])
    found: list[tuple[str, int, int]] = []
    if os.path.isdir(root):
        _walk(root, found)
    found.sort()
    h = hashlib.sha256()
    cut = len(root.rstrip(os.sep)) + 1
    for path, size, mtime in found:
        h.update(f"{path[cut:]}\t{size}\t{mtime}\n".encode())
    return {"files": len(found), "stat_sha256": h.hexdigest()}


def cell_splits(cell) -> list[str]:
    """The task splits a cell may read: train and test, plus any dev splits its params name
    (`select_train_split` / `select_eval_split`, e.g. fine-tuning or linear-probe selection)."""
    names = [cell.task.train_split, cell.task.test_split]
    names += [cell.params.get(k) for k in ("select_train_split", "select_eval_split")]
    return sorted({n for n in names if isinstance(n, str) and n})


def split_fingerprint(task, split: str, data_root: Path | str | None) -> str:
    """Fingerprint of `task`'s `split` as `load_split` finds it now (memoised for this process)."""
    from vitbench.data import load_split

    memo = stable_hash({"task": task.to_dict(), "split": split, "root": str(data_root)})
    if memo not in _SPLITS:
        _SPLITS[memo] = load_split(task, split, data_root=data_root).fingerprint
    return _SPLITS[memo]


def cell_data_fingerprint(cell, data_root: Path | str | None) -> str:
    """Hash of the fingerprints of the splits `cell` reads (stored as the record's `data_fingerprint`)."""
    splits = tuple(cell_splits(cell))
    memo = (cell.task, splits, str(data_root))  # resume checks call this once per recorded cell (100k of them)
    if memo not in _CELLS:
        _CELLS[memo] = stable_hash({s: split_fingerprint(cell.task, s, data_root) for s in splits})
    return _CELLS[memo]


def forget() -> None:
    """Drop the memos (splits and opened sources): each `vitbench run` looks at the data as it is now."""
    from vitbench.data import loader

    _SPLITS.clear()
    _CELLS.clear()
    loader._READERS.clear()  # an opened folder source holds its file list
