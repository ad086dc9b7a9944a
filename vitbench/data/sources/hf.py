"""Hugging Face `datasets` sources: hub datasets (`hf`), WebDataset tars (`wds`, incl. the
`clip-benchmark/wds_*` mirrors), local Parquet files (`parquet`) and `save_to_disk` folders (`disk`).

Options: `image_key` (default: first of image/img/webp/jpg/png), `label_key` (default label/cls),
`config`, `revision`, `order_key` (sort rows by this column; wds default `__key__`, because shard files
list as 0, 1, 10, 2... and the mirrors' `__key__` is the row index `s%07d`, docs/sources.md#hugging-face-mirrors),
`key_column` (per-image names), `data_files` ({split: glob} for local files).
Offline (HF_HUB_OFFLINE=1) a hub id that is not in the local HF caches fails at once without importing
`datasets`; online, an unreachable hub fails after one 3 s connection attempt. Exercised by
`vitbench data prepare` and `vitbench run` on tasks with these sources.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitbench import env
from vitbench.data.base import decode_image
from vitbench.data.fingerprint import files_stat, tree_stat
from vitbench.data.sources.base import SourceReader, SourceUnavailable, hub_offline, hub_reachable, local_path, option
from vitbench.errors import VitbenchError

IMAGE_KEYS = ("image", "img", "webp", "jpg", "jpeg", "png")
LABEL_KEYS = ("label", "cls", "labels", "fine_label")


def hf_cache_candidates(repo_id: str) -> list[Path]:
    """Folders where a hub dataset would be cached locally (hub snapshot cache and datasets' arrow cache)."""
    hub, ds = env.hf_hub_cache(), env.hf_datasets_cache()
    return [hub / f"datasets--{repo_id.replace('/', '--')}", ds / repo_id.replace("/", "___")]


class HFReader(SourceReader):
    """A mapping split -> `datasets.Dataset`, images read undecoded so bytes can be kept verbatim."""

    kind = "hf"

    def __init__(self, spec, splits: dict[str, Any], kind: str, extra_identity: dict[str, Any] | None = None):
        super().__init__(spec)
        from datasets import Image as ImageFeature

        self.kind = kind
        first = next(iter(splits.values()))
        columns = first.column_names
        self.image_key = option(spec, "image_key") or next((k for k in IMAGE_KEYS if k in columns), None)
        self.label_key = option(spec, "label_key") or next((k for k in LABEL_KEYS if k in columns), None)
        if self.image_key not in columns or self.label_key not in columns:
            raise VitbenchError(
                f"{kind}:{spec.id}: cannot find image/label columns (image_key={self.image_key!r}, label_key={self.label_key!r}) among {columns}; set image_key / label_key on the source"
            )
        self.splits = {}
        for name, ds in splits.items():
            if isinstance(ds.features.get(self.image_key), ImageFeature):
                ds = ds.cast_column(self.image_key, ImageFeature(decode=False))
            self.splits[name] = ds
        self.order_key = option(spec, "order_key", "__key__" if kind == "wds" and "__key__" in columns else None)
        self.key_column = option(spec, "key_column", "__key__" if kind == "wds" and "__key__" in columns else None)
        self._order: dict[str, np.ndarray | None] = {}
        self._keys: dict[str, list[str | None]] = {}
        self._extra = extra_identity or {}

    def _column(self, split: str, name: str) -> list[Any]:
        ds = self.splits[split]
        if getattr(ds, "_indices", None) is None:
            return ds.data.column(name).to_pylist()
        return list(ds[name])

    def order(self, split: str) -> np.ndarray | None:
        if split not in self._order:
            self._order[split] = None
            if self.order_key:
                keys = self._column(split, self.order_key)
                self._order[split] = np.asarray(sorted(range(len(keys)), key=lambda i: keys[i]), dtype=np.int64)
        return self._order[split]

    def _row(self, split: str, row: int) -> int:
        order = self.order(split)
        return int(order[row]) if order is not None else int(row)

    def split_sizes(self) -> dict[str, int]:
        return {name: len(ds) for name, ds in self.splits.items()}

    def raw_labels(self, split: str, rows: Sequence[int]) -> list[Any]:
        column = self._column(split, self.label_key)
        return [column[self._row(split, r)] for r in rows]

    def _image_value(self, split: str, row: int) -> Any:
        return self.splits[split][self._row(split, row)][self.image_key]

    def image_bytes(self, split: str, row: int) -> bytes | None:
        value = self._image_value(split, row)
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            if value.get("path") and Path(value["path"]).is_file():
                return Path(value["path"]).read_bytes()
        if isinstance(value, bytes):
            return value
        return None

    def image(self, split: str, row: int) -> Image.Image:
        value = self._image_value(split, row)
        data = self.image_bytes(split, row) if isinstance(value, (dict, bytes)) else value
        if data is None:
            raise VitbenchError(f"no image data at {self.describe(split, row)}; check image_key")
        return decode_image(data, self.describe(split, row))

    def describe(self, split: str, row: int) -> str:
        key = self.key(split, row)
        return f"{self.kind}:{self.spec.id} split {split!r} row {self._row(split, row)}" + (f" ({key})" if key else "")

    def key(self, split: str, row: int) -> str | None:
        if split not in self._keys:
            if self.key_column:
                self._keys[split] = [str(k) for k in self._column(split, self.key_column)]
            else:
                paths = self._image_paths(split)
                self._keys[split] = [os.path.basename(p) if p else None for p in paths] if paths else []
        keys = self._keys[split]
        return keys[self._row(split, row)] if keys else None

    def _image_paths(self, split: str) -> list[str | None]:
        ds = self.splits[split]
        if getattr(ds, "_indices", None) is not None:
            return []
        try:  # chunk by chunk: combining the column would copy every image's bytes into memory
            return [p for chunk in ds.data.column(self.image_key).chunks for p in chunk.field("path").to_pylist()]
        except Exception:
            return []

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "id": self.spec.id, "config": option(self.spec, "config"),
            "revision": option(self.spec, "revision"), "order_key": self.order_key,
            "splits": {n: {"rows": len(ds), "fingerprint": getattr(ds, "_fingerprint", None)} for n, ds in self.splits.items()},
            **self._extra,
        }


