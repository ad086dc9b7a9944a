"""Model folders: a local folder, or a Hugging Face hub repo's snapshot from the cache (downloaded only online).

Owns `locate(repo_or_folder, model_name)` -> (folder, weights id, revision), `dir_digest` (the SHA-256 over the
files that define a saved model) and `has_safetensors`. Offline-first like `checkpoints.fetch_hub_file`: a
repo absent from the cache with HF_HUB_OFFLINE=1, or with the hub out of reach (a 3 s probe), fails at once with
one line naming the fix. Used by `hf:` (`models/hf.py`) and `timm:hf-hub:` (`models/timmhub.py`); exercised by
`vitbench run --model hf:facebook/dinov2-small`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vitbench.errors import VitbenchError
from vitbench.models import checkpoints as ckpt

HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt"]  # configs and safetensors weights; never pickles


def dir_digest(folder: Path) -> str:
    """SHA-256 over the files that define the model (config, preprocessing, weights), by name and content."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and (
        p.suffix == ".safetensors" or p.name in ("config.json", "preprocessor_config.json",
                                                 "model.safetensors.index.json")))
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}|{ckpt.file_sha256(folder / name)}|".encode())
    return h.hexdigest()


def has_safetensors(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()


def locate(repo: str, model_name: str, local_hint: str = "hf:/path/to/folder (saved with save_pretrained)",
           need_weights: bool = True) -> tuple[Path, str, str | None]:
    """(folder, weights id, hub revision) of `repo`: a local folder, or a hub repo from the cache / downloaded."""
    path = Path(repo).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise VitbenchError(f"{model_name}: folder {str(path)!r} has no config.json; save the model with "
                                "model.save_pretrained(folder)")
        return path, f"hfdir:{dir_digest(path)}", None
    if path.exists() or repo.startswith((".", "/", "~")) or repo.count("/") > 1:
        raise VitbenchError(f"{model_name}: {repo!r} is not a folder with a saved model (config.json + "
                            "model.safetensors) nor a hub repo id like 'facebook/dinov2-small'")
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json")
    if isinstance(cached, str) and (not need_weights or has_safetensors(Path(cached).parent)):
        folder = Path(cached).parent
        return folder, f"hf/{repo}@{folder.name}", folder.name
    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if isinstance(cached, str):
        where += " (config.json is there, model.safetensors is not)"
    fix = f"download it once with network access (`hf download {repo}`) or pass a local folder: {local_hint}"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise VitbenchError(f"cannot load {model_name}: repo {repo} is not in {where} and HF_HUB_OFFLINE=1; {fix}")
    if not ckpt._reachable(constants.ENDPOINT):
        raise VitbenchError(f"cannot load {model_name}: repo {repo} is not in {where} and {constants.ENDPOINT} "
                            f"cannot be reached; {fix}")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, allow_patterns=HUB_PATTERNS, etag_timeout=ckpt.PROBE_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - unknown repo, gated repo, network: one line
        raise VitbenchError(f"cannot download {model_name} from the hub ({ckpt._one_line(exc)}); check the repo "
                            "id, or pass a local folder") from None
    if need_weights and not has_safetensors(folder):
        raise VitbenchError(f"{model_name}: hub repo {repo} has no model.safetensors; only safetensors weights are "
                            "loaded (pickled .bin files can run code); convert it, or pass a local folder")
    return folder, f"hf/{repo}@{folder.name}", folder.name
