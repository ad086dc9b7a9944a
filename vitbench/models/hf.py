"""Hugging Face transformers vision backbones: `hf:<hub repo or local folder>[#pooled|#cls|#mean]`.

Owns `weights_id` / `build` for `hf:` specs (dispatched by `vitbench.models.sources`). Supported architectures
(config `model_type`) and the feature each gives by default (`ARCHS`):
- `vit`, `deit`: `cls` = class token of `last_hidden_state`, which the model returns after its final LayerNorm
  (the paper's pre-logits without the pre-logits dense layer); `pooled` = ViT's pooler (dense + tanh);
- `dinov2`, `dinov2_with_registers`: `cls` (= the model's `pooler_output`);
- `clip` / `clip_vision_model` (the vision tower is loaded with `CLIPVisionModel`): `pooled` = class token after
  `post_layernorm`, before the projection (what the CLIP paper's linear probes use);
- `siglip` / `siglip_vision_model` (`SiglipVisionModel`): `pooled` = the attention-pooling head; SigLIP has no
  class token, so `cls` is refused.
`mean` is the mean of the patch tokens (prefix tokens excluded) after the final norm. A pooler the feature does
not use is removed, so random weights never enter the hash. Preprocessing (resolution, mean/std, interpolation,
crop) comes from the folder's `preprocessor_config.json` (the image processor's saved config) and is recorded.
Weights: `.safetensors` only (`use_safetensors=True`), float32. Offline-first: a hub repo comes from the Hugging
Face cache; when it is absent and HF_HUB_OFFLINE=1 or the hub cannot be reached, one line says so at once.
Exercised by `vitbench run --model hf:facebook/dinov2-small#cls` and `vitbench.evaluate("hf:<dir>", ...)`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitbench.errors import VitbenchError, unknown_name
from vitbench.models import checkpoints as ckpt
from vitbench.models.folders import has_safetensors, locate
from vitbench.models.sources import Built, split_feature

FEATURES = ("pooled", "cls", "mean")
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box"}


@dataclass(frozen=True)
class Arch:
    model_class: str  # transformers class that loads the vision backbone
    default: str  # the feature used when the spec names none
    prefix_tokens: int  # class (+ distillation / register) tokens before the patch tokens
    norm: str | None  # name of the module applied to last_hidden_state to get normed tokens (None: already normed)
    pooler: str | None  # name of the module making pooler_output, dropped when the feature does not use it
    pooled: str  # what pooler_output is, for the record
    pooled_is_cls: bool = False  # pooler_output is exactly the class token: `pooled` is recorded as `cls`


ARCHS = {
    "vit": Arch("ViTModel", "cls", 1, None, "pooler", "dense + tanh on the class token (ViT pre-logits layer)"),
    "deit": Arch("DeiTModel", "cls", 2, None, "pooler", "dense + tanh on the class token"),
    "dinov2": Arch("Dinov2Model", "cls", 1, None, None, "class token after the final LayerNorm", True),
    "dinov2_with_registers": Arch("Dinov2WithRegistersModel", "cls", 1, None, None,
                                  "class token after the final LayerNorm", True),
    "clip_vision_model": Arch("CLIPVisionModel", "pooled", 1, "post_layernorm", None,
                              "class token after post_layernorm (before the projection)"),
    "siglip_vision_model": Arch("SiglipVisionModel", "pooled", 0, None, "head",
                                "attention-pooling (MAP) head"),
}
FULL_MODELS = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}  # the vision tower of a full model


def _need_transformers() -> None:
    if importlib.util.find_spec("transformers") is None:
        raise VitbenchError("hf: models need the transformers package; pip install 'vitbench[hf]'")


def _read_json(path: Path, model_name: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VitbenchError(f"{model_name}: cannot read {str(path)!r} ({ckpt._one_line(exc)})") from None


def arch_of(folder: Path, model_name: str) -> tuple[str, Arch]:
    """(model_type of the vision backbone, its `Arch`) from config.json, without importing transformers."""
    model_type = str(_read_json(folder / "config.json", model_name).get("model_type", ""))
    model_type = FULL_MODELS.get(model_type, model_type)
    if model_type not in ARCHS:
        raise VitbenchError(f"{model_name}: model_type {model_type!r} is not supported; supported: "
                            f"{sorted(ARCHS) + sorted(FULL_MODELS)} (or wrap the model as an nn.Module and "
                            "pass it to vitbench.evaluate)")
    return model_type, ARCHS[model_type]


def feature_of(arch: Arch, feature: str | None, model_name: str) -> str:
    feature = feature or arch.default
    if feature not in FEATURES:
        raise unknown_name(f"feature output of {model_name}", feature, FEATURES)
    if feature == "cls" and arch.prefix_tokens == 0:
        raise VitbenchError(f"{model_name}: this architecture has no class token; use #pooled or #mean")
    if feature == "pooled" and arch.pooled_is_cls:
        return "cls"  # one name for one number (and one cache entry)
    return feature


# ---------------------------------------------------------------------------------------- preprocessing
def _side(value: Any, what: str, model_name: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
        h, w = value.get("height"), value.get("width")
        if h is not None and h == w:
            return int(h)
    raise VitbenchError(f"{model_name}: preprocessor_config.json {what} {value!r} is not square; vitbench "
                        "evaluates square inputs (pass preprocess= to vitbench.evaluate)")


def data_config(folder: Path, model_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(timm-style data config, the image processor fields it came from) from preprocessor_config.json."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        raise VitbenchError(f"{model_name}: {str(folder)!r} has no preprocessor_config.json, so resolution and "
                            "mean/std are unknown; save the image processor beside the model "
                            "(processor.save_pretrained(folder)) or pass preprocess= to vitbench.evaluate")
    cfg = _read_json(path, model_name)
    if cfg.get("do_rescale", True) and abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise VitbenchError(f"{model_name}: rescale_factor {cfg['rescale_factor']} is not 1/255; unsupported")
    size = cfg.get("size")
    crop = cfg.get("crop_size") if cfg.get("do_center_crop") else None
    side = _side(crop if crop is not None else size, "crop_size" if crop is not None else "size", model_name)
    resize_side = _side(size, "size", model_name) if (crop is not None and size is not None) else side
    normalize = cfg.get("do_normalize", True)
    out = {
        "input_size": (3, side, side),
        "mean": tuple(float(v) for v in (cfg.get("image_mean") or (0.5,) * 3)) if normalize else (0.0,) * 3,
        "std": tuple(float(v) for v in (cfg.get("image_std") or (0.5,) * 3)) if normalize else (1.0,) * 3,
        "interpolation": PIL_RESAMPLE.get(int(cfg.get("resample", 2)), "bilinear"),
        "crop_pct": round(side / resize_side, 4) if resize_side else 1.0,
        "crop_mode": "center",
    }
    keys = ("image_processor_type", "size", "crop_size", "do_center_crop", "resample", "image_mean", "image_std",
            "do_normalize", "rescale_factor")
    recorded = {k: cfg[k] for k in keys if k in cfg}
    recorded["source"] = str(path)
    return out, recorded


# ---------------------------------------------------------------------------------------------- building
def _parse(name: str) -> tuple[str, str | None]:
    base, feature = split_feature(name)
    repo = base[len("hf:"):].strip()
    if not repo:
        raise VitbenchError(f"model {name!r}: name a hub repo or a folder after hf:, e.g. hf:facebook/dinov2-small")
    return repo, feature


def _weights_kind(weights: Any, model_name: str) -> tuple[str, str | None]:
    if weights in (None, "", "default"):
        return "default", None
    if isinstance(weights, str) and weights.lower() in ("none", "random"):
        return "random", None
    path = os.fspath(weights)
    if not path.endswith(".safetensors") or not Path(path).is_file():
        raise VitbenchError(f"{model_name}: weights {path!r} must be 'default', 'none' or an existing "
                            ".safetensors file of this architecture")
    return "file", path


def weights_id(name: str, weights: Any) -> str:
    """`hf/<repo>@<commit>`, `hfdir:<sha256 of the folder's files>`, `file:<sha256>` or `none`, then `#feature`."""
    _need_transformers()
    repo, feature = _parse(name)
    kind, value = _weights_kind(weights, name)
    folder, wid, _ = locate(repo, name)
    _, arch = arch_of(folder, name)
    feature = feature_of(arch, feature, name)
    if kind == "random":
        wid = "none"
    elif kind == "file":
        wid = f"file:{ckpt.file_sha256(value)}"
    return f"{wid}#{feature}"


def patch_size(name: str) -> int | None:
    """`patch_size` of the vision config (a full CLIP / SigLIP config nests it under `vision_config`)."""
    repo, _ = _parse(name)
    folder, _, _ = locate(repo, name)
    config = _read_json(folder / "config.json", name)
    value = config.get("patch_size", (config.get("vision_config") or {}).get("patch_size"))
    return int(value) if isinstance(value, int) else None


class HFFeatures(nn.Module):
    """`forward(x) -> [B, D]`: the chosen output of a transformers vision model for normalised pixels."""

    def __init__(self, model: nn.Module, arch: Arch, feature: str, prefix_tokens: int, interpolate: bool):
        super().__init__()
        self.model = model
        self.norm_path = find_module(model, arch.norm) if arch.norm else None
        self.feature = feature
        self.prefix_tokens = prefix_tokens
        self.kwargs = {"interpolate_pos_encoding": True} if interpolate else {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x, **self.kwargs)
        if self.feature == "pooled":
            return out.pooler_output
        tokens = out.last_hidden_state
        if self.norm_path:
            tokens = self.model.get_submodule(self.norm_path)(tokens)
        return tokens[:, 0] if self.feature == "cls" else tokens[:, self.prefix_tokens:].mean(dim=1)


@contextlib.contextmanager
def _quiet(transformers):
    """No loading progress bar on stderr (the CLI draws its own), restored afterwards."""
    logging = transformers.utils.logging
    enabled, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()  # the load report lists a full CLIP's text weights: vitbench checks keys itself
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if enabled:
            logging.enable_progress_bar()


def find_module(model: nn.Module, leaf: str) -> str | None:
    """The qualified name of the shallowest submodule called `leaf` (transformers versions nest them differently)."""
    names = [n for n, _ in model.named_modules() if n == leaf or n.endswith("." + leaf)]
    return min(names, key=lambda n: n.count(".")) if names else None


def _drop(model: nn.Module, path: str) -> None:
    parent, _, attr = path.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, attr, None)
    if hasattr(owner, "use_head"):  # SigLIP checks `use_head` before calling `head`
        owner.use_head = False


def build(name: str, weights: Any, *, img_size: int | None, pos_interp: str) -> Built:
    _need_transformers()
    import transformers

    repo, feature = _parse(name)
    kind, value = _weights_kind(weights, name)
    folder, wid, revision = locate(repo, name)
    model_type, arch = arch_of(folder, name)
    feature = feature_of(arch, feature, name)
    config_dc, recorded = data_config(folder, name)
    cls = getattr(transformers, arch.model_class)
    unused_pooler = arch.pooler if feature != "pooled" else None
    if kind == "default":
        if not has_safetensors(folder):
            raise VitbenchError(f"{name}: {str(folder)!r} has no model.safetensors; only safetensors weights are "
                                "loaded (pickled .bin files can run code); re-save with save_pretrained")
        try:
            with _quiet(transformers):
                model, info = cls.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                                  output_loading_info=True, dtype=torch.float32)
        except Exception as exc:  # noqa: BLE001 - a bad folder is a user error
            raise VitbenchError(f"{name}: cannot load {str(folder)!r} ({ckpt._one_line(exc)})") from None
        drop = find_module(model, unused_pooler) if unused_pooler else None
        missing = [k for k in info.get("missing_keys", []) if not (drop and k.startswith(drop + "."))]
        mismatched = info.get("mismatched_keys", [])
        if missing or mismatched:
            shown = ", ".join(str(k) for k in (list(missing) + list(mismatched))[:4])
            hint = " (use #cls: this checkpoint has no trained pooler)" if feature == "pooled" else ""
            raise VitbenchError(f"{name}: the weights in {str(folder)!r} leave {len(missing) + len(mismatched)} "
                                f"tensor(s) untrained or mis-shaped ({shown}){hint}")
        wid, source = f"{wid}#{feature}", f"hf:{folder}"
    else:
        config = cls.config_class.from_pretrained(str(folder), local_files_only=True)
        model = cls(config)
        if kind == "file":
            wid, source = f"file:{ckpt.file_sha256(value)}#{feature}", value
        else:
            wid, source = f"none#{feature}", f"random init (transformers {arch.model_class})"
    drop = find_module(model, unused_pooler) if unused_pooler else None
    if drop:
        _drop(model, drop)
    if kind == "file":
        sd = ckpt.read_checkpoint(value)
        expected = model.state_dict()
        ckpt.check_fits(sd, expected, source=repr(value), model_name=name)
        model.load_state_dict({k: sd[k].to(v.dtype) for k, v in expected.items()})
    model = model.float().eval()
    native = int(getattr(model.config, "image_size", config_dc["input_size"][-1]))
    side = int(img_size or config_dc["input_size"][-1])
    config_dc["input_size"] = (3, side, side)
    prefix = arch.prefix_tokens + int(getattr(model.config, "num_register_tokens", 0) or 0)
    accepts = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
    trunk = HFFeatures(model, arch, feature, prefix, interpolate=accepts and side != native)
    extra = {
        "feature_output": feature,
        "feature_description": arch.pooled if feature == "pooled" else (
            "class token after the final norm" if feature == "cls" else f"mean of tokens [{prefix}:] after the final norm"),
        "hf_model_type": model_type,
        "hf_class": arch.model_class,
        "revision": revision,
        "model_preprocessing": recorded,
        "pos_embed_interpolation": ("bicubic (transformers interpolate_pos_encoding)" if side != native else None),
    }
    return Built(trunk, int(model.config.hidden_size), config_dc, wid, source, "hf", random_init=kind == "random",
                 pretrained_data=None if kind == "random" else (f"see {repo}" if revision else "unknown (local folder)"),
                 extra=extra)
