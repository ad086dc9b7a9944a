"""torchvision dataset sources (`kind = "torchvision"`, `id` = class name, e.g. "CIFAR100").

Source splits per class follow torchvision's own arguments (CIFAR: train/test via `train=`; Pets:
trainval/test; Flowers102, DTD, PCAM, CLEVRClassification: train/val/test; EuroSAT, Caltech101, SUN397:
one split "all"). Options: `root` (default `<data_root>/torchvision`), `split_args` ({split: {kwargs}})
to override, `kwargs` (passed to every split, e.g. {partition = 1} for DTD), `caveat` (recorded).
Known mismatches with VTAB (docs/sources.md#torchvision): row order differs from TFDS, Caltech101 has 101 classes
(no BACKGROUND_Google) vs 102, CLEVRClassification labels are raw counts 3..10 (use clevr_count) and its
test split has no labels. Downloads only when not offline. Exercised by `vitbench data prepare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitbench.data.fingerprint import files_stat, tree_stat
from vitbench.data.sources.base import SourceReader, SourceUnavailable, hub_offline, option
from vitbench.errors import VitbenchError

_TRAIN_FLAG = {"CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "KMNIST", "QMNIST", "USPS"}
_SPLITS = {
    "SVHN": ("train", "test", "extra"),
    "OxfordIIITPet": ("trainval", "test"),
    "Flowers102": ("train", "val", "test"),
    "DTD": ("train", "val", "test"),
    "PCAM": ("train", "val", "test"),
    "CLEVRClassification": ("train", "val", "test"),
    "FGVCAircraft": ("train", "val", "trainval", "test"),
    "StanfordCars": ("train", "test"),
    "Food101": ("train", "test"),
    "GTSRB": ("train", "test"),
    "Country211": ("train", "valid", "test"),
}
_SINGLE = {"EuroSAT", "Caltech101", "SUN397", "Caltech256"}
_LABEL_ATTRS = ("targets", "_labels", "labels", "y")
_FILE_ATTRS = ("_image_files", "_images", "_samples", "samples", "imgs", "_image_paths")


def split_arguments(name: str, spec) -> dict[str, dict[str, Any]]:
    if option(spec, "split_args"):
        return dict(option(spec, "split_args"))
    if name in _TRAIN_FLAG:
        return {"train": {"train": True}, "test": {"train": False}}
    if name in _SINGLE:
        return {"all": {}}
    return {s: {"split": s} for s in _SPLITS.get(name, ("train", "test"))}


class TorchvisionReader(SourceReader):
    kind = "torchvision"

    def __init__(self, spec, datasets: dict[str, Any]):
        super().__init__(spec)
        self.datasets = datasets
        self._labels: dict[str, list[Any]] = {}

    def split_sizes(self) -> dict[str, int]:
        return {s: len(d) for s, d in self.datasets.items()}

    def _all_labels(self, split: str) -> list[Any]:
        if split not in self._labels:
            ds = self.datasets[split]
            labels = None
            for attr in _LABEL_ATTRS:
                value = getattr(ds, attr, None)
                if value is not None and len(value) == len(ds):
                    labels = [None if v is None else int(v) for v in np.asarray(value, dtype=object).tolist()]
                    break
            if labels is None:
                files = self._files(split)
                if files and isinstance(files[0], tuple):
                    labels = [int(f[1]) for f in files]
            if labels is None:  # no label attribute (e.g. PCAM): read items one by one
                labels = [ds[i][1] for i in range(len(ds))]
            self._labels[split] = labels
        return self._labels[split]

    def raw_labels(self, split: str, rows: Sequence[int]) -> list[Any]:
        labels = self._all_labels(split)
        return [labels[r] for r in rows]

    def _files(self, split: str) -> list[Any] | None:
        ds = self.datasets[split]
        for attr in _FILE_ATTRS:
            value = getattr(ds, attr, None)
            if isinstance(value, list) and len(value) == len(ds):
                return value
        return None

    def _path(self, split: str, row: int) -> Path | None:
        files = self._files(split)
        if files is None:
            return None
        item = files[row]
        return Path(item[0] if isinstance(item, tuple) else item)

    def image_bytes(self, split: str, row: int) -> bytes | None:
        path = self._path(split, row)
        return path.read_bytes() if path is not None and path.is_file() else None

    def image(self, split: str, row: int) -> Image.Image:
        try:
            img = self.datasets[split][row][0]
        except Exception as exc:
            raise VitbenchError(f"corrupt or unreadable image: {self.describe(split, row)} ({type(exc).__name__}: {exc})") from None
        return img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))

    def describe(self, split: str, row: int) -> str:
        path = self._path(split, row)
        return str(path) if path is not None else f"torchvision.datasets.{self.spec.id} split {split!r} row {row}"

    def key(self, split: str, row: int) -> str | None:
        path = self._path(split, row)
        return path.name if path is not None else None

    def identity(self) -> dict[str, Any]:
        import torchvision

        return {
            "kind": "torchvision", "id": self.spec.id, "torchvision": torchvision.__version__,
            "kwargs": option(self.spec, "kwargs", {}), "sizes": self.split_sizes(),
            "caveat": option(self.spec, "caveat", "row order is torchvision's, not TFDS's"),
            "files_stat": self._files_stat(),
        }

    def _files_stat(self) -> dict[str, Any]:
        """(size, mtime_ns) of the image files when the dataset lists them, else of its whole root folder."""
        out = {}
        for split in sorted(self.datasets):
            files = self._files(split)
            if files is not None:
                out[split] = files_stat(Path(f[0] if isinstance(f, tuple) else f) for f in files)
            else:
                out[split] = tree_stat(getattr(self.datasets[split], "root", ""))
        return out


def open_torchvision(spec, task, data_root) -> TorchvisionReader:
    import torchvision.datasets as tvd

    name = spec.id
    cls = getattr(tvd, name, None)
    if cls is None or not isinstance(cls, type):
        raise VitbenchError(f"torchvision.datasets has no class {name!r}; check the source id in the suite")
    root = Path(option(spec, "root", "") or (Path(data_root or ".") / "torchvision")).expanduser()
    extra = dict(option(spec, "kwargs", {}))
    out = {}
    for split, args in split_arguments(name, spec).items():
        try:
            out[split] = cls(root=str(root), download=False, **args, **extra)
            continue
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            missing = exc
        if hub_offline():
            raise SourceUnavailable(f"torchvision.datasets.{name} not found under {root} and offline ({str(missing).splitlines()[0][:120]})")
        try:
            out[split] = cls(root=str(root), download=True, **args, **extra)
        except Exception as exc:
            raise SourceUnavailable(f"torchvision.datasets.{name} download into {root} failed: {str(exc).splitlines()[0][:200]}") from None
    return TorchvisionReader(spec, out)
