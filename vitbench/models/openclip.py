"""open_clip visual towers: `open_clip:<arch>[/<pretrained tag>][#pooled|#embed]`.

Owns `weights_id` / `build` for `open_clip:` specs (dispatched by `vitbench.models.sources`). The model is
built without any download (`pretrained=None`), then its weights are read by vitbench: the tag's hub file from
the Hugging Face cache (`open_clip_model.safetensors` first, a `.bin` only with `weights_only=True`) or its
URL from torch hub's cache, offline-first with a one-line error and the fix; `--weights none` is random init and
`--weights PATH` a state dict (whole CLIP model, or the visual tower alone). Only the visual tower is kept.
Features: `pooled` (default for ViT towers) = the pooled token after `ln_post`, before the projection to the
joint embedding (the CLIP paper's linear probes use these, Radford et al. 2021 App. A.3; the projection is
removed); `embed` (default and only choice for ResNet / timm towers) = the tower's output embedding, after
the projection. Preprocessing comes from the tower's `preprocess_cfg` merged with the tag's config (size,
mean/std, interpolation, resize mode) and is recorded. Exercised by `vitbench run --model
open_clip:ViT-B-32/openai` and `vitbench.evaluate("open_clip:...", ...)`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from vitbench.errors import VitbenchError, unknown_name
from vitbench.models import checkpoints as ckpt
from vitbench.models.sources import Built, split_feature

FEATURES = ("pooled", "embed")
HUB_FILENAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _need_open_clip():
    if importlib.util.find_spec("open_clip") is None:
        raise VitbenchError("open_clip: models need the open_clip_torch package; pip install 'vitbench[openclip]'")
    import open_clip

    return open_clip


def _parse(name: str) -> tuple[str, str | None, str | None]:
    """(arch, tag or None, feature or None), with the arch and tag checked against open_clip's lists."""
    open_clip = _need_open_clip()
    base, feature = split_feature(name)
    arch, _, tag = base[len("open_clip:"):].strip().partition("/")
    if arch not in open_clip.list_models():
        raise unknown_name("open_clip model", arch, open_clip.list_models())
    if tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
        raise unknown_name(f"pretrained tag of open_clip:{arch}", tag,
                           open_clip.list_pretrained_tags_by_model(arch) or ["(none: --weights PATH or none)"])
    if feature is not None and feature not in FEATURES:
        raise unknown_name(f"feature output of {name}", feature, FEATURES)
    return arch, tag or None, feature


def _weights_kind(name: str, tag: str | None, weights: Any) -> tuple[str, str | None]:
    if weights in (None, "", "default"):
        if tag is None:
            open_clip = _need_open_clip()
            arch = name[len("open_clip:"):].split("/")[0].split("#")[0]
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise VitbenchError(f"{name}: name the pretrained weights, e.g. open_clip:{arch}/{tags[0] if tags else '<tag>'}"
                                f" (tags: {', '.join(tags) or 'none'}), or pass --weights PATH or --weights none")
        return "hub", tag
    if isinstance(weights, str) and weights.lower() in ("none", "random"):
        return "random", None
    path = os.fspath(weights)
    if not Path(path).is_file():
        raise VitbenchError(f"{name}: weights {path!r} must be 'default', 'none' or an existing .safetensors/.pth "
                            "state dict")
    return "file", path


def _feature(visual: nn.Module | None, arch: str, feature: str | None, name: str) -> str:
    """The feature used: `pooled` needs a ViT tower with a separate projection."""
    if visual is None:  # from the config: timm towers name a timm model, ResNet towers list their stage depths
        import open_clip

        vision_cfg = (open_clip.get_model_config(arch) or {}).get("vision_cfg", {})
        is_vit = not vision_cfg.get("timm_model_name") and not isinstance(vision_cfg.get("layers"), (list, tuple))
    else:
        is_vit = isinstance(getattr(visual, "proj", None), nn.Parameter)
    if feature is None:
        return "pooled" if is_vit else "embed"
    if feature == "pooled" and not is_vit:
        raise VitbenchError(f"{name}: this visual tower has no separate projection; use #embed")
    return feature


def patch_size(name: str) -> int | None:
    import open_clip

    arch, _, _ = _parse(name)
    value = ((open_clip.get_model_config(arch) or {}).get("vision_cfg") or {}).get("patch_size")
    return int(value) if isinstance(value, int) else None


def weights_id(name: str, weights: Any) -> str:
    """`open_clip/<arch>.<tag>`, `file:<sha256>` or `none`, then `#feature`."""
    arch, tag, feature = _parse(name)
    kind, value = _weights_kind(name, tag, weights)
    feature = _feature(None, arch, feature, name)
    wid = {"hub": f"open_clip/{arch}.{value}", "random": "none"}.get(kind) or f"file:{ckpt.file_sha256(value)}"
    return f"{wid}#{feature}"


