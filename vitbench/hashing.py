"""Hashes: a file's SHA-256 and the SHA-256 of an object's canonical JSON.

Record keys (`vitbench.cells.cell_key`), split fingerprints, cache keys, weights files and prepared shards are
all hashed here, so one object always hashes the same way everywhere. Exercised by every `vitbench run`
(record keys) and `vitbench data verify` (shard hashes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_BLOCK = 1 << 22


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces (non-JSON values as `str`): equal objects give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def json_sha256(obj: Any, length: int | None = None) -> str:
    """Hex SHA-256 of `canonical_json(obj)`, truncated to `length` hex digits when given."""
    digest = hashlib.sha256(canonical_json(obj).encode()).hexdigest()
    return digest[:length] if length else digest


def file_sha256(path: str | os.PathLike, *, memo: bool = True) -> str:
    """Hex SHA-256 of a file's bytes.

    With `memo` (the default) the digest is remembered per (path, size, mtime) for this process, which suits
    identifying a weights file; integrity checks (`data verify`, the feature cache) pass `memo=False` so a
    file changed in place without a new mtime is still read again.
    """
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo and key in _FILE_HASHES:
        return _FILE_HASHES[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]
