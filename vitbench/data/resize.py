"""Eval-time resizing without torch: the `Preprocessing` record, `preprocessing_for` and `resize_image`.

Eval resize is "squash" (resize to a square ignoring aspect ratio, as vit_jax / task_adaptation's
`tf.image.resize`), "squash_crop" (both sides to size / crop_pct then a central crop, big_vision's few-shot
evaluator) or "resize_crop" (short side to size / crop_pct, centre crop, as timm); see docs/preprocessing.md.
The decoded-image cache (`vitbench.data.image_cache`) and suite validation use it without importing torch;
`vitbench.data.transforms` re-exports it. Exercised by `vitbench run`, `vitbench fewshot`, `vitbench finetune`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from vitbench.errors import VitbenchError

RESIZE_MODES = ("squash", "squash_crop", "resize_crop")
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
    train_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise VitbenchError(f"unknown resize mode {self.resize!r}; use one of {list(RESIZE_MODES)}")
        if self.interpolation not in PIL_INTERPOLATION:
            raise VitbenchError(f"unknown interpolation {self.interpolation!r}; use one of {sorted(PIL_INTERPOLATION)}")
        if self.size < 1:
            raise VitbenchError(f"image size must be positive, got {self.size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def cache_key(self) -> dict[str, Any]:
        """The fields that change the decoded uint8 cache (not normalisation or augmentation)."""
        return {"size": self.size, "resize": self.resize, "crop_pct": self.crop_pct, "interpolation": self.interpolation}


def preprocessing_for(
    data_config: dict[str, Any], size: int | None = None, resize: str = "squash", *,
    interpolation: str | None = None, crop_pct: float | None = None,
) -> Preprocessing:
    """Preprocessing from a timm-style data config (`input_size`, `mean`, `std`, `interpolation`, `crop_pct`).

    `interpolation` and `crop_pct` override the config's: the protocols fix them (Google's pipelines resize
    bilinearly, whatever timm's config says; big_vision's few-shot eval squashes to 256 and crops 224).
    """
    input_size = data_config.get("input_size", (3, 224, 224))
    side = int(size if size is not None else input_size[-1])
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
    )


def resize_image(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """One RGB image resized for eval: uint8 [S, S, 3]."""
    method = PIL_INTERPOLATION[prep.interpolation]
    s = prep.size
    if img.mode != "RGB":
        img = img.convert("RGB")
    if prep.resize == "squash":
        out = img.resize((s, s), method)
    elif prep.resize == "squash_crop":  # big_vision few-shot: resize(256) (both sides) then central_crop(224)
        big = max(s, int(round(s / prep.crop_pct)))
        img = img.resize((big, big), method)
        off = (big - s) // 2
        out = img.crop((off, off, off + s, off + s))
    else:
        scale = math.floor(s / prep.crop_pct)
        w, h = img.size
        if w <= h:
            nw, nh = scale, max(1, round(h * scale / w))
        else:
            nw, nh = max(1, round(w * scale / h)), scale
        img = img.resize((nw, nh), method)
        left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
        out = img.crop((left, top, left + s, top + s))
    return np.asarray(out, dtype=np.uint8)