def _fetch(arch: str, tag: str, name: str, wid: str) -> tuple[Path, str]:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = cfg.get("hf_hub", "")
    if hub:  # 'org/repo/' (default file names) or 'org/repo/file'
        if hub.endswith("/"):
            repo, names = hub[:-1], HUB_FILENAMES
        else:
            repo, filename = os.path.split(hub)
            names = tuple(dict.fromkeys([filename.replace(HUB_FILENAMES[1], HUB_FILENAMES[0]), filename]))
        return ckpt.fetch_hub_file(repo, model_name=name, weights_id=wid, filenames=names), f"hub:{repo}"
    if cfg.get("url"):
        return ckpt.fetch_url(cfg["url"], model_name=name, weights_id=wid), cfg["url"]
    raise VitbenchError(f"{name}: open_clip has no download location for tag {tag!r}; pass --weights PATH")


class OpenCLIPFeatures(nn.Module):
    """`forward(x) -> [B, D]`: the visual tower's output (its projection removed for `pooled`)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x):
        return self.visual(x)


def _data_config(visual: nn.Module, tag_cfg: dict[str, Any], side: int) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    cfg.update({k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg})
    interpolation = str(cfg.get("interpolation", "bicubic"))
    out = {
        "input_size": (3, side, side),
        "mean": tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        "std": tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        "interpolation": interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic",
        "crop_pct": 1.0,  # open_clip resizes the shortest side to the input size, then centre-crops it
        "crop_mode": "center",
    }
    recorded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}
    recorded["source"] = "open_clip preprocess_cfg" + (" + pretrained tag config" if tag_cfg else "")
    return out, recorded


def build(name: str, weights: Any, *, img_size: int | None, pos_interp: str) -> Built:
    open_clip = _need_open_clip()
    from open_clip.model import resize_pos_embed

    arch, tag, feature = _parse(name)
    kind, value = _weights_kind(name, tag, weights)
    _feature(None, arch, feature, name)  # refuse an impossible feature before any file is read
    wid_base = {"hub": f"open_clip/{arch}.{value}", "random": "none"}.get(kind) or f"file:{ckpt.file_sha256(value)}"
    path, source = None, f"random init (open_clip {arch})"
    if kind == "hub":
        path, source = _fetch(arch, value, name, wid_base)
    elif kind == "file":
        path, source = Path(value), value
    kwargs = {"force_image_size": int(img_size)} if img_size else {}
    logging.disable(logging.WARNING)  # open_clip warns "no pretrained weights": vitbench loads them next
    try:
        model = open_clip.create_model(arch, pretrained=None, **kwargs)
    finally:
        logging.disable(logging.NOTSET)
    if path is not None:
        sd = ckpt.read_checkpoint(path)
        if not any(k.startswith("visual.") for k in sd):  # a visual tower saved on its own
            sd = {f"visual.{k}": v for k, v in sd.items()}
        resize_pos_embed(sd, model)
        expected = {k: v for k, v in model.state_dict().items() if k.startswith("visual.")}
        sd = {k: v for k, v in sd.items() if k.startswith("visual.")}
        ckpt.check_fits(sd, expected, source=repr(str(path)), model_name=name)
        model.visual.load_state_dict({k[len("visual."):]: sd[k].to(v.dtype) for k, v in expected.items()})
    visual = model.visual.float().eval()
    feature = _feature(visual, arch, feature, name)
    if feature == "pooled":
        visual.proj = None  # the projection to the joint embedding is not part of the feature
    visual.output_tokens = False
    size = visual.preprocess_cfg.get("size", 224)
    side = int(img_size or (size[0] if isinstance(size, (list, tuple)) else size))
    tag_cfg = open_clip.get_pretrained_cfg(arch, value) if kind == "hub" else {}
    data_config, recorded = _data_config(visual, tag_cfg, side)
    trunk = OpenCLIPFeatures(visual)
    from vitbench.models.custom import probe

    num_features = probe(trunk, side)
    extra = {
        "feature_output": feature,
        "feature_description": ("pooled token after ln_post, before the projection" if feature == "pooled"
                                else "visual tower output embedding (after the projection)"),
        "open_clip_arch": arch,
        "open_clip_tag": value if kind == "hub" else None,
        "model_preprocessing": recorded,
        "pos_embed_interpolation": "bicubic (open_clip resize_pos_embed)" if img_size and path is not None else None,
    }
    return Built(trunk, num_features, data_config, f"{wid_base}#{feature}", source, "open_clip",
                 random_init=kind == "random",
                 pretrained_data=None if kind == "random" else (f"see open_clip {arch}/{value}" if kind == "hub"
                                                                else "unknown (local file)"),
                 extra=extra)
