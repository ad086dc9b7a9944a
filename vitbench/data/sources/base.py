"""The source-reader interface every source kind implements, and the "source unavailable" signal.

A reader exposes a source's own splits (sizes, raw labels, images by row); `vitbench.data.loader`
slices them with the task's split expressions. Exercised by every `vitbench run` and `vitbench data prepare`.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from PIL import Image

from vitbench import env
from vitbench.errors import VitbenchError
from vitbench.spec import SourceSpec


class SourceUnavailable(VitbenchError):
    """The source's data is not here (offline, not downloaded, path missing); the loader tries the next one."""


class SourceReader(ABC):
    """One opened source: its splits, raw labels, and images by (split, row)."""

    kind: str = ""
    lossy: bool = False  # True when images were re-encoded lossily (JPEG copies) relative to the original

    def __init__(self, spec: SourceSpec):
        self.spec = spec

    @abstractmethod
    def split_sizes(self) -> dict[str, int]:
        """Rows per source split, e.g. {"train": 3060, "test": 6084}."""

    @abstractmethod
    def raw_labels(self, split: str, rows: Sequence[int]) -> list[Any]:
        """Raw label values of `rows` (before the task's label transform)."""

    @abstractmethod
    def image(self, split: str, row: int) -> Image.Image:
        """Decoded image (any mode); raise VitbenchError naming the file if corrupt."""

    def image_bytes(self, split: str, row: int) -> bytes | None:
        """Encoded bytes of the image as stored by the source, if it has them."""
        return None

    def describe(self, split: str, row: int) -> str:
        """Where image (split, row) lives, for error messages: a file path or dataset/split/row."""
        return f"{self.kind}:{self.spec.id} split {split!r} row {row}"

    def key(self, split: str, row: int) -> str | None:
        """A per-image name (file name) when the source has one."""
        return None

    def order_key(self, split: str, row: int) -> str | None:
        """The name the class-mixing order hashes (vitbench/data/order.py): `key` unless a reader knows better."""
        return self.key(split, row)

    def identity(self) -> dict[str, Any]:
        """What the data depends on: kind, id, version/revision, content identity (hashed into fingerprints)."""
        return {"kind": self.kind, "id": self.spec.id}

    def provenance(self) -> dict[str, Any]:
        return {**self.identity(), "lossy": self.lossy}


def option(spec: SourceSpec, name: str, default: Any = None) -> Any:
    return spec.options.get(name, default)


def hub_offline() -> bool:
    """Offline for datasets (`HF_HUB_OFFLINE` or `HF_DATASETS_OFFLINE`); see `vitbench.env`."""
    return env.datasets_offline()


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF endpoint accepts a TCP connection within `timeout` seconds (no retries)."""
    url = urlparse(env.hf_endpoint())
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def local_path(spec: SourceSpec, data_root: Path | None) -> Path:
    """`spec.id` as a path: absolute, `~`-expanded, or relative to the data root."""
    p = Path(os.path.expandvars(spec.id)).expanduser()
    if not p.is_absolute() and data_root is not None and not p.exists():
        p = Path(data_root) / p
    return p
