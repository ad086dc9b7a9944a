"""Folder sources: the widely shared "vtab-1k" layout (`vtab1k_folder`) and class-per-folder trees
(`imagefolder`).

vtab-1k folder (NOAH `get_vtab1k.py`, docs/sources.md#vtab-1k-jpeg-folders): `<task>/images/<split>/NNNNNN.jpg` plus
`<split>.txt` listing "path label" per line for train800, val200, train800val200 and test. Its labels are
already VTAB's, and the split files are the VTAB-1k splits themselves, so the reader serves those split
names directly; the JPEG copies are lossy, which every record flags.
imagefolder: `<root>/<split>/<class>/<image>`; classes sorted by name unless `classes` lists them.
Exercised by `vitbench run` / `vitbench data prepare` on tasks with these sources.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vitbench.data.base import decode_image
from vitbench.data.sources.base import SourceReader, SourceUnavailable, local_path, option
from vitbench.errors import VitbenchError

VTAB1K_SPLITS = ("train800", "val200", "train800val200", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class FileListReader(SourceReader):
    """Splits given as lists of (file, raw label)."""

    def __init__(self, spec, root: Path, files: dict[str, list[tuple[Path, Any]]]):
        super().__init__(spec)
        self.root = root
        self.files = files

    def split_sizes(self) -> dict[str, int]:
        return {s: len(v) for s, v in self.files.items()}

    def raw_labels(self, split: str, rows: Sequence[int]) -> list[Any]:
        items = self.files[split]
        return [items[r][1] for r in rows]

    def image_bytes(self, split: str, row: int) -> bytes | None:
        path = self.files[split][row][0]
        try:
            return path.read_bytes()
        except OSError as exc:
            raise VitbenchError(f"cannot read image file {path} (split {split!r} row {row}): {exc}") from None

    def image(self, split: str, row: int) -> Image.Image:
        return decode_image(self.image_bytes(split, row), f"{self.files[split][row][0]} (split {split!r} row {row})")

    def describe(self, split: str, row: int) -> str:
        return str(self.files[split][row][0])

    def key(self, split: str, row: int) -> str | None:
        return self.files[split][row][0].name

    def order_key(self, split: str, row: int) -> str | None:
        path = self.files[split][row][0]
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else path.as_posix()

    def identity(self) -> dict[str, Any]:
        """Listing + (size, mtime_ns) of every file: a replaced image changes it, even at the same size."""
        h = hashlib.sha256()
        base = str(self.root) + os.sep
        for split in sorted(self.files):
            lines = []
            for path, label in self.files[split]:
                p = str(path)  # plain strings and os.stat: this runs once per file of 1M-image folders
                try:
                    st = os.stat(p)
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError:
                    size, mtime = -1, -1
                lines.append(f"{split}\t{p[len(base):] if p.startswith(base) else p}\t{label}\t{size}\t{mtime}\n")
            h.update("".join(lines).encode())
        return {"kind": self.kind, "id": self.spec.id, "root": str(self.root), "listing_stat_sha256": h.hexdigest()}


class VTAB1kFolderReader(FileListReader):
    kind = "vtab1k_folder"
    lossy = True
    labels_mapped = True  # the folder's labels are VTAB's already

    @property
    def native_splits(self) -> set[str]:
        return set(self.files)


def _read_list(root: Path, split: str) -> list[tuple[Path, int]]:
    listing = root / f"{split}.txt"
    out = []
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise VitbenchError(f"{listing}:{n}: expected 'path label', got {line!r}")
        rel = parts[0]
        path = root / rel
        if not path.exists() and (root / "images" / split / Path(rel).name).exists():
            path = root / "images" / split / Path(rel).name
        out.append((path, int(parts[1])))
    return out


def open_vtab1k_folder(spec, task, data_root) -> VTAB1kFolderReader:
    root = local_path(spec, data_root)
    if not root.is_dir():
        raise SourceUnavailable(f"folder {root} does not exist")
    files = {s: _read_list(root, s) for s in VTAB1K_SPLITS if (root / f"{s}.txt").is_file()}
    if not files:
        raise SourceUnavailable(f"no {'/'.join(s + '.txt' for s in VTAB1K_SPLITS)} in {root}")
    return VTAB1kFolderReader(spec, root, files)


class ImageFolderReader(FileListReader):
    kind = "imagefolder"


def open_imagefolder(spec, task, data_root) -> ImageFolderReader:
    root = local_path(spec, data_root)
    if not root.is_dir():
        raise SourceUnavailable(f"folder {root} does not exist")
    split_dirs = sorted(p for p in root.iterdir() if p.is_dir() and any(c.is_dir() for c in p.iterdir()))
    if not split_dirs:
        raise SourceUnavailable(f"no <split>/<class>/ folders under {root}")
    classes = option(spec, "classes") or sorted({c.name for d in split_dirs for c in d.iterdir() if c.is_dir()})
    index = {c: i for i, c in enumerate(classes)}
    files: dict[str, list[tuple[Path, int]]] = {}
    for d in split_dirs:
        items = []
        for cdir in sorted(c for c in d.iterdir() if c.is_dir()):
            if cdir.name not in index:
                raise VitbenchError(f"{cdir}: class folder not in the source's 'classes' list; add it or remove the folder")
            items.extend((f, index[cdir.name]) for f in sorted(cdir.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS)
        files[d.name] = items
    return ImageFolderReader(spec, root, files)
