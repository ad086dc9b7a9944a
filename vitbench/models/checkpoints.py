"""Reading weights: local files (.safetensors, .pth/.pt, Google .npz), the Hugging Face hub cache, torch hub URLs.

Owns everything that touches a weights file: `read_checkpoint(path)` (pickles only with `weights_only=True`;
truncated or foreign files become one-line `VitbenchError`s), `file_sha256`, `fetch_hub_file` / `fetch_url`
(offline-first: with `HF_HUB_OFFLINE=1`, or when the host cannot be reached within a few seconds, they raise at
once, naming the model, the weights id, where they looked and `--weights PATH`), and `fit_state_dict`, which
maps a checkpoint onto a timm network (drops the pre-training head and `pre_logits`, resizes position
embeddings, converts torchvision ViT key names) and reports exactly which keys do not fit.
Exercised by `vitbench run --model vit_b16 [--weights PATH]`.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitbench.env import hub_offline
from vitbench.errors import VitbenchError
from vitbench.hashing import file_sha256  # noqa: F401  (re-exported: weights ids hash files)
from vitbench.models.posembed import resample_pos_embed

PROBE_TIMEOUT_S = 3.0
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "params")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]




def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor] | dict[str, np.ndarray]:
    """Read a local weights file into a flat dict. `.npz` gives numpy arrays under Google's key names; the other
    formats give tensors (wrappers like {"state_dict": ...} and a `module.` prefix are removed)."""
    p = Path(path)
    if not p.is_file():
        raise VitbenchError(f"weights file {str(p)!r} does not exist; pass an existing .safetensors, .npz or .pth file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if suffix in (".pth", ".pt", ".bin", ".ckpt"):
            obj = torch.load(p, map_location="cpu", weights_only=True)
            return _unwrap(obj, p)
    except VitbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader failure is a user-facing bad file
        name = type(exc).__name__
        if "weights_only" in str(exc) or "Unpickl" in name or "Unsupported global" in str(exc):
            raise VitbenchError(f"refusing to load {str(p)!r}: it is a pickle with arbitrary Python objects, which "
                                "could run code (loaded with weights_only=True); re-save it as a plain state dict "
                                "or as .safetensors") from None
        raise VitbenchError(f"cannot read weights file {str(p)!r} ({name}: {_one_line(exc)}); the file looks "
                            "truncated or corrupt, download or export it again") from None
    raise VitbenchError(f"unsupported weights file type {suffix!r} for {str(p)!r}; use .safetensors, Google .npz "
                        "or .pth/.pt")


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VitbenchError(f"{str(path)!r} holds no state dict of tensors; save `model.state_dict()` instead")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------- fitting a state dict onto a timm network


def torchvision_vit_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ViT state dict to timm's layout: a rename only, q/k/v stay stacked in the same order
    (docs/models.md#state-dict-keys)."""
    out: dict[str, torch.Tensor] = {}
    rename = {"conv_proj.weight": "patch_embed.proj.weight", "conv_proj.bias": "patch_embed.proj.bias",
              "class_token": "cls_token", "encoder.pos_embedding": "pos_embed",
              "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias"}
    sub = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
           "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
           "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2"}
    for key, value in sd.items():
        if key in rename:
            out[rename[key]] = value
        elif key.startswith("encoder.layers.encoder_layer_"):
            index, rest = key[len("encoder.layers.encoder_layer_"):].split(".", 1)
            for old, new in sub.items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            out[f"blocks.{index}.{rest}"] = value
        elif key.startswith("heads."):
            out["head." + key.split(".", 1)[1]] = value
        else:
            out[key] = value
    return out


def fit_state_dict(sd: dict[str, torch.Tensor], trunk: nn.Module, *, source: str, model_name: str,
                   pos_interp: str = "bilinear") -> dict[str, torch.Tensor]:
    """Adapt `sd` to `trunk` (a timm model built with num_classes=0) and return it; raise naming mismatched keys."""
    if "conv_proj.weight" in sd and "encoder.pos_embedding" in sd:
        sd = torchvision_vit_to_timm(sd)
    expected = trunk.state_dict()
    classifier = (getattr(trunk, "pretrained_cfg", None) or {}).get("classifier") or "head"
    drop_prefixes = tuple({classifier + ".", "head.", "pre_logits.", "heads."})
    sd = {k: v for k, v in sd.items() if k in expected or not k.startswith(drop_prefixes)}
    if "pos_embed" in sd and "pos_embed" in expected and sd["pos_embed"].shape != expected["pos_embed"].shape:
        prefix = 0 if getattr(trunk, "no_embed_class", False) else getattr(trunk, "num_prefix_tokens", 1)
        grid = tuple(trunk.patch_embed.grid_size)
        if sd["pos_embed"].shape[-1] == expected["pos_embed"].shape[-1]:
            sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], grid, prefix, pos_interp=pos_interp)
    check_fits(sd, expected, source=source, model_name=model_name)
    return {k: sd[k].to(expected[k].dtype) for k in expected}


def check_fits(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, source: str, model_name: str) -> None:
    """Raise a one-line VitbenchError naming missing, unexpected and wrongly shaped keys, if there are any."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", wrong)):
            if keys:
                shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        raise VitbenchError(f"weights {source} do not fit model {model_name!r} (wrong architecture?): "
                            f"{'; '.join(parts)}; pass weights made for this model")


# ---------------------------------------------------------------- offline-first downloads




def _reachable(url: str) -> bool:
    parts = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _missing(model_name: str, weights_id: str, where: str, why: str) -> VitbenchError:
    return VitbenchError(
        f"cannot load weights {weights_id} for model {model_name!r}: not found in {where} and {why}; download "
        f"them once with network access, or pass a local file with --weights PATH (.safetensors, Google .npz, "
        f".pth), or --weights none for random init")


def fetch_hub_file(repo_id: str, *, model_name: str, weights_id: str,
                   filenames: tuple[str, ...] = HUB_FILENAMES) -> Path:
    """Local path of a weights file of Hugging Face hub repo `repo_id`, from the cache or (online) downloaded."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE}, repo {repo_id})"
    if hub_offline():
        raise _missing(model_name, weights_id, where, "HF_HUB_OFFLINE=1")
    endpoint = constants.ENDPOINT
    if not _reachable(endpoint):
        raise _missing(model_name, weights_id, where, f"{endpoint} cannot be reached")
    last: Exception | None = None
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, etag_timeout=PROBE_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - try the next file name, then report one line
            last = exc
    raise _missing(model_name, weights_id, where, f"the download failed ({_one_line(last)})")


def fetch_url(url: str, *, model_name: str, weights_id: str) -> Path:
    """Local path of a weights URL in torch hub's checkpoint cache, downloading it (online only) when absent."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)
    if target.is_file():
        return target
    where = f"the torch hub cache ({target})"
    if hub_offline():
        raise _missing(model_name, weights_id, where, "HF_HUB_OFFLINE=1")
    if not _reachable(url):
        raise _missing(model_name, weights_id, where, f"{urllib.parse.urlparse(url).hostname} cannot be reached")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as exc:  # noqa: BLE001
        raise _missing(model_name, weights_id, where, f"the download failed ({_one_line(exc)})") from None
    return target
