"""`ImageSplit`: the images and labels of one task split, plus its fingerprint and provenance.

Every loader (`vitbench.data.load_split`) returns one. Images are decoded lazily, one at a time
(`image(i)`), as RGB PIL images; a corrupt file raises a one-line VitbenchError naming the file and
index. Exercised by every `vitbench run`, `vitbench data prepare` and `vitbench data info`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vitbench.errors import VitbenchError
from vitbench.hashing import json_sha256


def stable_hash(obj: Any, length: int = 20) -> str:
    """sha256 of the canonical JSON of `obj`, truncated."""
    return json_sha256(obj, length)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy of any PIL image (grayscale, palette, RGBA, 16-bit...)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() or 1.0
        img = Image.fromarray((arr * 255.0 / top).astype(np.uint8))
    return img.convert("RGB")


def decode_image(data: bytes | Image.Image | np.ndarray, what: str) -> Image.Image:
    """Decode bytes / PIL / uint8 array into a fully loaded RGB image; VitbenchError naming `what` if corrupt."""
    try:
        if isinstance(data, Image.Image):
            img = data
        elif isinstance(data, np.ndarray):
            img = Image.fromarray(data)
        else:
            img = Image.open(io.BytesIO(data))
        img.load()
        return to_rgb(img)
    except VitbenchError:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise VitbenchError(
            f"corrupt or unreadable image: {what} ({type(exc).__name__}: {exc}); replace the file, or pass --skip-corrupt to skip it (counted in the record)"
        ) from None


@dataclass
class ImageSplit:
    """A task split: `labels` (int64, after the label transform), lazily decoded images, and records.

    `keys` are per-image names when the source has them (file names; used e.g. to match ReaL labels).
    """

    labels: np.ndarray
    fingerprint: str
    provenance: dict[str, Any]
    load_image: Callable[[int], Image.Image] = field(repr=False)
    describe: Callable[[int], str] = field(repr=False)
    keys: list[str] | None = field(default=None, repr=False)
    load_bytes: Callable[[int], bytes | None] | None = field(default=None, repr=False)
    real_labels: list[list[int]] | None = field(default=None, repr=False)  # ReaL sets, for metric = "real"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, i: int) -> Image.Image:
        """Image `i` as a loaded RGB PIL image; corrupt files raise VitbenchError naming the file and index."""
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for a split of {len(self)} images")
        try:
            return to_rgb(self.load_image(i))
        except VitbenchError as exc:
            if "corrupt" in str(exc) and f"index {i}" not in str(exc):
                raise VitbenchError(f"{exc} [split index {i}]") from None
            raise
        except Exception as exc:
            raise VitbenchError(
                f"corrupt or unreadable image at split index {i}: {self.describe(i)} ({type(exc).__name__}: {exc}); pass --skip-corrupt to skip it"
            ) from None

    def image_bytes(self, i: int) -> bytes | None:
        """The source's encoded bytes for image `i` when available (kept verbatim by `data prepare`)."""
        return self.load_bytes(i) if self.load_bytes is not None else None

    def subset(self, indices: np.ndarray | list[int], note: dict[str, Any] | None = None) -> "ImageSplit":
        """The images at `indices` (in that order); `note` is merged into the provenance and fingerprint."""
        idx = np.asarray(indices, dtype=np.int64)
        prov = dict(self.provenance)
        if note:
            prov.update(note)
        prov["n"] = int(idx.size)
        return ImageSplit(
            labels=self.labels[idx],
            fingerprint=stable_hash({"parent": self.fingerprint, "subset": note or idx.tolist()}),
            provenance=prov,
            load_image=lambda i: self.load_image(int(idx[i])),
            describe=lambda i: self.describe(int(idx[i])),
            keys=[self.keys[int(j)] for j in idx] if self.keys is not None else None,
            load_bytes=(lambda i: self.load_bytes(int(idx[i]))) if self.load_bytes is not None else None,
            real_labels=[self.real_labels[int(j)] for j in idx] if self.real_labels is not None else None,
        )

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)
