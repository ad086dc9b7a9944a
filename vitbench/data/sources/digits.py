"""The `digits` source: scikit-learn's embedded 8x8 handwritten digits (1797 images, 10 classes).

Needs no download, so it backs the smoke suite (`vitbench run smoke`) and tests. One source split, "all".
Pixels 0..16 are scaled to uint8 by x * 255 / 16 and copied to 3 channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from vitbench.data.sources.base import SourceReader


@lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8, 3], labels int64 [1797])."""
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = np.clip(np.rint(d.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgb.setflags(write=False)
    return rgb, d.target.astype(np.int64)


class DigitsReader(SourceReader):
    kind = "digits"

    def split_sizes(self) -> dict[str, int]:
        return {"all": len(digits_arrays()[1])}

    def raw_labels(self, split: str, rows: Sequence[int]) -> list[Any]:
        return digits_arrays()[1][np.asarray(rows, dtype=np.int64)].tolist()

    def image(self, split: str, row: int) -> Image.Image:
        return Image.fromarray(digits_arrays()[0][row])

    def describe(self, split: str, row: int) -> str:
        return f"sklearn digits row {row}"

    def identity(self) -> dict[str, Any]:
        import sklearn

        return {"kind": "digits", "id": "sklearn.datasets.load_digits", "version": sklearn.__version__}


def open_digits(spec, task, data_root) -> DigitsReader:
    return DigitsReader(spec)
