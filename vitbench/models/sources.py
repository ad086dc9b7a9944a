"""Model sources beyond the paper registry: how `create` / `resolve_weights_id` find a non-timm model.

Owns the dispatch from a model spec to the module that builds it: `hf:<repo or dir>[#feature]`
(`vitbench.models.hf`), `open_clip:<arch>[/<pretrained>][#feature]` (`vitbench.models.openclip`),
`timm:hf-hub:<repo>` / `timm:local-dir:<dir>` (`vitbench.models.timmhub`), and names registered in memory
for the duration of a `vitbench.evaluate` call (`register` / `registered`: an `nn.Module`, or an alias of a
spec with a preprocessing override; `vitbench.models.custom`). A source returns a `Built`; `create` hashes
its weights and wraps it in a `Backbone`. Exercised by `vitbench run --model hf:...` and `vitbench.evaluate`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitbench.errors import VitbenchError

if TYPE_CHECKING:  # pragma: no cover - torch loads only with a source's own module
    from torch import nn

PREFIXES = ("hf:", "open_clip:", "timm:hf-hub:", "timm:local-dir:")
FEATURE_SEP = "#"  # `hf:facebook/dinov2-small#cls`: the part after `#` names the feature output


@dataclass
class Built:
    """What a source builds: `trunk(x)` returns [B, num_features] features for a normalised batch."""

    trunk: nn.Module
    num_features: int
    data_config: dict[str, Any]  # timm-style: input_size, mean, std, interpolation, crop_pct
    weights_id: str
    source: str
    library: str
    random_init: bool = False
    pretrained_data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in weights_info (feature_output, ...)


_REGISTERED: dict[str, Any] = {}  # name -> vitbench.models.custom.Registered
_LOCK = threading.Lock()


def split_feature(spec: str) -> tuple[str, str | None]:
    """`"hf:x#cls"` -> `("hf:x", "cls")`; no `#` -> `(spec, None)`."""
    base, sep, feature = spec.partition(FEATURE_SEP)
    return base, (feature.strip() or None) if sep else None


def kind_of(name: str) -> str | None:
    """"registered" | "hf" | "open_clip" | "timmhub" for names this module handles, else None."""
    if name in _REGISTERED:
        return "registered"
    if name.startswith("hf:"):
        return "hf"
    if name.startswith("open_clip:"):
        return "open_clip"
    if name.startswith(("timm:hf-hub:", "timm:local-dir:")):
        return "timmhub"
    return None


def _module(kind: str):
    if kind == "registered":
        from vitbench.models import custom as mod
    elif kind == "hf":
        from vitbench.models import hf as mod
    elif kind == "open_clip":
        from vitbench.models import openclip as mod
    else:
        from vitbench.models import timmhub as mod
    return mod


def weights_id(name: str, weights: Any) -> str | None:
    """The cell-key weights id of `name` when a source here handles it (None otherwise)."""
    kind = kind_of(name)
    if kind is None:
        return None
    if kind == "registered":
        return _REGISTERED[name].weights_id(weights)
    return _module(kind).weights_id(name, weights)


def patch_size(name: str) -> int | None:
    """The ViT patch size of a source's model when its config names one (None: not a ViT, or not known)."""
    kind = kind_of(name)
    if kind is None or kind == "registered":
        return None
    return _module(kind).patch_size(name)


def build(name: str, weights: Any, *, img_size: int | None, pos_interp: str, drop_rate: float) -> Built | None:
    """Build `name` when a source here handles it (None otherwise)."""
    kind = kind_of(name)
    if kind is None:
        return None
    if kind == "registered":
        return _REGISTERED[name].build(weights, img_size=img_size, pos_interp=pos_interp, drop_rate=drop_rate)
    if drop_rate and kind != "timmhub":  # timm applies it before the head; these sources have no such hook
        raise VitbenchError(f"model {name!r}: finetune dropout is supported for timm models only; set dropout = 0")
    if kind == "timmhub":
        return _module(kind).build(name, weights, img_size=img_size, pos_interp=pos_interp, drop_rate=drop_rate)
    return _module(kind).build(name, weights, img_size=img_size, pos_interp=pos_interp)


def register(entry) -> None:
    """Make `entry.name` resolvable by `create` until `unregister(entry.name)`."""
    from vitbench.models.registry import MODELS

    if entry.name.split(".")[0] in MODELS or entry.name.startswith(("timm:", "torchvision:") + PREFIXES):
        raise VitbenchError(f"name={entry.name!r} is already a model spec; records would mix the two, choose "
                            "another name")
    with _LOCK:
        if entry.name in _REGISTERED:
            raise VitbenchError(f"model name {entry.name!r} is already registered by a running evaluation; "
                                "pass another name=")
        _REGISTERED[entry.name] = entry


def unregister(name: str) -> None:
    with _LOCK:
        _REGISTERED.pop(name, None)


@contextlib.contextmanager
def registered(entry) -> Iterator[str]:
    """`with registered(entry) as name:` the name resolves to the entry inside the block only."""
    register(entry)
    try:
        yield entry.name
    finally:
        unregister(entry.name)
