"""`vitbench cache ls|clear`: inspect and empty the feature cache and the decoded-image cache.

The cache folder is `--cache-dir`, else `$VITBENCH_CACHE_DIR`, else `~/.cache/vitbench`
(`vitbench.env.cache_dir`); features live in `features/`, decoded images in `images/`.
The lead mounts `app` on the main CLI as `cache`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from vitbench.errors import VitbenchError
from vitbench.env import cache_dir as default_cache_dir

app = typer.Typer(help="Inspect or empty the feature / decoded-image cache.", no_args_is_help=True)
out = Console()
WHAT = ("features", "images", "all")

CacheDirOpt = Annotated[
    Optional[Path], typer.Option("--cache-dir", help="Cache folder (default: $VITBENCH_CACHE_DIR or ~/.cache/vitbench).")
]


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


@app.command("ls")
def ls(cache_dir: CacheDirOpt = None) -> None:
    """List cached features (model, task, split, shape, size) and the decoded-image cache's total size."""
    root = default_cache_dir(cache_dir)
    from vitbench.features import list_feature_cache  # torch: only when the cache is actually listed

    rows = list_feature_cache(root)
    table = Table(title=f"feature cache: {root / 'features'}")
    for col in ("model", "task", "split", "shape", "size", "status", "file"):
        table.add_column(col)
    for r in rows:
        shape = "x".join(str(v) for v in r.get("shape") or []) or "?"
        table.add_row(
            str(r.get("model") or "?"), str(r.get("task") or "?"), str(r.get("split") or "?"), shape,
            _size(r["bytes"]), r["status"], Path(r["path"]).name,
        )
    if rows:
        out.print(table)
    images = root / "images"
    n_img = len(list(images.glob("*.npy"))) if images.is_dir() else 0
    out.print(f"features: {len(rows)} entries, {_size(sum(r['bytes'] for r in rows))} in {root / 'features'}")
    out.print(f"decoded images: {n_img} splits, {_size(_folder_bytes(images)[1])} in {images}")


@app.command("clear")
def clear(
    what: Annotated[str, typer.Option("--what", help="features, images or all.")] = "all",
    model: Annotated[Optional[str], typer.Option("--model", help="Only features of this model (e.g. vit_b16).")] = None,
    task: Annotated[Optional[str], typer.Option("--task", help="Only features of this task.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Delete cached features and/or decoded images (they are rebuilt on the next run that needs them)."""
    if what not in WHAT:
        raise VitbenchError(f"--what must be one of {list(WHAT)}, got {what!r}")
    if (model or task) and what != "features":
        raise VitbenchError("--model/--task filter feature entries only; add --what features")
    root = default_cache_dir(cache_dir)
    scope = f"{what} in {root}" + (f" (model={model or '*'}, task={task or '*'})" if model or task else "")
    if not yes and not typer.confirm(f"delete cached {scope}?", default=False):
        out.print("nothing deleted")
        return
    entries = freed = 0
    from vitbench.features import clear_feature_cache  # torch: only when the cache is actually cleared

    try:
        if what in ("features", "all"):
            entries, freed = clear_feature_cache(root, model=model or "", task=task or "")
        images = root / "images"
        if what in ("images", "all") and images.is_dir():
            n, b = _folder_bytes(images)
            shutil.rmtree(images)
            entries, freed = entries + n, freed + b
    except OSError as exc:
        raise VitbenchError(
            f"cannot delete cached files in {root} ({exc.strerror}: {exc.filename}); the cache folder is read-only "
            "or not yours: clear it with the owner's rights, or use another --cache-dir"
        ) from None
    out.print(f"deleted {entries} cached file(s), {_size(freed)} from {root}")
