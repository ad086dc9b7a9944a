"""ImageNet ReaL ("Are we done with ImageNet?", Beyer et al. 2020): label sets and the ReaL metric.

`real.json` is a list of 50,000 lists of class ids in validation file-name order, entry 0 being
ILSVRC2012_val_00000001.JPEG (1-based file numbers, as timm's RealLabelsImagenet; docs/real.md).
Images are matched on the 8-digit index in their file name, so HF `ILSVRC/imagenet-1k` names such as
`ILSVRC2012_val_00000001_n01751748.JPEG` work as well as the original ones.
ReaL accuracy: images with an empty set are left out of numerator and denominator; a prediction is a hit if
it is in the set. Exercised by `vitbench run` on tasks with `metric = "real"`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitbench import env
from vitbench.errors import VitbenchError

REAL_FILE_TEMPLATE = "ILSVRC2012_val_{:08d}.JPEG"


def default_real_json(data_root: Path | None = None) -> Path:
    """`$VITBENCH_REAL_JSON`, else `<data_root>/real.json`."""
    return env.real_json(data_root)


def load_real_labels(path: Path | str) -> dict[str, list[int]]:
    """File name -> ReaL label set, keyed 1-based (`ILSVRC2012_val_00000001.JPEG` is entry 0)."""
    p = Path(path).expanduser()
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VitbenchError(f"ReaL labels file {p} not found; download real.json from google-research/reassessed-imagenet and pass its path (or set VITBENCH_REAL_JSON)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise VitbenchError(f"cannot read ReaL labels {p} ({exc}); it must be the JSON list of lists from reassessed-imagenet")
    if not isinstance(raw, list) or not all(isinstance(x, list) for x in raw):
        raise VitbenchError(f"{p}: expected a JSON list of lists of class ids")
    return {REAL_FILE_TEMPLATE.format(i + 1): [int(c) for c in labels] for i, labels in enumerate(raw)}


_VAL_INDEX = re.compile(r"ILSVRC2012_val_(\d{8})(?!\d)")


def canonical_val_name(file_name: str) -> str | None:
    """`ILSVRC2012_val_NNNNNNNN.JPEG` for any name carrying the 8-digit validation index, e.g. the HF
    `ILSVRC/imagenet-1k` names `ILSVRC2012_val_00000001_n01751748.JPEG`; None when there is none."""
    m = _VAL_INDEX.search(os.path.basename(file_name))
    return REAL_FILE_TEMPLATE.format(int(m.group(1))) if m else None


def label_sets_for(file_names: Sequence[str], real: dict[str, list[int]]) -> list[list[int]]:
    """ReaL sets in the order of `file_names` (e.g. `ImageSplit.keys`), matched on the 8-digit validation index."""
    names = [canonical_val_name(f) for f in file_names]
    missing = [f for f, n in zip(file_names, names) if n not in real]
    if missing:
        raise VitbenchError(f"{len(missing)} image(s) have no ReaL entry (first: {missing[0]!r}); ReaL needs the ImageNet validation files, named with their 8-digit index as in ILSVRC2012_val_NNNNNNNN.JPEG")
    return [real[n] for n in names]


def real_accuracy(predictions: Sequence[int] | np.ndarray, label_sets: Sequence[Sequence[int]]) -> float:
    """Fraction of images with a non-empty ReaL set whose predicted class is in the set."""
    preds = np.asarray(predictions).reshape(-1)
    if preds.shape[0] != len(label_sets):
        raise ValueError(f"{preds.shape[0]} predictions for {len(label_sets)} label sets")
    scored = hits = 0
    for p, labels in zip(preds.tolist(), label_sets):
        if labels:
            scored += 1
            hits += int(p) in labels
    if scored == 0:
        raise VitbenchError("no image has a non-empty ReaL label set; check that the split is the ImageNet validation set")
    return hits / scored


def real_topk_accuracy(topk_predictions: np.ndarray, label_sets: Sequence[Sequence[int]]) -> float:
    """Top-k ReaL (timm's generalisation): a hit if any of the k predictions [N, k] is in the set."""
    topk = np.asarray(topk_predictions)
    scored = [i for i, s in enumerate(label_sets) if s]
    if not scored:
        raise VitbenchError("no image has a non-empty ReaL label set")
    return float(np.mean([bool(set(topk[i].tolist()) & set(label_sets[i])) for i in scored]))


def real_label_sets_for_split(split, options: dict | None = None, data_root: Path | None = None) -> list[list[int]]:
    """ReaL sets for an ImageNet validation `ImageSplit`, matched by its file names (`split.keys`).
    The file comes from the task's `options.real_json` (relative to the data root) or `default_real_json`."""
    if split.keys is None:
        raise VitbenchError("ReaL needs the ImageNet validation file names, but this split's source has none; use an ImageNet source that keeps file names (local folder or HF image paths)")
    name = (options or {}).get("real_json")
    if name:
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = env.data_root(data_root) / path
    else:
        path = default_real_json(data_root)
    return label_sets_for(split.keys, load_real_labels(path))
