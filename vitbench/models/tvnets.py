"""torchvision networks and weights: `torchvision:<builder>` pass-through and the `vit_*.tv_*` weights tags.

Owns `build_torchvision` (a torchvision model with its classifier replaced by `Identity`, so its output is the
pre-logits vector: for `VisionTransformer` the class token after `encoder.ln`, docs/models.md#checkpoints),
`fetch_torchvision_weights` (torch hub cache first, offline-first, loaded with `weights_only=True`) and
`torchvision_data_config` (mean/std/interpolation/crop of a weights enum). Note: torchvision's ViT weights are
not the paper's checkpoints (IMAGENET1K_V1 is trained from scratch on ImageNet-1k; SWAG is Facebook's
weakly-supervised pre-training; §2.2). Exercised by `vitbench run --model torchvision:resnet50` and
`--model vit_b16.tv_in1k`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vitbench.errors import VitbenchError
from vitbench.models import checkpoints as ckpt
from vitbench.models.posembed import resample_pos_embed
from vitbench.models.registry import hub_weights_id, weights_enum  # noqa: F401  (weights_enum re-exported)

CLASSIFIER_ATTRS = ("heads", "fc", "classifier", "head")


def fetch_torchvision_weights(builder: str, enum_name: str | None, *, model_name: str, weights_id: str):
    """(state dict, source, enum member) for torchvision weights, from torch hub's cache or downloaded online."""
    member = weights_enum(builder, enum_name)
    path = ckpt.fetch_url(member.url, model_name=model_name, weights_id=weights_id)
    return ckpt.read_checkpoint(path), f"torchvision:{member.url}", member


def torchvision_data_config(member) -> dict[str, Any]:
    """timm-style data config from a torchvision weights enum's eval transform."""
    t = member.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return {"input_size": (3, crop, crop), "mean": tuple(t.mean), "std": tuple(t.std),
            "interpolation": t.interpolation.value, "crop_pct": round(crop / resize, 4), "crop_mode": "center"}


def _strip_classifier(model: nn.Module) -> tuple[str, int]:
    """Replace the final classifier Linear with Identity; return (attribute path, its in_features)."""
    for attr in CLASSIFIER_ATTRS:
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Linear):
            setattr(model, attr, nn.Identity())
            return attr, mod.in_features
        if isinstance(mod, nn.Sequential):
            linear_idx = [i for i, m in enumerate(mod) if isinstance(m, nn.Linear)]
            if linear_idx:
                i = linear_idx[-1]
                in_features = mod[i].in_features
                if attr == "heads":  # ViT: drop head and any pre_logits layer, keep the class token
                    setattr(model, attr, nn.Identity())
                    return attr, model.hidden_dim
                mod[i] = nn.Identity()
                return f"{attr}.{i}", in_features
    raise VitbenchError(f"cannot find the classifier of torchvision model {type(model).__name__} "
                        f"(looked for {', '.join(CLASSIFIER_ATTRS)}); use a timm: name instead")


def build_torchvision(ref, kind: str, value: str | None, img_size: int | None, pos_interp: str):
    """(trunk, num_features, data_config, source, weights_id) for a `torchvision:` name."""
    import torchvision

    member = weights_enum(ref.arch, value) if kind == "hub" else None
    is_vit = ref.arch.startswith("vit_")
    kwargs: dict[str, Any] = {}
    if is_vit:
        native = int(member.transforms().crop_size[0]) if member is not None else 224
        kwargs["image_size"] = img_size or native
    model = torchvision.models.get_model(ref.arch, weights=None, **kwargs)
    if kind == "random":
        sd, source, weights_id = None, "random init (torchvision)", "none"
    elif kind == "file":
        sd, source = ckpt.read_checkpoint(value), value
        weights_id = f"file:{ckpt.file_sha256(value)}"
    else:
        weights_id = hub_weights_id(ref, member.name)
        sd, source, member = fetch_torchvision_weights(ref.arch, member.name, model_name=ref.name,
                                                       weights_id=weights_id)
    attr, num_features = _strip_classifier(model)
    if sd is not None:
        expected = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in expected or not k.startswith(attr.split(".")[0] + ".")}
        key = "encoder.pos_embedding"
        if is_vit and key in sd and sd[key].shape != expected[key].shape:
            grid = kwargs["image_size"] // model.patch_size
            sd[key] = resample_pos_embed(sd[key], (grid, grid), 1, pos_interp=pos_interp)
        ckpt.check_fits(sd, expected, source=repr(source), model_name=ref.name)
        model.load_state_dict({k: sd[k].to(v.dtype) for k, v in expected.items()})
    if member is not None:
        data_config = torchvision_data_config(member)
    else:
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        data_config = {"input_size": (3, 224, 224), "mean": mean, "std": std, "interpolation": "bilinear",
                       "crop_pct": 0.875, "crop_mode": "center"}
    size = img_size or kwargs.get("image_size")
    if size:
        data_config["input_size"] = (3, int(size), int(size))
    return model, num_features, data_config, source, weights_id

