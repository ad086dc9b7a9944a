"""Google's `.npz` checkpoints (the paper's release format) <-> timm state dicts.

Owns `vit_npz_to_timm` (vit_jax layout `Transformer/encoderblock_i/MultiHeadDotProductAttention_1/...`, with an
optional `opt/target/` prefix, and big_vision's `params/[img/]` layout with sub-module indices 0/0/1/0 and
top-level `pos_embedding`), `timm_vit_to_npz` (the inverse, used to write test fixtures and to export), and
`load_bit_npz` (BiT `resnet/...` files, through timm's own loader). The checkpoint's `head` is not carried
over (the paper removes the pre-training head, docs/finetune.md#paper-recipe); its representation layer
`pre_logits` (tanh(Dense), i21k checkpoints) comes back as `pre_logits.fc.*`, which `create` keeps beside the
trunk for few-shot features (big_vision reads `pre_logits`; docs/preprocessing.md) and fine-tuning does not use.
Key names and transposes: docs/models.md#state-dict-keys.
Exercised by `vitbench run --model vit_b16 --weights ViT-B_16.npz`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitbench.errors import VitbenchError

_PREFIXES = ("", "opt/target/", "params/", "params/img/")


def npz_kind(arrays: dict[str, np.ndarray]) -> str:
    """`"vit"` or `"bit"` for a Google npz key set; raises VitbenchError for anything else."""
    if any(k.endswith("root_block/standardized_conv2d/kernel") for k in arrays):
        return "bit"
    if any(k.endswith("embedding/kernel") for k in arrays):
        return "vit"
    shown = ", ".join(sorted(arrays)[:4])
    raise VitbenchError(f"this .npz is neither a Google ViT nor a BiT checkpoint (first keys: {shown}); "
                        "pass the original vit_jax/big_vision/big_transfer file")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _pos_embedding(w: dict[str, np.ndarray], big_vision: bool) -> np.ndarray:
    """vit_jax keeps a class-token slot in the position embedding; big_vision adds position embeddings to the
    patches only, before prepending `cls`, which equals a zero slot for the class token."""
    if not big_vision:
        return w["Transformer/posembed_input/pos_embedding"]
    pe = w["pos_embedding"]
    n = pe.shape[1]
    if "cls" in w and int(np.sqrt(n)) ** 2 == n:
        pe = np.concatenate([np.zeros_like(pe[:, :1]), pe], axis=1)
    return pe


def vit_npz_to_timm(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Convert a Google ViT npz (as a dict of arrays) to a timm `VisionTransformer` state dict (no head)."""
    prefix = next((p for p in _PREFIXES if f"{p}embedding/kernel" in arrays), None)
    if prefix is None:
        raise VitbenchError("ViT .npz has no 'embedding/kernel' under a known prefix "
                            f"({', '.join(repr(p) for p in _PREFIXES)}); pass an original vit_jax/big_vision file")
    w = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    big_vision = prefix.startswith("params/") or "pos_embedding" in w
    scanned = "Transformer/encoderblock/LayerNorm_0/scale" in w
    mha, mlp, ln2 = (0, 0, 1) if big_vision else (1, 3, 2)
    try:
        sd = {
            "patch_embed.proj.weight": _t(w["embedding/kernel"].transpose(3, 2, 0, 1)),
            "patch_embed.proj.bias": _t(w["embedding/bias"]),
            "cls_token": _t(w["cls"]),
            "pos_embed": _t(_pos_embedding(w, big_vision)),
            "norm.weight": _t(w["Transformer/encoder_norm/scale"]),
            "norm.bias": _t(w["Transformer/encoder_norm/bias"]),
        }
        if scanned:
            depth = w["Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
        else:
            depth = sum(1 for k in w if k.startswith("Transformer/encoderblock_") and k.endswith("LayerNorm_0/scale"))
        for i in range(depth):
            base = "Transformer/encoderblock/" if scanned else f"Transformer/encoderblock_{i}/"

            def g(name: str) -> np.ndarray:
                a = w[base + name]
                return a[i] if scanned else a

            att = f"MultiHeadDotProductAttention_{mha}/"
            b = f"blocks.{i}."
            sd[b + "norm1.weight"], sd[b + "norm1.bias"] = _t(g("LayerNorm_0/scale")), _t(g("LayerNorm_0/bias"))
            # q, k, v kernels are (D, heads, head_dim): flatten to (D, D), transpose to (out, in), stack as [q; k; v]
            sd[b + "attn.qkv.weight"] = torch.cat([_t(g(att + f"{n}/kernel").reshape(g(att + f"{n}/kernel").shape[0], -1)).T
                                                   for n in ("query", "key", "value")])
            sd[b + "attn.qkv.bias"] = torch.cat([_t(g(att + f"{n}/bias").reshape(-1)) for n in ("query", "key", "value")])
            out = g(att + "out/kernel")  # (heads, head_dim, D)
            sd[b + "attn.proj.weight"] = _t(out.reshape(-1, out.shape[-1])).T.contiguous()
            sd[b + "attn.proj.bias"] = _t(g(att + "out/bias"))
            sd[b + "norm2.weight"], sd[b + "norm2.bias"] = _t(g(f"LayerNorm_{ln2}/scale")), _t(g(f"LayerNorm_{ln2}/bias"))
            for r in range(2):
                sd[b + f"mlp.fc{r + 1}.weight"] = _t(g(f"MlpBlock_{mlp}/Dense_{r}/kernel")).T.contiguous()
                sd[b + f"mlp.fc{r + 1}.bias"] = _t(g(f"MlpBlock_{mlp}/Dense_{r}/bias"))
        if "pre_logits/kernel" in w and "pre_logits/bias" in w:  # representation layer (i21k checkpoints)
            sd["pre_logits.fc.weight"] = _t(w["pre_logits/kernel"]).T.contiguous()
            sd["pre_logits.fc.bias"] = _t(w["pre_logits/bias"])
    except KeyError as exc:
        raise VitbenchError(f"ViT .npz is missing key {prefix}{exc.args[0]}; the file is incomplete or "
                            "not a plain ViT (hybrid/MAP-head checkpoints are not supported)") from None
    return {k: v.contiguous() for k, v in sd.items()}


def timm_vit_to_npz(state_dict: dict[str, torch.Tensor], num_heads: int) -> dict[str, np.ndarray]:
    """Export a timm ViT state dict under vit_jax's npz key names (inverse of `vit_npz_to_timm`)."""
    sd = {k: v.detach().cpu().float().numpy() for k, v in state_dict.items()}
    dim = sd["cls_token"].shape[-1]
    hd = dim // num_heads
    w = {
        "embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
    }
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        att = p + "MultiHeadDotProductAttention_1/"
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w[att + f"{n}/kernel"] = qkv_w[j * dim:(j + 1) * dim].T.reshape(dim, num_heads, hd)
            w[att + f"{n}/bias"] = qkv_b[j * dim:(j + 1) * dim].reshape(num_heads, hd)
        w[att + "out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(num_heads, hd, dim)
        w[att + "out/bias"] = sd[b + "attn.proj.bias"]
        w[p + "LayerNorm_2/scale"], w[p + "LayerNorm_2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        for r in range(2):
            w[p + f"MlpBlock_3/Dense_{r}/kernel"] = sd[b + f"mlp.fc{r + 1}.weight"].T
            w[p + f"MlpBlock_3/Dense_{r}/bias"] = sd[b + f"mlp.fc{r + 1}.bias"]
    return {k: np.ascontiguousarray(v) for k, v in w.items()}


def load_bit_npz(trunk: nn.Module, path: str | Path) -> None:
    """Load a big_transfer BiT `.npz` into a timm ResNetV2 trunk with timm's loader (prefix `resnet/`)."""
    from timm.models.resnetv2 import _load_weights

    try:
        _load_weights(trunk, str(path), prefix="resnet/")
    except (KeyError, RuntimeError, ValueError, AttributeError) as exc:
        raise VitbenchError(f"BiT .npz {str(path)!r} does not fit this model ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:160]}); pass the BiT file of the same size") from None
