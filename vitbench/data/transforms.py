"""Preprocessing from a model's data config: eval resize, normalisation, train-time augmentation.

`preprocessing_for(model.data_config)` gives a `Preprocessing` (recorded in every result via `.to_dict()`);
`resized_images` returns the decoded uint8 cache at the eval resolution; `normalize` turns uint8 NHWC
batches into model input. The fine-tuning augmentation (computed on the original image) is
`vitbench/data/crops.py`, streamed by `vitbench/data/train_pipeline.py` (docs/preprocessing.md). Eval resize is "squash" (resize to a square ignoring aspect ratio,
as vit_jax / task_adaptation's `tf.image.resize`), "squash_crop" (big_vision few-shot: squash to
size/crop_pct, central crop) or "resize_crop" (short side to size/crop_pct, centre crop, as timm).
Resizing is `resize_impl = "tf"` by default: TensorFlow's bilinear resize without antialiasing
(half-pixel centres) followed by truncation to uint8, exactly what big_vision's `resize` op computes; "pil"
is PIL's resize (antialiased when shrinking, rounded). Exercised by `vitbench run`, `vitbench fewshot` and
`vitbench finetune`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

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


def resized_images(split, prep: Preprocessing, cache_dir: Path | str | None = None, progress=None) -> np.ndarray:
    """All images of `split` at `prep`'s eval resolution, uint8 [N, S, S, 3], from the memory-mapped cache."""
    return cached_resized_images(split, prep, cache_dir=cache_dir, progress=progress)


def _as_uint8_nhwc(batch_uint8_nhwc) -> torch.Tensor:
    if isinstance(batch_uint8_nhwc, np.ndarray):
        batch_uint8_nhwc = torch.from_numpy(np.array(batch_uint8_nhwc, copy=not batch_uint8_nhwc.flags.writeable))
    if batch_uint8_nhwc.ndim != 4 or batch_uint8_nhwc.shape[-1] != 3:
        raise ValueError(f"expected a uint8 batch [B, H, W, 3], got shape {tuple(batch_uint8_nhwc.shape)}")
    return batch_uint8_nhwc


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
