"""The model zoo: paper backbones one word away (`vit_b16`, `bit_r50x1`, ...), any timm or torchvision network,
and local checkpoints, all behind one interface.

Public API (stable):
- `create(name, weights="default", img_size=None, num_classes=None, *, pos_interp="bilinear", dropout=0.0)
  -> Backbone` (an `nn.Module`): `forward_features(x) -> [B, D]` pre-logits, `forward(x)` logits of a
  zero-initialised `Linear(D, K)` head when `num_classes=K`, `num_features`, `data_config`, `weights_info`.
- `resolve_weights_id(name, weights="default") -> str`: the weights id for cell keys, without loading.
- `list_models() -> list[ModelInfo]`, `models_table() -> pandas.DataFrame` (`vitbench ls models`).
- `state_dict_sha256(state_dict) -> str`; `resample_pos_embed(...)` for resolution changes.
Names: paper names (optionally `.tag`, e.g. `vit_b16.augreg_in21k`, `vit_b16.tv_in1k`), `timm:<arch>[.tag]`,
`torchvision:<builder>[.ENUM]`, `hf:<repo or folder>[#pooled|#cls|#mean]` (`models/hf.py`),
`open_clip:<arch>[/<tag>][#pooled|#embed]` (`models/openclip.py`), `timm:hf-hub:<repo>` / `timm:local-dir:<dir>`
(`models/timmhub.py`), and names registered in memory by `vitbench.evaluate` (`models/sources.py`, `custom.py`).
Weights: "default" | "none" | a tag | a path (.safetensors, Google .npz, .pth).

Importing `vitbench.models` (or its torch-free `registry`) does not import torch: the names below load their
module on first use, so `vitbench ls models` stays fast.
"""

import importlib

_HOME = {
    "Backbone": "backbone", "state_dict_sha256": "backbone", "create": "build", "resolve_weights_id": "weights",
    "resample_pos_embed": "posembed", "MODELS": "registry", "ModelInfo": "registry",
    "available_tags": "registry", "list_models": "registry", "models_table": "registry",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f"vitbench.models.{_HOME[name]}"), name)
    raise AttributeError(f"module 'vitbench.models' has no attribute {name!r}")


__all__ = [
    "MODELS",
    "Backbone",
    "ModelInfo",
    "available_tags",
    "create",
    "list_models",
    "models_table",
    "resample_pos_embed",
    "resolve_weights_id",
    "state_dict_sha256",
]
