"""The backbone object every runner gets from `vitbench.models.create`, and the content hash of its weights.

Owns `Backbone` (an `nn.Module` wrapping a timm or torchvision network): `forward_features(x) -> [B, D]` is the
pre-logits representation (ViT: class token after the final LayerNorm, or with `set_feature_layer("pre_logits")`
the checkpoint's tanh(Dense) representation layer when it has one, as big_vision's few-shot reads; BiT:
global-average-pooled features), `forward(x)` returns logits from a new zero-initialised `Linear(D, K)` head when
one was asked for (the paper removes the whole pre-training head and adds one zero-initialised D x K layer,
docs/finetune.md#paper-recipe), and `num_features`, `data_config`, `weights_info` describe it.
Also owns `state_dict_sha256`. Exercised by `vitbench run`, `vitbench fewshot`, `vitbench finetune`.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn


def _tensor_digest(t: torch.Tensor) -> bytes:
    t = t.detach()
    if t.numel() == 0:
        return b""
    t = t.to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(memoryview(t.view(torch.uint8).numpy())).digest()


def state_dict_sha256(state_dict: dict[str, torch.Tensor], threads: int | None = None) -> str:
    """SHA-256 over (name, dtype, shape, SHA-256 of the raw bytes) of every tensor, in sorted key order.

    Per-tensor digests are computed on a few threads (hashlib releases the GIL), so hashing ViT-B/16's 343 MB
    costs a fraction of loading it; the result does not depend on the thread count.
    """
    keys = sorted(state_dict)
    workers = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda k: _tensor_digest(state_dict[k]), keys))
    h = hashlib.sha256()
    for key, digest in zip(keys, digests):
        t = state_dict[key]
        h.update(f"{key}|{str(t.dtype)}|{tuple(t.shape)}|".encode() + digest)
    return h.hexdigest()


class Backbone(nn.Module):
    """A pretrained network with its classifier removed, plus an optional new zero-initialised head.

    `trunk` is the library model with its classifier removed (timm `num_classes=0`, torchvision classifier
    replaced by `Identity`); `library` says how to get pre-logits from it.
    """

    def __init__(self, trunk: nn.Module, library: str, num_features: int, data_config: dict[str, Any],
                 weights_info: dict[str, Any], num_classes: int | None = None, representation: nn.Module | None = None):
        super().__init__()
        self.trunk = trunk
        self.representation = representation  # the checkpoint's tanh(Dense) pre-logits layer, when it has one
        self.feature_layer = "cls"
        self.library = library
        self.num_features = int(num_features)
        self.data_config = dict(data_config)
        self.weights_info = dict(weights_info)
        self.head: nn.Module | None = None
        self.num_classes = 0
        if num_classes:
            self.reset_head(num_classes)

    def reset_head(self, num_classes: int) -> None:
        """Attach a new `Linear(num_features, num_classes)` with zero weight and bias (the paper's head)."""
        head = nn.Linear(self.num_features, int(num_classes))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        p = next(self.trunk.parameters(), None)
        self.head = head.to(p.device) if p is not None else head
        self.num_classes = int(num_classes)

    def set_feature_layer(self, layer: str) -> str:
        """Choose what `forward_features` returns: "pre_logits" (big_vision's `out["pre_logits"]`: tanh(Dense(cls))
        when the checkpoint has a representation layer, else the class token) or "cls" (always the class token
        after the final LayerNorm / pooled features). Returns what will actually run: "representation" or "cls"."""
        if layer not in ("pre_logits", "cls"):
            raise ValueError(f"feature layer must be 'pre_logits' or 'cls', got {layer!r}")
        self.feature_layer = layer
        return self.feature_layer_used()

    @property
    def feature_dim(self) -> int:
        """Width of `forward_features`' output under the chosen feature layer."""
        return int(self.representation.out_features) if self.feature_layer_used() == "representation" else self.num_features

    def feature_layer_used(self) -> str:
        return "representation" if self.feature_layer == "pre_logits" and self.representation is not None else "cls"

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        if self.library == "timm":
            return self.trunk.forward_head(self.trunk.forward_features(x), pre_logits=True)
        return torch.flatten(self.trunk(x), 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features [B, D] for a normalised image batch [B, 3, H, W] from the chosen `feature_layer`."""
        pooled = self._pooled(x)
        if self.feature_layer_used() == "representation":
            return torch.tanh(self.representation(pooled))
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] of the new head on the class token when built with `num_classes=K` (the pre-training
        head and representation layer are removed for fine-tuning, as the paper does), else the features."""
        if self.head is not None:
            return self.head(self._pooled(x))
        return self.forward_features(x)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The trunk's weights (what `weights_info["weights_sha256"]` hashes); the new head is not included."""
        return self.trunk.state_dict()

    def extra_repr(self) -> str:
        return f"weights_id={self.weights_info.get('weights_id')!r}, num_features={self.num_features}"
