"""Files that are whole or absent: atomic writes, streamed .npy arrays, hashes, free space, temp files, safe names.

Every file vitbench writes (records, caches, manifests, shards) goes through here:
- `atomic_output(path)` / `atomic_write_json|text|bytes`: write to a temp name in the same folder, fsync, rename
  over `path` (then fsync the folder), so a reader sees the old file or the new one, never half of one.
- `NpyWriter`: a .npy array streamed with ordinary writes into a preallocated temp file, hashed as it is written
  (no memory-mapped sparse file: a full disk fails at preallocation with a clean error, not a Bus error).
- Temp names are `<name>.tmp-<host>-<pid>-<token>`; `sweep_stale_temps` removes those whose process (on this
  host) is gone, e.g. after `kill -9`. A full disk (ENOSPC/EDQUOT) becomes `DiskFull`: one line naming the
  folder and the space needed, temp file removed.
- `file_sha256` and `hash_matches` (sha256 checked once per process per file version) verify caches and shards.
- `safe_name` refuses names that would escape a folder (`..`, slashes, control characters).
Exercised by every `vitbench run|fewshot|finetune`, `vitbench data prepare` and `vitbench cache`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vitbench import hashing
from vitbench.errors import VitbenchError

HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
TEMP_RE = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-[0-9a-f]{8}$")
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class DiskFull(VitbenchError):
    """No space left where a file had to be written (its temp file is already removed)."""


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def disk_full(folder: Path | str, need: int | None = None, what: str = "files") -> DiskFull:
    free = free_bytes(folder)
    needs = f"needs about {_mb(need)}, {_mb(free)} free" if need is not None else f"{_mb(free)} free"
    return DiskFull(
        f"no space left in {folder} for {what} ({needs}); "
        "free space there or point vitbench at another disk (--out, --cache-dir or VITBENCH_CACHE_DIR)"
    )


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


def free_bytes(folder: Path | str) -> int:
    """Free bytes on the filesystem holding `folder` (its nearest existing ancestor)."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 0


def check_space(folder: Path | str, need: int, what: str = "files") -> None:
    """Raise `DiskFull` before writing when `folder` has less than `need` bytes free."""
    if free_bytes(folder) < need:
        raise disk_full(folder, need, what)


def temp_path(path: Path | str) -> Path:
    """A fresh temp name beside `path` that names this host and process (so a sweep can tell it is stale)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def atomic_output(path: Path | str, *, need: int | None = None, what: str | None = None):
    """Yield a temp path beside `path`; when the block succeeds, fsync it and rename it over `path`.

    On any exception the temp file is removed; a full disk becomes `DiskFull` naming the folder.
    """
    path = Path(path)
    what = what or path.name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path.parent, need, what) from None
        raise
    if need is not None:
        check_space(path.parent, need, what)
    tmp = temp_path(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        _remove(tmp)
        if is_disk_full(exc):
            raise disk_full(path.parent, need, what) from None
        raise


def atomic_write_bytes(path: Path | str, data: bytes, what: str | None = None) -> None:
    with atomic_output(path, need=len(data), what=what) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, as for any new file
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def atomic_write_text(path: Path | str, text: str, what: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(path: Path | str, payload: Any, indent: int | None = 2, what: str | None = None) -> None:
    atomic_write_text(path, json.dumps(payload, indent=indent, sort_keys=True, default=str) + "\n", what)


def file_sha256(path: Path | str) -> str:
    """sha256 of the file's bytes as they are now (`vitbench.hashing.file_sha256`, never memoised)."""
    return hashing.file_sha256(path, memo=False)


_VERIFIED: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256) checked in this process


def hash_matches(path: Path | str, expected: str | None) -> bool:
    """Whether `path`'s sha256 is `expected`; hashed once per process per (size, mtime) of the file."""
    st = os.stat(path)
    stamp = (st.st_size, st.st_mtime_ns, str(expected))
    if _VERIFIED.get(str(path)) == stamp:
        return True
    if not expected or file_sha256(path) != expected:
        return False
    _VERIFIED[str(path)] = stamp
    return True


def mark_verified(path: Path | str, sha256: str) -> None:
    """Record that `path` (just written by us, hashed while writing) has `sha256`."""
    st = os.stat(path)
    _VERIFIED[str(path)] = (st.st_size, st.st_mtime_ns, sha256)