def _datasets_cache_dir() -> str:
    return str(env.cache_dir() / "hf-datasets")


WDS_HUB_DATA_FILES = ({"train": "train/*.tar", "test": "test/*.tar"}, {"test": "test/*.tar"})


def _load_hub(spec, kind: str, data_files_choices: tuple = (None,)):
    """`datasets.load_dataset` on a hub id, failing fast and in one line when offline or unreachable.
    `data_files_choices` are tried in order (clip-benchmark repos also hold classnames.txt at the root, so
    the tar shards are named explicitly; some mirrors have a test split only)."""
    repo = spec.id
    if hub_offline():
        if not any(p.exists() for p in hf_cache_candidates(repo)):
            raise SourceUnavailable(f"not in the local Hugging Face cache ({hf_cache_candidates(repo)[0]}) and HF_HUB_OFFLINE=1")
    elif not hub_reachable():
        raise SourceUnavailable("the Hugging Face hub cannot be reached (no network?)")
    import datasets

    explicit = option(spec, "data_files")
    first = ""
    for data_files in ((explicit,) if explicit else data_files_choices):
        try:
            dd = datasets.load_dataset(repo, name=option(spec, "config"), revision=option(spec, "revision"), data_files=data_files)
            return dict(dd)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise SourceUnavailable(f"datasets.load_dataset failed: {first[:300]}")


def _load_local(builder: str, data_files: dict[str, list[str]]):
    import datasets

    try:
        return dict(datasets.load_dataset(builder, data_files=data_files, cache_dir=_datasets_cache_dir()))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VitbenchError(f"cannot read {builder} files {sorted(data_files)}: {first[:300]}") from None


def _is_local(spec, data_root) -> Path | None:
    p = local_path(spec, data_root)
    if spec.id.startswith((".", "/", "~", "$")) or p.exists():
        return p
    return None


def _find_files(base: Path, ext: str, spec) -> dict[str, list[str]]:
    """{split: sorted files}: explicit `data_files`, else <base>/<split>/*.ext, <base>/[data/]<split>[-_.]*.ext."""
    explicit = option(spec, "data_files")
    if explicit:
        return {s: sorted(glob.glob(str(base / g)) if not Path(g).is_absolute() else glob.glob(g)) for s, g in explicit.items()}
    found: dict[str, list[str]] = {}
    if base.is_file():
        return {"train": [str(base)]}
    for sub in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
        files = sorted(str(f) for f in sub.glob(f"*.{ext}"))
        if files and sub.name != "data":
            found[sub.name] = files
    for folder in (base, base / "data"):
        for f in sorted(folder.glob(f"*.{ext}")) if folder.is_dir() else []:
            split = f.name.split("-")[0].split("_")[0].split(".")[0]
            found.setdefault(split, []).append(str(f))
    return found


def open_hf(spec, task, data_root) -> HFReader:
    local = _is_local(spec, data_root)
    if local is not None:
        return open_disk(spec, task, data_root) if (local / "dataset_dict.json").exists() or (local / "state.json").exists() else open_parquet(spec, task, data_root)
    return HFReader(spec, _load_hub(spec, "hf"), "hf")


def open_wds(spec, task, data_root) -> HFReader:
    """clip-benchmark style WebDataset: <id>/<split>/*.tar with samples {__key__, webp, cls}."""
    local = _is_local(spec, data_root)
    if local is None:
        return HFReader(spec, _load_hub(spec, "wds", WDS_HUB_DATA_FILES), "wds")
    if not local.exists():
        raise SourceUnavailable(f"folder {local} does not exist")
    files = _find_files(local, "tar", spec)
    if not files:
        raise SourceUnavailable(f"no .tar shards under {local}/<split>/")
    files = {s: sorted(v, key=lambda f: (len(Path(f).stem), Path(f).stem)) for s, v in files.items()}
    return HFReader(spec, _load_local("webdataset", files), "wds", _local_identity(files))


def open_parquet(spec, task, data_root) -> HFReader:
    local = local_path(spec, data_root)
    if not local.exists():
        raise SourceUnavailable(f"path {local} does not exist")
    files = _find_files(local, "parquet", spec)
    if not files:
        raise SourceUnavailable(f"no .parquet files under {local}")
    return HFReader(spec, _load_local("parquet", files), "parquet", _local_identity(files))


def open_disk(spec, task, data_root) -> HFReader:
    local = local_path(spec, data_root)
    if not local.exists():
        raise SourceUnavailable(f"folder {local} does not exist")
    import datasets

    try:
        loaded = datasets.load_from_disk(str(local))
    except Exception as exc:
        raise VitbenchError(f"cannot read save_to_disk folder {local}: {str(exc).splitlines()[0][:300]}") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {option(spec, "split_name", "train"): loaded}
    return HFReader(spec, splits, "disk", {"tree_stat": tree_stat(local)})


def _local_identity(files: dict[str, list[str]]) -> dict[str, Any]:
    """Names plus (size, mtime_ns) of the local files: replacing one changes the fingerprint."""
    return {"files": {s: [Path(f).name for f in v] for s, v in files.items()},
            "files_stat": {s: files_stat(v) for s, v in files.items()}}
