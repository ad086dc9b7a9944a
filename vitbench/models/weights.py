"""Weights choices and weights ids, without torch: `resolve_weights_id(name, weights)` and its rules.

A weights argument is `"default"` (the registry's checkpoint), `"none"` (random init), a tag or a local file;
`resolve_weights_id` turns it into the id that goes into cell keys (`timm/<arch>.<tag>`,
`torchvision/<builder>.<ENUM>`, `file:<sha256>` or `none`) without building or downloading anything, so
`vitbench validate` and `--dry-run` stay fast. Building lives in `vitbench.models.build`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vitbench.errors import VitbenchError
from vitbench.hashing import file_sha256
from vitbench.models.registry import ModelRef, hub_weights_id, parse_model_name

RANDOM = ("none", "random")
DEFAULT = (None, "", "default")
FILE_SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".bin", ".ckpt")


def _is_path(weights: str) -> bool:
    return os.sep in weights or weights.lower().endswith(FILE_SUFFIXES) or Path(weights).exists()


def _choice(ref: ModelRef, weights: str | os.PathLike | None) -> tuple[str, str | None]:
    """("random" | "file" | "hub", tag-or-path) for a weights argument."""
    if weights in DEFAULT:
        return "hub", ref.tag
    if isinstance(weights, str) and weights.lower() in RANDOM:
        return "random", None
    if isinstance(weights, os.PathLike) or _is_path(weights):
        path = os.fspath(weights)
        if not Path(path).is_file():
            raise VitbenchError(f"weights file {path!r} does not exist; pass an existing .safetensors, .npz "
                                "or .pth file")
        return "file", path
    if ref.info is not None:  # a tag: validate it through the name parser
        return "hub", parse_model_name(f"{ref.info.name}.{weights}").tag
    if ref.library == "timm":
        return "hub", parse_model_name(f"timm:{ref.arch}.{weights}").tag
    return "hub", weights


def resolve_weights_id(name: str, weights: str | os.PathLike | None = "default") -> str:
    """The weights id that goes into cell keys, without building anything: `timm/<arch>.<tag>`,
    `torchvision/<builder>.<ENUM>`, `file:<sha256 of the file>` or `none` (random init); other sources
    (`hf:`, `open_clip:`, `timm:hf-hub:`, registered modules) document theirs in `vitbench.models.sources` (their
    modules load on first use of such a name)."""
    from vitbench.models import sources

    from_source = sources.weights_id(name, weights)
    if from_source is not None:
        return from_source
    ref = parse_model_name(name)
    kind, value = _choice(ref, weights)
    if kind == "random":
        return "none"
    if kind == "file":
        return f"file:{file_sha256(value)}"
    return hub_weights_id(ref, value)
