"""In-memory models: an `nn.Module` (or an alias of a model spec) registered under a name for one evaluation.

Owns `Registered` (what `vitbench.evaluate` registers through `vitbench.models.sources.registered`),
`ModuleFeatures` (the wrapper that turns a module's output into [B, D] features) and `feature_call` /
`pool_tokens` (which output is the feature). A module's features are, in order of preference:
`forward_head(forward_features(x), pre_logits=True)` for timm-style modules (timm's pre-logits), else
`forward_features(x)`, else `forward(x)`. [B, D] is used as is; [B, N, D] tokens need `pooling` ("cls": token 0,
"mean": mean of the tokens after the module's `num_prefix_tokens`, 0 when it has none); [B, C, H, W] maps need
`pooling="mean"` (global average). Every fine-tuning cell gets its own deep copy, so the caller's module is never
changed. Exercised by `vitbench.evaluate(module, ...)`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vitbench.errors import VitbenchError
from vitbench.models.sources import Built

POOLINGS = ("cls", "mean")


def feature_call(module: nn.Module) -> str:
    """"timm" (forward_head pre-logits), "forward_features" or "forward": how features are taken."""
    if callable(getattr(module, "forward_features", None)) and callable(getattr(module, "forward_head", None)):
        return "timm"
    if callable(getattr(module, "forward_features", None)):
        return "forward_features"
    return "forward"


def pool_tokens(out: torch.Tensor, pooling: str | None, prefix_tokens: int, what: str) -> torch.Tensor:
    """[B, D] features from a module output; raises with the fix when the output needs a pooling."""
    if not isinstance(out, torch.Tensor):
        raise VitbenchError(f"{what} returned {type(out).__name__}, not a tensor; wrap the module so it returns "
                            "[B, D] features")
    if out.ndim == 2:
        if pooling is not None:
            raise VitbenchError(f"{what} already returns [B, D] features {tuple(out.shape)}; drop pooling=")
        return out
    if out.ndim == 3:
        if pooling == "cls":
            return out[:, 0]
        if pooling == "mean":
            return out[:, prefix_tokens:].mean(dim=1)
        raise VitbenchError(f"{what} returns [B, N, D] tokens {tuple(out.shape)}, not [B, D] features; pass "
                            "pooling='cls' (token 0) or pooling='mean' (mean of the patch tokens)")
    if out.ndim == 4:
        if pooling == "mean":
            return out.mean(dim=(2, 3))
        raise VitbenchError(f"{what} returns a [B, C, H, W] map {tuple(out.shape)}; pass pooling='mean' "
                            "(global average) or return [B, D] features")
    raise VitbenchError(f"{what} returns shape {tuple(out.shape)}; return [B, D] features")


class ModuleFeatures(nn.Module):
    """`forward(x) -> [B, D]` features of a user module (see the module docstring for which output)."""

    def __init__(self, module: nn.Module, pooling: str | None = None):
        super().__init__()
        self.module = module
        self.call = feature_call(module)
        self.pooling = pooling
        self.prefix_tokens = int(getattr(module, "num_prefix_tokens", 0) or 0)

    def describe(self) -> str:
        call = {"timm": "forward_head(forward_features(x), pre_logits=True)",
                "forward_features": "forward_features(x)", "forward": "forward(x)"}[self.call]
        if self.pooling == "cls":
            return f"{call} token 0"
        if self.pooling == "mean":
            return f"{call} mean of tokens [{self.prefix_tokens}:] (or of H x W)"
        return call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.call == "timm":
            out = m.forward_head(m.forward_features(x), pre_logits=True)
        elif self.call == "forward_features":
            out = m.forward_features(x)
        else:
            out = m(x)
        return pool_tokens(out, self.pooling, self.prefix_tokens, f"{type(m).__name__}.{self.describe()}")


def probe(trunk: nn.Module, size: int) -> int:
    """The feature width D, from one forward pass on a zero batch (raises the pooling message early)."""
    p = next(iter(list(trunk.parameters()) + list(trunk.buffers())), None)
    device = p.device if p is not None else torch.device("cpu")
    was_training = trunk.training
    trunk.eval()
    try:
        with torch.no_grad():
            out = trunk(torch.zeros(2, 3, size, size, device=device))
    finally:
        trunk.train(was_training)
    return int(out.shape[1])


def _fmt(values) -> str:
    return ",".join(f"{float(v):g}" for v in values)


@dataclass
class Registered:
    """A name resolvable by `vitbench.models.create` while registered: a module, or an alias of `spec`.

    `data_config`: for a module, its whole preprocessing (input_size, mean, std, ...); for an alias, overrides of
    the spec's own (only mean/std/input_size). Overridden normalisation goes into the weights id (cell key).
    """

    name: str
    module: nn.Module | None = None
    spec: str | None = None
    data_config: dict[str, Any] = field(default_factory=dict)
    pooling: str | None = None
    _sha: str = ""
    _num_features: int = 0

    def __post_init__(self):
        if (self.module is None) == (self.spec is None):
            raise VitbenchError("register either a module or a model spec")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise VitbenchError(f"pooling must be one of {list(POOLINGS)} or None, got {self.pooling!r}")
        if self.module is not None:
            from vitbench.models.backbone import state_dict_sha256

            for key in ("input_size", "mean", "std"):
                if key not in self.data_config:
                    raise VitbenchError(f"model {self.name!r}: preprocessing has no {key}; pass preprocess= with "
                                        "size, mean and std")
            trunk = ModuleFeatures(self.module, self.pooling)
            self._num_features = probe(trunk, int(self.data_config["input_size"][-1]))
            self._sha = state_dict_sha256(trunk.state_dict())

    def _norm_suffix(self) -> str:
        dc = self.data_config
        return f";mean={_fmt(dc['mean'])};std={_fmt(dc['std'])}" if "mean" in dc else ""

    def weights_id(self, weights: Any) -> str:
        if self.spec is not None:
            from vitbench.models.build import resolve_weights_id

            return resolve_weights_id(self.spec, weights) + self._norm_suffix()
        _check_default(self.name, weights)
        feature = ModuleFeatures(self.module, self.pooling)
        return f"module:{self._sha}#{feature.call}" + (f"+{self.pooling}" if self.pooling else "") + self._norm_suffix()

    def build(self, weights: Any, *, img_size: int | None, pos_interp: str, drop_rate: float = 0.0) -> Built:
        data_config = dict(self.data_config)
        if img_size is not None:
            data_config["input_size"] = (3, int(img_size), int(img_size))
        if self.spec is not None:
            return self._build_alias(weights, img_size, pos_interp, drop_rate, data_config)
        _check_default(self.name, weights)
        if drop_rate:
            raise VitbenchError(f"model {self.name!r}: finetune dropout is supported for timm models only; put "
                                "dropout inside the module and set dropout = 0")
        trunk = ModuleFeatures(copy.deepcopy(self.module), self.pooling)  # fine-tuning must not touch the caller's
        trunk.train(False)
        return Built(trunk, self._num_features, data_config, self.weights_id(weights),
                     f"nn.Module {type(self.module).__module__}.{type(self.module).__qualname__}", "module",
                     pretrained_data="unknown (user module)",
                     extra={"feature_output": trunk.describe(), "model_preprocessing": _jsonable(data_config)})

    def _build_alias(self, weights, img_size, pos_interp, drop_rate, overrides) -> Built:
        from vitbench.models.build import create

        backbone = create(self.spec, weights, img_size=img_size, pos_interp=pos_interp, dropout=drop_rate)
        info = backbone.weights_info
        data_config = {**backbone.data_config, **overrides}
        extra = {k: v for k, v in info.items() if k in ("feature_output", "model_preprocessing", "revision")}
        extra["spec"] = self.spec
        return Built(_BackboneFeatures(backbone), backbone.num_features, data_config, self.weights_id(weights),
                     info["source"], backbone.library, random_init=bool(info.get("random_init")),
                     pretrained_data=info.get("pretrained_data"), extra=extra)


class _BackboneFeatures(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone.forward_features(x)


def _check_default(name: str, weights: Any) -> None:
    if weights not in (None, "", "default"):
        raise VitbenchError(f"model {name!r} is an nn.Module: weights={weights!r} does not apply; load the weights "
                            "into the module before passing it")


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
