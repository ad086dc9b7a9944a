"""Preprocessing from a model's data config: eval resize, normalisation, train-time augmentation.

`preprocessing_for(model.data_config)` gives a `Preprocessing` (recorded in every result via `.to_dict()`);
`resized_images` returns the decoded uint8 cache at the eval resolution; `normalize` turns uint8 NHWC
batches into model input; `train_augment` is the fine-tuning augmentation: "inception" (crop 5-100% area,
ratio 3/4-4/3, resized back), "resize_crop" (a random `size` square out of images resized to
`train_resize`, BiT / Google's ViT-on-VTAB `resize(448)|random_crop(384)`), or "none"; then an optional
horizontal flip (docs/preprocessing.md). Eval resize is "squash" (resize to a square ignoring aspect ratio,
as vit_jax / task_adaptation's `tf.image.resize`), "squash_crop" (big_vision few-shot: squash to
size/crop_pct, central crop) or "resize_crop" (short side to size/crop_pct, centre crop, as timm).
Resizing is `resize_impl = "tf"` by default: TensorFlow's bilinear resize without antialiasing
(half-pixel centres) followed by truncation to uint8, exactly what big_vision's `resize` op computes; "pil"
is PIL's resize (antialiased when shrinking, rounded). Exercised by `vitbench run`, `vitbench fewshot` and
`vitbench finetune`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitbench.data.image_cache import cached_resized_images
from vitbench.data.resize import (  # noqa: F401  (re-exported)
    PIL_INTERPOLATION,
    RESIZE_IMPLS,
    RESIZE_MODES,
    TRAIN_CROPS,
    TRAIN_RESIZE_RATIO,
    Preprocessing,
    preprocessing_for,
    resize_image,
    tf_bilinear_resize,
)
from vitbench.errors import VitbenchError


def resized_images(split, prep: Preprocessing, cache_dir: Path | str | None = None, progress=None) -> np.ndarray:
    """All images of `split` at `prep`'s eval resolution, uint8 [N, S, S, 3], from the memory-mapped cache."""
    return cached_resized_images(split, prep, cache_dir=cache_dir, progress=progress)


def _as_uint8_nhwc(batch_uint8_nhwc) -> torch.Tensor:
    if isinstance(batch_uint8_nhwc, np.ndarray):
        batch_uint8_nhwc = torch.from_numpy(np.array(batch_uint8_nhwc, copy=not batch_uint8_nhwc.flags.writeable))
    if batch_uint8_nhwc.ndim != 4 or batch_uint8_nhwc.shape[-1] != 3:
        raise ValueError(f"expected a uint8 batch [B, H, W, 3], got shape {tuple(batch_uint8_nhwc.shape)}")
    return batch_uint8_nhwc


def _as_float_nchw(batch_uint8_nhwc) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] (one strided copy into a contiguous float buffer)."""
    x = _as_uint8_nhwc(batch_uint8_nhwc)
    b, h, w, _ = x.shape
    out = torch.empty((b, 3, h, w), dtype=torch.float32, device=x.device)
    out.copy_(x.permute(0, 3, 1, 2))
    return out.mul_(1.0 / 255.0)


def _normalize_float(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def normalize(batch_uint8_nhwc: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W]: (x / 255 - mean) / std, computed as one fused scale and shift.

    Runs on the batch's device: move the uint8 batch to the GPU first (4x fewer bytes than float input)."""
    x = _as_uint8_nhwc(batch_uint8_nhwc)
    b, h, w, _ = x.shape
    out = torch.empty((b, 3, h, w), dtype=torch.float32, device=x.device)
    out.copy_(x.permute(0, 3, 1, 2))
    std = torch.tensor(prep.std, dtype=torch.float32, device=x.device)
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
    shift = (-torch.tensor(prep.mean, dtype=torch.float32, device=x.device) / std).view(1, 3, 1, 1)
    return out.mul_(scale).add_(shift)


def inception_crop_box(height: int, width: int, prep: Preprocessing, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering scale*area with aspect ratio in the given range
    (the Inception / RandomResizedCrop rule, 10 tries then a centre crop)."""
    area = height * width
    lo, hi = prep.train_crop_scale
    log_ratio = (math.log(prep.train_crop_ratio[0]), math.log(prep.train_crop_ratio[1]))
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target = area * (lo + (hi - lo) * u[0])
        ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < prep.train_crop_ratio[0]:
        w, h = width, int(round(width / prep.train_crop_ratio[0]))
    elif in_ratio > prep.train_crop_ratio[1]:
        h, w = height, int(round(height * prep.train_crop_ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_crop_offsets(height: int, width: int, size: int, generator: torch.Generator) -> tuple[int, int]:
    """(top, left) of a uniformly random `size` square inside [height, width] (`tf.image.random_crop`)."""
    if height < size or width < size:
        raise VitbenchError(f"random crop of {size} px from a {height}x{width} image; train_resize must be >= the crop size")
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return top, left


def train_augment(batch_uint8_nhwc: torch.Tensor, prep: Preprocessing, generator: torch.Generator) -> torch.Tensor:
    """Fine-tuning augmentation on cached uint8 images (`prep.train_cache()` resolution), then normalisation.

    "inception": crop 5-100% of the area, ratio 3/4-4/3, resized back to `prep.size` (bilinear, antialiased);
    "resize_crop": a uniformly placed `prep.size` square (the cache is at `train_resize`); "none": the image
    as cached. Then a horizontal flip with p=0.5 when `prep.hflip`. Deterministic given `generator`.
    Returns float [B, 3, S, S]."""
    x = _as_float_nchw(batch_uint8_nhwc)
    b, _, height, width = x.shape
    s = prep.size
    out = torch.empty((b, 3, s, s), dtype=x.dtype, device=x.device)
    for i in range(b):
        if prep.train_crop == "inception":
            top, left, h, w = inception_crop_box(height, width, prep, generator)
            crop = x[i : i + 1, :, top : top + h, left : left + w]
        elif prep.train_crop == "resize_crop":
            top, left = random_crop_offsets(height, width, s, generator)
            crop = x[i : i + 1, :, top : top + s, left : left + s]
        else:
            crop = x[i : i + 1]
        if crop.shape[-2:] != (s, s):
            crop = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        if prep.hflip and bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(-1)
        out[i] = crop[0]
    return _normalize_float(out.clamp_(0.0, 1.0), prep)
