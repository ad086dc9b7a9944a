"""timm models published on the Hugging Face hub or saved to a folder: `timm:hf-hub:<repo>`, `timm:local-dir:<dir>`.

Owns `weights_id` / `build` for these specs (dispatched by `vitbench.models.sources`). The folder (a hub repo's
cached snapshot, or a local folder written by `timm.models.save_for_hf`) holds `config.json` (architecture,
model args, pretrained_cfg) and the weights (`model.safetensors`, or `pytorch_model.bin` read with
`weights_only=True`). The network is timm's own with `num_classes=0`, so features are timm's pre-logits as for
any timm model; preprocessing (resolution, mean/std, interpolation, crop) is the config's pretrained_cfg and is
recorded. Offline-first: a repo absent from the cache fails at once with the fix. Exercised by
`vitbench run --model timm:hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitbench.errors import VitbenchError
from vitbench.models import checkpoints as ckpt
from vitbench.models.sources import Built

HUB = "timm:hf-hub:"
LOCAL = "timm:local-dir:"


def _locate(name: str) -> tuple[Path, str, str | None, str | None]:
    """(folder, weights id, repo, revision)."""
    from vitbench.models import folders

    if name.startswith(LOCAL):
        folder = Path(name[len(LOCAL):]).expanduser()
        if not (folder / "config.json").is_file():
            raise VitbenchError(f"{name}: {str(folder)!r} is not a folder with config.json (write one with "
                                "timm.models.save_for_hf)")
        return folder, f"timmdir:{folders.dir_digest(folder)}", None, None
    repo = name[len(HUB):].strip()
    if not repo or "#" in repo:
        raise VitbenchError(f"{name}: name a hub repo after {HUB}, e.g. {HUB}timm/vit_small_patch16_224.augreg_in21k")
    folder, _, revision = folders.locate(repo, name, f"{LOCAL}/path/to/folder (saved with timm.models.save_for_hf)",
                                       need_weights=False)  # timm repos may hold pytorch_model.bin: fetched below
    return folder, f"timm-hub/{repo}@{revision}", repo, revision


def _weights_file(folder: Path, repo: str | None, name: str, wid: str) -> Path:
    for filename in ckpt.HUB_FILENAMES:
        if (folder / filename).is_file():
            return folder / filename
    if repo is None:
        raise VitbenchError(f"{name}: {str(folder)!r} has no {' or '.join(ckpt.HUB_FILENAMES)}")
    return ckpt.fetch_hub_file(repo, model_name=name, weights_id=wid)


def _kind(weights: Any, name: str) -> tuple[str, str | None]:
    if weights in (None, "", "default"):
        return "default", None
    if isinstance(weights, str) and weights.lower() in ("none", "random"):
        return "random", None
    path = os.fspath(weights)
    if not Path(path).is_file():
        raise VitbenchError(f"{name}: weights {path!r} must be 'default', 'none' or an existing weights file")
    return "file", path


def patch_size(name: str) -> int | None:
    """From the saved model args, else `patch<N>` in the architecture name."""
    import json
    import re

    folder, _, _, _ = _locate(name)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    value = (config.get("model_args") or {}).get("patch_size")
    if isinstance(value, int):
        return value
    match = re.search(r"patch(\d+)", str(config.get("architecture", "")))
    return int(match.group(1)) if match else None


def weights_id(name: str, weights: Any) -> str:
    """`timm-hub/<repo>@<commit>`, `timmdir:<sha256 of the folder's files>`, `file:<sha256>` or `none`."""
    kind, value = _kind(weights, name)
    folder, wid, _, _ = _locate(name)
    return {"default": wid, "random": "none"}.get(kind) or f"file:{ckpt.file_sha256(value)}"


def build(name: str, weights: Any, *, img_size: int | None, pos_interp: str, drop_rate: float = 0.0) -> Built:
    import timm
    import timm.data
    from timm.models._hub import load_model_config_from_path

    from vitbench.models.build import DROPOUT_PLACEMENT, _fit, _no_dropout, vit_dropout_kwargs

    kind, value = _kind(weights, name)
    folder, wid, repo, revision = _locate(name)
    try:
        pretrained_cfg, arch, model_args = load_model_config_from_path(folder)
    except Exception as exc:  # noqa: BLE001 - a config timm cannot parse
        raise VitbenchError(f"{name}: cannot read the timm config in {str(folder)!r} ({ckpt._one_line(exc)})") from None
    if not timm.is_model(arch):
        raise VitbenchError(f"{name}: architecture {arch!r} is not in the installed timm {timm.__version__}; "
                            "upgrade timm")
    kwargs = {**model_args, "pretrained": False, "num_classes": 0, "pretrained_cfg": pretrained_cfg}
    if drop_rate:  # vit_jax's placement, as for the registry's timm ViTs; other architectures have no such places
        kwargs.update(vit_dropout_kwargs(drop_rate))
    if img_size is not None:
        kwargs["img_size"] = int(img_size)
    try:
        trunk = timm.create_model(arch, **kwargs)
    except TypeError as exc:  # convnets take no img_size (nor the ViT dropout arguments)
        if drop_rate and "drop_rate" in str(exc):
            raise _no_dropout(arch) from None
        kwargs.pop("img_size", None)
        try:
            trunk = timm.create_model(arch, **kwargs)
        except TypeError as exc2:
            if drop_rate and "drop_rate" in str(exc2):
                raise _no_dropout(arch) from None
            raise
    path, source = None, f"random init (timm {arch})"
    if kind == "default":
        path = _weights_file(folder, repo, name, wid)
        source = f"hub:{repo}@{revision}" if repo else str(folder)
    elif kind == "file":
        path, source, wid = Path(value), value, f"file:{ckpt.file_sha256(value)}"
    else:
        wid = "none"
    if path is not None:
        sd = ckpt.read_checkpoint(path)
        trunk.load_state_dict(_fit(sd, trunk, repr(str(path)), name, pos_interp))
    data_config = dict(timm.data.resolve_data_config({}, model=trunk))
    if img_size is not None:
        data_config["input_size"] = (3, int(img_size), int(img_size))
    recorded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in pretrained_cfg.items()
                if k in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode", "tag", "hf_hub_id")}
    extra = {"timm_arch": arch, "revision": revision, "model_preprocessing": recorded,
             "pos_embed_interpolation": pos_interp if img_size else None,
             "dropout": ({"rate": drop_rate, "placement": DROPOUT_PLACEMENT, "timm_kwargs": vit_dropout_kwargs(drop_rate)}
                         if drop_rate else {"rate": 0.0})}
    return Built(trunk, int(trunk.num_features), data_config, wid, source, "timm", random_init=kind == "random",
                 pretrained_data=None if kind == "random" else (f"see {repo}" if repo else "unknown (local folder)"),
                 extra=extra)
