"""Source kinds -> opener functions (imported lazily so `import vitbench.data` stays cheap).

An opener is `open_x(spec: SourceSpec, task: TaskSpec, data_root: Path | None) -> SourceReader` and raises
`SourceUnavailable` when the data is not present (offline, not downloaded, missing path).
"""

from __future__ import annotations

import importlib

from vitbench.data.sources.base import SourceReader, SourceUnavailable

_OPENERS = {
    "digits": ("vitbench.data.sources.digits", "open_digits"),
    "hf": ("vitbench.data.sources.hf", "open_hf"),
    "wds": ("vitbench.data.sources.hf", "open_wds"),
    "parquet": ("vitbench.data.sources.hf", "open_parquet"),
    "disk": ("vitbench.data.sources.hf", "open_disk"),
    "vtab1k_folder": ("vitbench.data.sources.folders", "open_vtab1k_folder"),
    "imagefolder": ("vitbench.data.sources.folders", "open_imagefolder"),
    "torchvision": ("vitbench.data.sources.tv", "open_torchvision"),
}


def open_source(spec, task, data_root) -> SourceReader:
    module, name = _OPENERS[spec.kind]
    return getattr(importlib.import_module(module), name)(spec, task, data_root)


__all__ = ["SourceReader", "SourceUnavailable", "open_source"]
