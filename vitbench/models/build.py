"""Building a `Backbone` from a model name and a weights choice: the body of `vitbench.models.create`.

Owns `create`; the weights-choice rules (`vitbench.models.weights`) are: `"default"` (the registry's checkpoint, e.g. the
paper's ImageNet-21k `orig_in21k`), `"none"` (random init, recorded as such), a tag (`augreg_in21k`, `tv_in1k`,
a torchvision enum name for `torchvision:` models) or a local file path. Paper names and `timm:` names become timm
networks; `vit_*.tv_*` tags convert torchvision's ViT weights to timm's layout (a rename), `torchvision:` names stay
torchvision networks with their classifier replaced by `Identity`. Exercised by every `vitbench run`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitbench.errors import VitbenchError
from vitbench.models import checkpoints as ckpt
from vitbench.models import sources
from vitbench.models.backbone import Backbone, state_dict_sha256
from vitbench.models.npz import load_bit_npz, npz_kind, vit_npz_to_timm
from vitbench.models.posembed import recorded_mode
from vitbench.models.registry import TORCHVISION_VIT_TAGS, ModelRef, check_img_size, hub_weights_id, parse_model_name
from vitbench.models.weights import _choice, resolve_weights_id  # noqa: F401  (re-exported)

def _pretrained_data(ref: ModelRef, kind: str, weights_id: str) -> str | None:
    if kind == "random":
        return None
    if kind == "file":
        return "unknown (local file)"
    tag = weights_id.rsplit(".", 1)[-1].lower()
    if ref.info is not None and tag == ref.info.default_tag:
        return ref.info.pretrain_data
    if "swag" in tag:
        return "IG-3.6B (SWAG) -> ImageNet-1k"
    if "in21k" in tag or "in22k" in tag:
        return "ImageNet-21k" + (" -> ImageNet-1k" if "ft_in1k" in tag else "")
    if "in1k" in tag or tag.startswith("imagenet1k"):
        return "ImageNet-1k"
    return f"see {weights_id}"


def create(name: str, weights: str | os.PathLike | None = "default", img_size: int | None = None,
           num_classes: int | None = None, *, pos_interp: str = "bilinear", dropout: float = 0.0) -> Backbone:
    """Build a backbone by name with the chosen weights.

    `name`: a paper name (`vit_b16`, `bit_r50x1`, optionally `.tag`), `timm:<arch>[.tag]`,
    `torchvision:<builder>[.ENUM]`, or a spec of `vitbench.models.sources` (`hf:`, `open_clip:`, `timm:hf-hub:`).
    `weights`: "default" | "none" | a tag | a local file path.
    `img_size`: input resolution (ViT position embeddings are resized with `pos_interp`, "bilinear" =
    Google's align-corners zoom, or "bicubic"). `num_classes`: attach a zero-initialised `Linear(D, K)` head.
    `dropout`: vit_jax's `dropout_rate`, placed where vit_jax places it (`vit_dropout_kwargs`); ViTs only.
    """
    drop_rate = float(dropout)
    recorded_mode(pos_interp)
    check_img_size(name, img_size)
    started = time.perf_counter()
    built = sources.build(name, weights, img_size=img_size, pos_interp=pos_interp, drop_rate=drop_rate)
    if built is not None:
        return _from_source(name, built, num_classes, time.perf_counter() - started)
    ref = parse_model_name(name)
    kind, value = _choice(ref, weights)
    if ref.library == "torchvision":
        from vitbench.models.tvnets import build_torchvision

        if drop_rate:
            raise VitbenchError(f"dropout is placed as vit_jax does for timm ViTs only; model {name!r} is a torchvision network: set dropout = 0")
        trunk, num_features, data_config, source, weights_id = build_torchvision(ref, kind, value, img_size,
                                                                                  pos_interp)
        representation = None
    else:
        trunk, data_config, source, weights_id, representation = _build_timm(ref, kind, value, img_size, pos_interp, drop_rate)
        num_features = trunk.num_features
    trunk.eval()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    hashed = dict(trunk.state_dict())
    if representation is not None:  # part of the checkpoint the features may come from
        hashed.update({f"representation.{k}": v for k, v in representation.state_dict().items()})
    sha = state_dict_sha256(hashed)
    info: dict[str, Any] = {
        "model": name,
        "weights_id": weights_id,
        "weights_sha256": sha,
        "source": source,
        "random_init": kind == "random",
        "pretrained_data": _pretrained_data(ref, kind, weights_id),
        "pos_embed_interpolation": recorded_mode(pos_interp) if _has_pos_embed(trunk) else None,
        "img_size": int(data_config["input_size"][-1]),
        "dropout": {"rate": drop_rate, "placement": DROPOUT_PLACEMENT, "timm_kwargs": vit_dropout_kwargs(drop_rate)} if drop_rate else {"rate": 0.0},
        "representation_layer": None if representation is None else {"in": representation.in_features, "out": representation.out_features},
        "load_seconds": round(load_s, 3),
        "hash_seconds": round(time.perf_counter() - started, 3),
    }
    return Backbone(trunk, ref.library, num_features, data_config, info, num_classes, representation=representation).eval()


def _from_source(name: str, built: sources.Built, num_classes: int | None, load_s: float) -> Backbone:
    trunk = built.trunk.eval()
    started = time.perf_counter()
    sha = state_dict_sha256(trunk.state_dict())
    info: dict[str, Any] = {
        "model": name,
        "weights_id": built.weights_id,
        "weights_sha256": sha,
        "source": built.source,
        "random_init": built.random_init,
        "pretrained_data": built.pretrained_data,
        "pos_embed_interpolation": None,
        "img_size": int(built.data_config["input_size"][-1]),
        **built.extra,
        "load_seconds": round(load_s, 3),
        "hash_seconds": round(time.perf_counter() - started, 3),
    }
    return Backbone(trunk, built.library, built.num_features, built.data_config, info, num_classes).eval()


def _has_pos_embed(trunk: nn.Module) -> bool:
    return isinstance(getattr(trunk, "pos_embed", None), torch.Tensor) or hasattr(
        getattr(trunk, "encoder", None), "pos_embedding")


DROPOUT_PLACEMENT = "after the position-embedding add, after the attention output projection, after each MLP dense (vit_jax)"


def vit_dropout_kwargs(rate: float) -> dict[str, float]:
    """timm `VisionTransformer` arguments that place vit_jax's `dropout_rate` (models_vit.py) where vit_jax does:
    after adding position embeddings (`pos_drop_rate`), after the attention output and after both MLP denses
    (`proj_drop_rate`); vit_jax has no attention-probability dropout (`attention_dropout_rate` 0) and no head
    dropout (timm's `drop_rate`)."""
    return {"pos_drop_rate": rate, "proj_drop_rate": rate, "attn_drop_rate": 0.0, "drop_rate": 0.0}


def _timm_create(arch_tag: str, img_size: int | None, drop_rate: float) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0}
    if drop_rate:
        kwargs.update(vit_dropout_kwargs(drop_rate))
    if img_size is not None:
        try:
            return timm.create_model(arch_tag, img_size=img_size, **kwargs)
        except TypeError as exc:  # convnets take no img_size: the input size is only recorded in data_config
            if drop_rate and "drop_rate" in str(exc):
                raise _no_dropout(arch_tag) from None
    try:
        return timm.create_model(arch_tag, **kwargs)
    except TypeError as exc:
        if drop_rate and "drop_rate" in str(exc):
            raise _no_dropout(arch_tag) from None
        raise


def _no_dropout(arch_tag: str) -> VitbenchError:
    return VitbenchError(f"dropout is placed as vit_jax does for ViTs only; timm model {arch_tag!r} has no such places: set dropout = 0")


def _build_timm(ref: ModelRef, kind: str, value: str | None, img_size: int | None, pos_interp: str,
                drop_rate: float) -> tuple[nn.Module, dict[str, Any], str, str]:
    import timm.data

    tv_tag = kind == "hub" and value is not None and value.startswith("tv_")
    hub_id = hub_weights_id(ref, value) if kind == "hub" else None
    # the timm pretrained config (normalisation, interpolation, crop) comes from the tag that is loaded, or from
    # the default tag for random init and files (paper names: the paper's [-1, 1] scaling)
    if kind == "hub" and not tv_tag:
        cfg_tag = hub_id[len("timm/"):]
    elif ref.info is not None:
        cfg_tag = f"{ref.arch}.{ref.info.default_tag}"
    else:
        cfg_tag = f"{ref.arch}.{ref.tag}" if ref.tag else ref.arch
    member = None
    if tv_tag:
        from vitbench.models.tvnets import weights_enum

        member = weights_enum(ref.info.torchvision_builder, TORCHVISION_VIT_TAGS[value])
        img_size = img_size or int(member.transforms().crop_size[0])  # SWAG E2E weights are native 384/512/518
    weights_id, source, sd, path = "none", "random init (timm)", None, None
    representation = None
    if kind == "file":
        path = Path(value)
        weights_id, source = f"file:{ckpt.file_sha256(path)}", str(path.resolve())
    elif tv_tag:
        from vitbench.models.tvnets import fetch_torchvision_weights

        weights_id = hub_id
        sd, source, member = fetch_torchvision_weights(ref.info.torchvision_builder, member.name,
                                                       model_name=ref.name, weights_id=weights_id)
    elif kind == "hub":  # find the file before building anything: offline errors come at once
        import timm.models

        weights_id = hub_id
        cfg = timm.models.get_pretrained_cfg(cfg_tag).to_dict()
        if cfg.get("hf_hub_id"):
            names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else ckpt.HUB_FILENAMES
            path = ckpt.fetch_hub_file(cfg["hf_hub_id"], model_name=ref.name, weights_id=weights_id, filenames=names)
        elif cfg.get("url"):
            path = ckpt.fetch_url(cfg["url"], model_name=ref.name, weights_id=weights_id)
        else:
            raise VitbenchError(f"{weights_id} has no download location in timm; pass --weights PATH")
        source = f"hub:{cfg.get('hf_hub_id') or cfg.get('url')}"
    if path is not None:
        sd = ckpt.read_checkpoint(path)
    if sd is None:
        trunk = _timm_create(cfg_tag, img_size, drop_rate)
    elif path is not None and path.suffix.lower() == ".npz" and npz_kind(sd) == "bit":
        trunk = _timm_create(cfg_tag, img_size, drop_rate)
        if not hasattr(trunk, "stages"):
            raise VitbenchError(f"{str(path)!r} is a BiT (ResNet) checkpoint but model {ref.name!r} is not "
                                "a BiT model; pick a bit_* model")
        load_bit_npz(trunk, path)
    else:
        if path is not None and path.suffix.lower() == ".npz":
            sd = vit_npz_to_timm(sd)
        representation = take_representation(sd)
        trunk = _load_into_new_trunk(sd, cfg_tag, img_size, drop_rate, repr(str(path or source)), ref.name,
                                     pos_interp)
    data_config = dict(timm.data.resolve_data_config({}, model=trunk))
    if tv_tag:
        from vitbench.models.tvnets import torchvision_data_config

        data_config.update(torchvision_data_config(member))
    if img_size is not None:
        data_config["input_size"] = (3, int(img_size), int(img_size))
    return trunk, data_config, source, weights_id, representation


def take_representation(sd: dict) -> nn.Linear | None:
    """Remove a ViT checkpoint's representation layer (`pre_logits.fc.*`, the i21k models' tanh(Dense)) from `sd`
    and return it as a `Linear`, or None when the checkpoint has none. big_vision's few-shot reads its output."""
    if "pre_logits.fc.weight" not in sd or "pre_logits.fc.bias" not in sd:
        return None
    weight = torch.as_tensor(sd.pop("pre_logits.fc.weight")).float()
    bias = torch.as_tensor(sd.pop("pre_logits.fc.bias")).float()
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _load_into_new_trunk(sd, cfg_tag: str, img_size: int | None, drop_rate: float, source: str,
                         model_name: str, pos_interp: str) -> nn.Module:
    """Build the timm trunk on the meta device (no random init to pay for) and assign the fitted weights;
    fall back to a normal build if some tensor (e.g. a non-persistent buffer) is left on meta."""
    with torch.device("meta"):
        trunk = _timm_create(cfg_tag, img_size, drop_rate)
    fitted = _fit(sd, trunk, source, model_name, pos_interp)
    trunk.load_state_dict(fitted, assign=True)
    if any(t.is_meta for t in list(trunk.parameters()) + list(trunk.buffers())):
        trunk = _timm_create(cfg_tag, img_size, drop_rate)
        trunk.load_state_dict(fitted)
    return trunk


def _fit(sd, trunk, source, model_name, pos_interp):
    """Fit `sd` to `trunk`; on failure give timm's own checkpoint filter (older hub layouts) a second chance."""
    import importlib

    try:
        return ckpt.fit_state_dict(sd, trunk, source=source, model_name=model_name, pos_interp=pos_interp)
    except VitbenchError as first:
        filter_fn = getattr(importlib.import_module(type(trunk).__module__), "checkpoint_filter_fn", None)
        if filter_fn is None:
            raise
        try:
            filtered = filter_fn(dict(sd), trunk)
            return ckpt.fit_state_dict(filtered, trunk, source=source, model_name=model_name, pos_interp=pos_interp)
        except Exception:  # noqa: BLE001 - the filter does not apply either: report our own mismatch message
            raise first from None
