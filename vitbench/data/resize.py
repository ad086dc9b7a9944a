"""Eval-time resizing without torch: the `Preprocessing` record, `preprocessing_for`, `resize_image` and
big_vision's resize (`tf_bilinear_resize`).

Eval resize is "squash" (resize to a square ignoring aspect ratio, as vit_jax / task_adaptation's
`tf.image.resize`), "squash_crop" (both sides to size / crop_pct then a central crop, big_vision's few-shot
evaluator) or "resize_crop" (short side to size / crop_pct, centre crop, as timm). Resizing is
`resize_impl = "tf"` by default: TensorFlow's bilinear resize without antialiasing (half-pixel centres)
followed by truncation to uint8, exactly what big_vision's `resize` op computes; "pil" is PIL's resize
(antialiased when shrinking, rounded); see docs/preprocessing.md. The decoded-image cache
(`vitbench.data.image_cache`) and suite validation use it without importing torch; `vitbench.data.transforms`
re-exports it. Exercised by `vitbench run`, `vitbench fewshot`, `vitbench finetune`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from vitbench.errors import VitbenchError

RESIZE_MODES = ("squash", "squash_crop", "resize_crop")
RESIZE_IMPLS = ("tf", "pil")
TRAIN_CROPS = ("inception", "resize_crop", "none")
# Google's ViT-on-VTAB training pre-processing resizes to 448 and crops 384 (docs/preprocessing.md)
TRAIN_RESIZE_RATIO = 448 / 384
PIL_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input; every field changes the numbers, so all of it is recorded."""

    size: int
    resize: str = "squash"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    train_crop: str = "inception"
    train_crop_scale: tuple[float, float] = (0.05, 1.0)
    # TF's sample_distorted_bounding_box default, which vit_jax and big_vision's inception_crop leave as is
    train_crop_ratio: tuple[float, float] = (0.75, 1.33)
    hflip: bool = True
    resize_impl: str = "tf"
    train_resize: int | None = None  # "resize_crop" training: images resized to this square, then cropped to `size`

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise VitbenchError(f"unknown resize mode {self.resize!r}; use one of {list(RESIZE_MODES)}")
        if self.resize_impl not in RESIZE_IMPLS:
            raise VitbenchError(f"unknown resize_impl {self.resize_impl!r}; use one of {list(RESIZE_IMPLS)}")
        if self.train_crop not in TRAIN_CROPS:
            raise VitbenchError(f"unknown train_crop {self.train_crop!r}; use one of {list(TRAIN_CROPS)}")
        if self.train_crop == "resize_crop" and self.train_source_size() < self.size:
            raise VitbenchError(f"train_resize {self.train_resize} is smaller than the crop size {self.size}; it must be >= it")
        if self.interpolation not in PIL_INTERPOLATION:
            raise VitbenchError(f"unknown interpolation {self.interpolation!r}; use one of {sorted(PIL_INTERPOLATION)}")
        if self.size < 1:
            raise VitbenchError(f"image size must be positive, got {self.size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def cache_key(self) -> dict[str, Any]:
        """The fields that change the decoded uint8 cache (not normalisation or augmentation)."""
        return {"size": self.size, "resize": self.resize, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "resize_impl": self.resize_impl}

    def train_source_size(self) -> int:
        """Side of the cached images training augmentation starts from: `train_resize` for "resize_crop"
        (default size * 448/384, rounded), else `size`."""
        if self.train_crop != "resize_crop":
            return self.size
        return int(self.train_resize) if self.train_resize else int(round(self.size * TRAIN_RESIZE_RATIO))

    def train_cache(self) -> "Preprocessing":
        """The eval-style preprocessing of the cache training reads: a squash to `train_source_size()`."""
        return dataclasses.replace(self, size=self.train_source_size(), resize="squash", crop_pct=1.0, train_resize=None,
                                   train_crop="none", hflip=False)


def preprocessing_for(
    data_config: dict[str, Any], size: int | None = None, resize: str = "squash", *,
    interpolation: str | None = None, crop_pct: float | None = None, resize_impl: str = "tf",
) -> Preprocessing:
    """Preprocessing from a timm-style data config (`input_size`, `mean`, `std`, `interpolation`, `crop_pct`).

    `interpolation` and `crop_pct` override the config's: the protocols fix them (Google's pipelines resize
    bilinearly, whatever timm's config says; big_vision's few-shot eval squashes to 256 and crops 224).
    """
    input_size = data_config.get("input_size", (3, 224, 224))
    side = int(size if size is not None else input_size[-1])
    if interpolation is None and resize_impl == "tf":
        interpolation = "bilinear"  # TF's resize as the Google pipelines call it
    if interpolation is None:
        interpolation = str(data_config.get("interpolation", "bilinear") or "bilinear")
        if interpolation not in PIL_INTERPOLATION:
            interpolation = "bilinear"
    if crop_pct is None:
        crop_pct = float(data_config.get("crop_pct", 1.0) or 1.0) if resize != "squash" else 1.0
    return Preprocessing(
        size=side,
        resize=resize,
        crop_pct=1.0 if resize == "squash" else float(crop_pct),
        interpolation=interpolation,
        mean=tuple(float(m) for m in data_config.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(float(s) for s in data_config.get("std", (0.5, 0.5, 0.5))),
        resize_impl=resize_impl,
    )


def _tf_lerp_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF's `compute_interpolation_weights` with half-pixel centres, in float32: (lower, upper, lerp)."""
    scale = np.float32(n_in / n_out)  # TF: static_cast<float>(in) / out
    src = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(src)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(src), n_in - 1).astype(np.intp)
    return lower, upper, (src - floor).astype(np.float32)


def tf_bilinear_resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [height, width, C] as big_vision's `resize` op: `tf.image.resize(bilinear,
    antialias=False)` (TF's ResizeBilinear with half-pixel centres) then `tf.cast` back to uint8 (truncation).

    TF's kernel, computed the same way in float32: source coordinate in = (out + 0.5) * (in_size / out_size) - 0.5,
    lower = max(floor(in), 0), upper = min(ceil(in), in_size - 1), lerp = in - floor(in);
    top = tl + (tr - tl) * x_lerp, bottom = bl + (br - bl) * x_lerp, value = top + (bottom - top) * y_lerp.
    The horizontal lerp is done once per source row (top and bottom are rows of it), with gathers along the
    leading axis, which is what makes this fast (benchmarks/resize.py)."""
    h_in, w_in = arr.shape[:2]
    if (h_in, w_in) == (height, width):
        return np.array(arr, dtype=np.uint8)
    y0, y1, ylerp = _tf_lerp_weights(h_in, height)
    x0, x1, xlerp = _tf_lerp_weights(w_in, width)
    a = np.ascontiguousarray(np.asarray(arr).transpose(1, 0, 2), dtype=np.float32)  # [W_in, H_in, C]
    left, right = np.take(a, x0, axis=0), np.take(a, x1, axis=0)
    right -= left
    right *= xlerp[:, None, None]
    left += right  # tl + (tr - tl) * x_lerp for every source row: [W_out, H_in, C]
    rows = np.ascontiguousarray(left.transpose(1, 0, 2))  # [H_in, W_out, C]
    top, bottom = np.take(rows, y0, axis=0), np.take(rows, y1, axis=0)
    bottom -= top
    bottom *= ylerp[:, None, None]
    top += bottom
    np.clip(top, 0, 255, out=top)
    return top.astype(np.uint8)  # float -> uint8 truncates, as tf.cast


def _resize(img: Image.Image, width: int, height: int, prep: Preprocessing) -> np.ndarray:
    if prep.resize_impl == "tf":
        if prep.interpolation != "bilinear":
            raise VitbenchError(f"resize_impl 'tf' implements bilinear resizing only, got interpolation {prep.interpolation!r}; use resize_impl = 'pil' for other filters")
        return tf_bilinear_resize(np.asarray(img, dtype=np.uint8), height, width)
    return np.asarray(img.resize((width, height), PIL_INTERPOLATION[prep.interpolation]), dtype=np.uint8)


def resize_image(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """One RGB image resized for eval: uint8 [S, S, 3]."""
    s = prep.size
    if img.mode != "RGB":
        img = img.convert("RGB")
    if prep.resize == "squash":
        return _resize(img, s, s, prep)
    if prep.resize == "squash_crop":  # big_vision few-shot: resize(256) (both sides) then central_crop(224)
        big = max(s, int(round(s / prep.crop_pct)))
        off = (big - s) // 2
        return np.ascontiguousarray(_resize(img, big, big, prep)[off : off + s, off : off + s])
    scale = math.floor(s / prep.crop_pct)
    w, h = img.size
    if w <= h:
        nw, nh = scale, max(1, round(h * scale / w))
    else:
        nw, nh = max(1, round(w * scale / h)), scale
    left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
    return np.ascontiguousarray(_resize(img, nw, nh, prep)[top : top + s, left : left + s])