def forget_verified() -> None:
    _VERIFIED.clear()


class NpyWriter:
    """Stream a C-order .npy array of known `shape` to `path` row-block by row-block; atomic on `commit`.

    The temp file is preallocated (`posix_fallocate`), so a full disk fails before any work with `DiskFull`;
    `sha256` is the hash of the whole file, computed while writing.
    """

    def __init__(self, path: Path | str, dtype, shape: tuple[int, ...], what: str = "cache"):
        self.path, self.dtype, self.shape, self.what = Path(path), np.dtype(dtype), tuple(int(s) for s in shape), what
        buf = io.BytesIO()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(buf, header)
        head = buf.getvalue()
        self.nbytes = len(head) + int(np.prod(self.shape)) * self.dtype.itemsize
        self.rows = 0
        self._sha = hashlib.sha256()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_full(self.path.parent, self.nbytes, what) if is_disk_full(exc) else exc from None
        check_space(self.path.parent, self.nbytes, what)
        self.tmp = temp_path(self.path)
        fd = None
        try:  # the open is inside: a signal (SIGTERM -> Terminated) right after it must not leave the temp file
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            fallocate = getattr(os, "posix_fallocate", None)  # absent on macOS: the writes then find a full disk
            try:
                if fallocate is not None:
                    fallocate(fd, 0, self.nbytes)  # reserve the blocks now: no SIGBUS, no half file later
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
            self._f = os.fdopen(fd, "wb", buffering=1 << 20)
        except BaseException as exc:
            if fd is not None:
                os.close(fd)
            self._fail(exc)
        self._write(head)

    def _fail(self, exc: BaseException):
        _remove(self.tmp)
        if is_disk_full(exc):
            raise disk_full(self.path.parent, self.nbytes, self.what) from None
        raise exc

    def _write(self, data) -> None:
        try:
            self._f.write(data)
        except BaseException as exc:
            self.abort()
            self._fail(exc)
        self._sha.update(data)

    def write(self, block: np.ndarray) -> None:
        """Append rows (a block of shape [k, *shape[1:]])."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            self.abort()
            raise ValueError(f"block of shape {block.shape} does not fit an array of shape {self.shape} at row {self.rows}")
        self._write(memoryview(block).cast("B"))
        self.rows += len(block)

    def commit(self) -> str:
        """fsync, rename over `path`; returns the file's sha256."""
        if self.rows != self.shape[0]:
            self.abort()
            raise ValueError(f"wrote {self.rows} of {self.shape[0]} rows")
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            self.abort()
            self._fail(exc)
        _fsync_dir(self.path.parent)
        digest = self._sha.hexdigest()
        mark_verified(self.path, digest)
        return digest

    def abort(self) -> None:
        try:
            self._f.close()
        except Exception:  # noqa: BLE001 - closing a file whose write failed may fail again; it is removed anyway
            pass
        _remove(self.tmp)

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def sweep_stale_temps(*folders: Path | str | None, recursive: bool = True) -> list[Path]:
    """Remove temp files/folders (`*.tmp-<host>-<pid>-<token>`) of this host whose process is gone."""
    removed = []
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        candidates = []
        for top, dirs, files in os.walk(folder):  # os.walk: a results folder may hold 100,000 records
            candidates += [Path(top, n) for n in dirs + files if ".tmp-" in n]
            if not recursive:
                break
        for p in candidates:
            m = TEMP_RE.search(p.name)
            if m and m["host"] == HOST and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
                try:
                    _remove(p)
                    removed.append(p)
                except OSError:
                    pass  # read-only folder: leave it; it is never read as data
    return removed


_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def safe_name(name: str, what: str = "name") -> str:
    """`name` as one path component: refused when it would escape or be ambiguous, else markup-free.

    `..`, `.`, empty names, slashes, backslashes and control characters are refused (one line); other
    characters outside [A-Za-z0-9-_.] become `_`, so a name never creates nested or hidden folders.
    """
    if not isinstance(name, str) or name.strip() in ("", ".", "..") or _UNSAFE.search(name) or name.startswith("."):
        raise VitbenchError(
            f"{what} {name!r} cannot be used as a folder name (empty, '.', '..', leading dot, slash or control "
            "character); rename it with letters, digits, '-', '_' or '.'"
        )
    return "".join(c if c.isalnum() and c.isascii() or c in "-_." else "_" for c in name)
