"""The data layer: task splits from TF-free sources with task_adaptation's exact slices and label maps.

Public API: `load_split(task, split, *, data_root=None, skip_corrupt=False) -> ImageSplit`;
`vitbench.data.transforms` (Preprocessing, preprocessing_for, resized_images, normalize); `crops` and `train_pipeline` (fine-tuning crops and batches);
`vitbench.data.splits.parse_split`; `vitbench.data.labels.LABEL_TRANSFORMS`; `vitbench.data.real`
(ReaL metric); `vitbench.data.prepare` (prepare / verify / info, behind `vitbench data ...`).
"""

import importlib

_HOME = {"ImageSplit": "base", "load_split": "loader", "default_cache_dir": "loader", "default_data_root": "loader"}


def __getattr__(name: str):  # lazy: importing `vitbench.data.splits` does not load every source reader
    if name in _HOME:
        return getattr(importlib.import_module(f"vitbench.data.{_HOME[name]}"), name)
    raise AttributeError(f"module 'vitbench.data' has no attribute {name!r}")


__all__ = ["ImageSplit", "load_split", "default_cache_dir", "default_data_root"]
