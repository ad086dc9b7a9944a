"""The `digits` source: the 8x8 handwritten digits shipped with the package (1797 images, 10 classes).

Needs no download, so it backs the smoke suite (`vitbench run --suite smoke`) and tests. One source split,
"all", in the file order of scikit-learn's `sklearn.datasets.load_digits`. The arrays live in `digits.npz`
beside this module (a copy of scikit-learn's, see `digits.NOTICE.md`), so loading them imports no
scikit-learn. Pixels 0..16 are scaled to uint8 by x * 255 / 16 and copied to 3 channels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitbench.data.sources.base import SourceReader

DIGITS_FILE = Path(__file__).with_name("digits.npz")
COPIED_FROM = "1.9.1"  # the scikit-learn version digits.npz was copied from (its data has not changed since 0.x)


@lru_cache(maxsize=1)
def digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 [1797, 8, 8] in 0..16, labels uint8 [1797]): exactly `load_digits().images` / `.target`."""
    with np.load(DIGITS_FILE) as f:
        return f["images"], f["target"]


@lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8, 3], labels int64 [1797])."""
    images, target = digits_raw()
    gray = np.clip(np.rint(images * 255.0 / 16.0), 0, 255).astype(np.uint8)  # float64 math, as before the copy
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgb.setflags(write=False)
    return rgb, target.astype(np.int64)


@lru_cache(maxsize=1)
def digits_sha256() -> str:
    images, target = digits_raw()
    return hashlib.sha256(np.ascontiguousarray(images).tobytes() + np.ascontiguousarray(target).tobytes()).hexdigest()


class DigitsReader(SourceReader):
    kind = "digits"

    def split_sizes(self) -> dict[str, int]:
        return {"all": len(digits_arrays()[1])}

    def raw_labels(self, split: str, rows: Sequence[int]) -> list[Any]:
        return digits_arrays()[1][np.asarray(rows, dtype=np.int64)].tolist()

    def image(self, split: str, row: int) -> Image.Image:
        return Image.fromarray(digits_arrays()[0][row])

    def describe(self, split: str, row: int) -> str:
        return f"digits row {row}"

    def identity(self) -> dict[str, Any]:
        return {"kind": "digits", "id": "sklearn.datasets.load_digits", "version": COPIED_FROM,
                "sha256": digits_sha256()}


def open_digits(spec, task, data_root) -> DigitsReader:
    return DigitsReader(spec)
