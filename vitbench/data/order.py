"""Row order before slicing, and the class-coverage guard applied after it (docs/slices.md).

A slice such as `train[:1000]` or `train[99%:]` means "these rows of the source split in TFDS order". TFDS
shuffles every split once when it is generated, so the paper's and big_vision's prefix and percent slices are
class-mixed. Sources that keep that order (Hugging Face copies, the clip-benchmark WebDataset mirrors, the
vtab-1k folder lists, prepared copies of them) are sliced in their own order, as before. Sources whose own
order is not TFDS's and is usually grouped by class (`imagefolder` trees listed class by class, torchvision
readers such as OxfordIIITPet whose lists are grouped by breed) are first put into one fixed class-mixing
order: rows sorted by the SHA-256 of `"<source split>/<example key>"`, where the key is the example's path
relative to the split folder (imagefolder), its file name (torchvision), or its row number when it has no
name. The order does not depend on how the file system lists files, and adding a file moves only that file.
A source may set `order = "native"` or `order = "hashed"` to override its kind's default; the order used is
recorded in every split's provenance (`order`).

`check_class_coverage` refuses an evaluation split with classes its training split lacks (the symptom of a
slice taken in class-grouped order) unless the task declares it acceptable with
`options.allow_missing_classes`. Exercised by `vitbench run`, `fewshot`, `finetune` and `data prepare`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from vitbench.errors import VitbenchError

ORDERS = ("native", "hashed")
# Source kinds whose own row order is not TFDS's (and is typically grouped by class).
HASHED_BY_DEFAULT = frozenset({"imagefolder", "torchvision"})
HASH_RULE = "rows sorted by sha256('<source split>/<example key>'), key = relative path, file name or row number"


def order_for(kind: str, options: dict[str, Any]) -> str:
    """The order a source of `kind` is sliced in: its `order` option, else the kind's default."""
    order = options.get("order", "hashed" if kind in HASHED_BY_DEFAULT else "native")
    if order not in ORDERS:
        raise VitbenchError(f"source option order = {order!r} is not one of {list(ORDERS)}; use 'native' (the source's own, TFDS-like order) or 'hashed' (a fixed class-mixing order)")
    return order


def hashed_permutation(split: str, keys: list[str]) -> np.ndarray:
    """Row indices of one source split sorted by sha256(f"{split}/{key}") (ties, i.e. equal keys, by row)."""
    digests = [hashlib.sha256(f"{split}/{k}".encode()).digest()[:8] for k in keys]
    return np.asarray(sorted(range(len(keys)), key=lambda i: (digests[i], i)), dtype=np.int64)


def order_provenance(order: str) -> dict[str, Any]:
    if order == "hashed":
        return {"kind": "hashed", "rule": HASH_RULE}
    return {"kind": "native", "rule": "the source's own row order (TFDS order for TFDS-derived copies)"}


def missing_classes(train_labels: np.ndarray, eval_labels: np.ndarray) -> list[int]:
    """Classes present in `eval_labels` but absent from `train_labels`, ascending."""
    return sorted(set(np.unique(eval_labels).tolist()) - set(np.unique(train_labels).tolist()))


def check_class_coverage(task, train_name: str, train_labels: np.ndarray, eval_name: str, eval_labels: np.ndarray) -> dict[str, Any]:
    """Refuse (one line) an evaluation split with classes the training split lacks, unless the task's
    `options.allow_missing_classes` (true, or a string saying why) accepts it. Returns the coverage record."""
    missing = missing_classes(train_labels, eval_labels)
    record = {"train_split": train_name, "eval_split": eval_name, "eval_classes_missing_from_train": len(missing)}
    if not missing:
        return record
    allowed = task.options.get("allow_missing_classes", False)
    if allowed:
        record["accepted_because"] = allowed if isinstance(allowed, str) else "the task declares it acceptable"
        record["missing_classes"] = missing[:50]
        return record
    shown = ", ".join(str(c) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
    raise VitbenchError(
        f"task {task.name!r}: split {eval_name!r} has {len(missing)} class(es) that split {train_name!r} lacks "
        f"({shown}); the slices are probably taken from a class-grouped source order: give the source "
        f"order = \"hashed\" (docs/slices.md), or set options.allow_missing_classes = true on the task if this is intended"
    )
