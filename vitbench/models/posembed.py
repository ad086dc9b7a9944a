"""Position-embedding resizing for a change of input resolution (pure tensor math).

Owns `resample_pos_embed`: the ViT class token (and any other prefix token) is kept apart, the patch part is
reshaped to its 2D grid and resized to the new grid. Two recorded modes:

- `"bilinear"` (default, the paper's behaviour): Google's `checkpoint.interpolate_posembed` and big_vision's
  `resample_posemb` zoom the grid with `scipy.ndimage.zoom(order=1)`, which equals
  `F.interpolate(mode="bilinear", align_corners=True, antialias=False)` (docs/finetune.md#vit_jax).
  Recorded as `"bilinear_align_corners"`.
- `"bicubic"`: what timm's hub/state-dict path does (`resample_abs_pos_embed`: bicubic, align_corners=False,
  antialias=True; docs/models.md#position-embeddings). Recorded as `"bicubic"`.

Exercised by `vitbench run ... --img-size 384` (through `vitbench.models.create(..., img_size=384)`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vitbench.errors import VitbenchError

POS_INTERP_MODES = {"bilinear": "bilinear_align_corners", "bicubic": "bicubic"}


def recorded_mode(pos_interp: str) -> str:
    """The name written into records for a `pos_interp` option (`bilinear` -> `bilinear_align_corners`)."""
    if pos_interp not in POS_INTERP_MODES:
        raise VitbenchError(f"unknown pos_interp {pos_interp!r}; use one of {', '.join(POS_INTERP_MODES)}")
    return POS_INTERP_MODES[pos_interp]


def resize_grid(grid: torch.Tensor, new_hw: tuple[int, int], pos_interp: str = "bilinear") -> torch.Tensor:
    """Resize a [1, H, W, D] (or [H, W, D]) embedding grid to `new_hw` with the given mode; returns [1, h, w, D]."""
    recorded_mode(pos_interp)
    if grid.ndim == 3:
        grid = grid[None]
    dtype = grid.dtype
    x = grid.permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) == tuple(new_hw):
        return grid
    if pos_interp == "bilinear":
        x = F.interpolate(x, size=new_hw, mode="bilinear", align_corners=True, antialias=False)
    else:
        x = F.interpolate(x, size=new_hw, mode="bicubic", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1).to(dtype)


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
    pos_interp: str = "bilinear",
) -> torch.Tensor:
    """Resize a [1, prefix + H*W, D] position embedding to `new_grid`, keeping the prefix (class) tokens as they are.

    `old_grid` defaults to the square grid implied by the length, as in Google's code (grid must be square then).
    Same grid in and out returns the input unchanged.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise VitbenchError(f"position embedding has shape {tuple(pos_embed.shape)}, expected [1, tokens, dim]; "
                            "the checkpoint does not look like a ViT")
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n = patches.shape[1]
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise VitbenchError(f"position embedding has {n} patch tokens, not a square grid; "
                                "pass a checkpoint made for a square input")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise VitbenchError(f"position embedding has {n} patch tokens, not a {old_grid[0]}x{old_grid[1]} grid")
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    grid = patches.reshape(1, old_grid[0], old_grid[1], -1)
    resized = resize_grid(grid, tuple(new_grid), pos_interp).reshape(1, new_grid[0] * new_grid[1], -1)
    return torch.cat([prefix, resized.to(pos_embed.dtype)], dim=1)
