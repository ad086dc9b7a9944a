"""Folders and environment variables: the cache dir, the data root, the ReaL labels file, offline mode.

Every `VITBENCH_*` variable and the Hugging Face offline switches are read here and nowhere else:

- `VITBENCH_CACHE_DIR` (or `--cache-dir`): features, decoded images, Hugging Face datasets cache;
  default `~/.cache/vitbench`.
- `VITBENCH_DATA_ROOT` (or `--data-root`): prepared task data; default `~/.cache/vitbench/data`.
- `VITBENCH_REAL_JSON`: the ImageNet-ReaL label file; default `<data root>/real.json`.
- `VITBENCH_PROGRESS=1`: draw progress bars even when stderr is not a terminal.
- `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE`: never touch the network (see `hub_offline`, `datasets_offline`);
  `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_DATASETS_CACHE`: where the Hugging Face hub and its caches are,
  read as huggingface_hub / datasets read them (`hf_endpoint`, `hf_hub_cache`, `hf_datasets_cache`).

Suite files are found here too (`suite_dirs`, `available_suites`): `./suites` first, then the ones shipped
inside the package (`vitbench/suite_files/`).

A run's `--cache-dir` is applied for the duration of the run with `cache_dir_scope`, not by editing the
process environment. Exercised by `vitbench run`, `vitbench data` and `vitbench cache`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "VITBENCH_CACHE_DIR"
DATA_ROOT_ENV = "VITBENCH_DATA_ROOT"
REAL_JSON_ENV = "VITBENCH_REAL_JSON"
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of a boolean environment variable

BUNDLED_SUITES = Path(__file__).resolve().parent / "suite_files"  # package data (pyproject package-data)

_SCOPED_CACHE: list[Path] = []  # innermost `cache_dir_scope` last


def _home_cache() -> Path:
    return Path.home() / ".cache" / "vitbench"


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit` (`--cache-dir`), else the innermost `cache_dir_scope`, else `$VITBENCH_CACHE_DIR`, else
    `~/.cache/vitbench`."""
    if explicit:
        return Path(explicit).expanduser()
    if _SCOPED_CACHE:
        return _SCOPED_CACHE[-1]
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else _home_cache()


@contextlib.contextmanager
def cache_dir_scope(path: str | os.PathLike | None) -> Iterator[None]:
    """While inside, `cache_dir()` answers `path` (no-op for None): how a run's `--cache-dir` reaches code
    that is not handed the run context (e.g. the Hugging Face datasets cache of a source)."""
    if path is None:
        yield
        return
    _SCOPED_CACHE.append(Path(path).expanduser())
    try:
        yield
    finally:
        _SCOPED_CACHE.pop()


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit` (`--data-root`), else `$VITBENCH_DATA_ROOT`, else `~/.cache/vitbench/data`."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else _home_cache() / "data"


def real_json(root: str | os.PathLike | None = None) -> Path:
    """`$VITBENCH_REAL_JSON`, else `<data root>/real.json`."""
    env = os.environ.get(REAL_JSON_ENV)
    return Path(env).expanduser() if env else data_root(root) / "real.json"


def progress_forced() -> bool:
    return os.environ.get("VITBENCH_PROGRESS") == "1"


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()


def hf_hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", _hf_home() / "hub"))).expanduser()


def hf_datasets_cache() -> Path:
    return Path(os.environ.get("HF_DATASETS_CACHE", _hf_home() / "datasets")).expanduser()


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in _TRUE


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` is set: no download of weights or hub files."""
    return _flag("HF_HUB_OFFLINE")


def datasets_offline() -> bool:
    """`HF_HUB_OFFLINE` or `HF_DATASETS_OFFLINE` is set: no download of datasets."""
    return hub_offline() or _flag("HF_DATASETS_OFFLINE")


def suite_dirs() -> list[Path]:
    """Folders searched for suites by name: ./suites (a user's copies win), then the shipped ones."""
    out: list[Path] = []
    for d in (Path.cwd() / "suites", BUNDLED_SUITES):
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def available_suites() -> dict[str, Path]:
    """Suite name -> file, first folder wins."""
    found: dict[str, Path] = {}
    for d in suite_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found
