"""Results store: one JSON record per cell, written atomically, keyed by the cell's content hash.

Layout: `<out>/<suite>/<task>/<method>/<cell key>.json` (each name checked by `fsutil.safe_name`). A record is
valid only if it parses and carries `schema_version`, `key` and `metrics`; a half-written temp file
(`*.json.tmp-*`) is never read as a record, and a record of a schema this version does not know is skipped with
a warning (and never overwritten). Resume = a valid record with the cell's key whose `data_fingerprint` equals
the current data's (`vitbench.data.fingerprint`) and that is not a failure record: a cell that raised leaves
`{"status": "failed", "error": {...}}` (`make_failure_record`), which tables skip and resume reruns.
Exercised by `vitbench run` (write, resume) and
`vitbench report` (load). The schema is documented in README.md ("Result records").
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from vitbench import __version__
from vitbench.cells import Cell, CellResult
from vitbench.errors import VitbenchError
from vitbench.fsutil import atomic_write_json as _atomic_json
from vitbench.fsutil import safe_name
from vitbench.threads import thread_settings

# 2: records carry `data_fingerprint` (the identity of the data the number was measured on).
SCHEMA_VERSION = 2
KNOWN_SCHEMAS = (1, 2)  # 1 is read by reports, but never counts as done (it has no data identity)
REQUIRED_FIELDS = ("schema_version", "key", "metrics", "cell")
STATUS_OK, STATUS_FAILED = "ok", "failed"  # records without `status` (older ones) are ok


def is_failed(rec: dict[str, Any] | None) -> bool:
    return isinstance(rec, dict) and rec.get("status") == STATUS_FAILED


def ok_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that are results (failure records dropped)."""
    return [r for r in records if not is_failed(r)]


class UnknownSchema(VitbenchError):
    """A record written by another (newer) vitbench: never read as if it were ours, never overwritten."""


def record_dir(out_dir: Path, cell: Cell) -> Path:
    return (Path(out_dir) / safe_name(cell.suite, "suite name") / safe_name(cell.task.name, "task name")
            / safe_name(cell.method, "method name"))


def record_path(out_dir: Path, cell: Cell) -> Path:
    return record_dir(out_dir, cell) / f"{cell.key}.json"


def ensure_writable(out_dir: Path) -> Path:
    """Create `out_dir` if needed and prove we can write there; a one-line error otherwise."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise VitbenchError(f"output directory {str(out_dir)!r} is not writable ({reason}); pass --out DIR with a folder you can write")
    return out_dir


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over `path` (never half-written)."""
    _atomic_json(path, payload, indent=2, what="a result record")


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at `path`, or None when it is missing, unparsable or lacks a required field."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED_FIELDS):
        return None
    if rec["schema_version"] not in KNOWN_SCHEMAS:
        raise UnknownSchema(
            f"{path}: record schema_version {rec['schema_version']!r} is not one this vitbench reads "
            f"({', '.join(map(str, KNOWN_SCHEMAS))}); upgrade vitbench, or move the record out of the results folder"
        )
    return rec


def is_done(out_dir: Path, cell: Cell, data_fingerprint: str | None = None) -> bool:
    """A valid record with the cell's key exists (and, when `data_fingerprint` is given, was measured on that
    data). A record of an unknown schema raises `UnknownSchema` rather than being recomputed over."""
    rec = read_record(record_path(out_dir, cell))
    if rec is None or rec.get("key") != cell.key or is_failed(rec):
        return False
    return data_fingerprint is None or rec.get("data_fingerprint") == data_fingerprint


RESUME_INDEX = ".resume-index"  # per record folder: name -> [size, mtime_ns, data_fingerprint] of valid records


def done_keys(out_dir: Path, cells: list[Cell]) -> set[str]:
    """Keys of `cells` that have a valid record (as `is_done`), fast enough for 100,000 cells."""
    return set(done_records(out_dir, cells))


def done_records(out_dir: Path, cells: list[Cell]) -> dict[str, str | None]:
    """{key: the record's data_fingerprint} for the `cells` that have a valid record.

    One listing per record folder; a listed record is read and checked (parsable, required fields, matching
    key, a known schema: an unknown one raises `UnknownSchema`) unless the folder's resume index says a file of
    the same size and modification time (ns) was found valid before: any rewrite of a record changes its
    mtime, so it is read again. The index is only a cache (rebuilt when missing or unreadable, never
    required) and written atomically.
    """
    folders: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        folders.setdefault((c.suite, c.task.name, c.method), []).append(c)
    done: dict[str, str | None] = {}
    for cs in folders.values():
        folder = str(record_dir(out_dir, cs[0]))
        try:
            names = set(os.listdir(folder))
        except OSError:  # no folder yet: nothing of it is done
            continue
        index = _read_index(folder) if RESUME_INDEX in names else {}
        fresh: dict[str, list] = {}
        settled = time.time_ns() - 2_000_000_000  # younger files are not indexed: a same-tick rewrite keeps mtime
        for c in cs:
            name = f"{c.key}.json"
            if name not in names:
                continue
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            known = index.get(name)
            if isinstance(known, list) and len(known) == 3 and known[:2] == [st.st_size, st.st_mtime_ns]:
                done[c.key] = known[2]
                continue
            valid, fingerprint = _valid_record_file(path, c.key)
            if valid:
                done[c.key] = fingerprint
                if st.st_mtime_ns < settled:
                    fresh[name] = [st.st_size, st.st_mtime_ns, fingerprint]
        if fresh and any(index.get(k) != v for k, v in fresh.items()):
            _write_index(folder, {**index, **fresh})
    return done


def _read_index(folder: str) -> dict[str, list]:
    try:
        with open(os.path.join(folder, RESUME_INDEX), "rb") as f:
            index = json.loads(f.read())
        return index if isinstance(index, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_index(folder: str, index: dict[str, list]) -> None:
    try:
        _atomic_json(os.path.join(folder, RESUME_INDEX), index, indent=None, what="the resume index")
    except (OSError, VitbenchError):  # a read-only or full results folder: the next check reads the records again
        pass


def _valid_record_file(path: str, key: str) -> tuple[bool, str | None]:
    """(`read_record(path)` is a record of `key`, its data_fingerprint); plain os calls: once per cell of 100k."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        rec = json.loads(data)
    except (OSError, ValueError):
        return False, None
    if not (isinstance(rec, dict) and rec.get("key") == key and all(k in rec for k in REQUIRED_FIELDS)):
        return False, None
    if rec["schema_version"] not in KNOWN_SCHEMAS:
        read_record(Path(path))  # raises UnknownSchema: never recomputed over, never counted as ours
    if rec.get("status") == STATUS_FAILED:  # a failure record is never done: resume reruns the cell
        return False, None
    return True, rec.get("data_fingerprint")


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Versions and hardware that could change a number (recorded, not part of the key)."""
    import torch

    versions = {"vitbench": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for mod, dist in (("timm", "timm"), ("torchvision", "torchvision"), ("datasets", "datasets"), ("numpy", "numpy"),
                      ("sklearn", "scikit-learn")):
        try:  # the installed distribution's version: importing sklearn or datasets only to read it costs seconds
            versions[mod] = sys.modules[mod].__version__ if mod in sys.modules else importlib.metadata.version(dist)
        except Exception:  # noqa: BLE001 - an absent optional module is recorded as absent
            versions[mod] = None
    hardware = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return {"versions": versions, "git_commit": _git_commit(), "hardware": hardware}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def make_record(cell: Cell, result: CellResult, wall_time_s: float, device: str, data_fingerprint: str | None = None) -> dict[str, Any]:
    """The JSON record of one finished cell (schema: README.md "Result records")."""
    env = environment()
    return {
        "schema_version": SCHEMA_VERSION,
        "key": cell.key,
        "data_fingerprint": data_fingerprint,
        "suite": cell.suite,
        "task": cell.task.name,
        "group": cell.task.group,
        "model": cell.model,
        "weights_id": (result.provenance.get("weights") or {}).get("weights_id", cell.weights_id or cell.weights),
        "weights_sha256": (result.provenance.get("weights") or {}).get("weights_sha256"),
        "random_init": (result.provenance.get("weights") or {}).get("random_init"),
        "method": cell.method,
        "params": cell.params,
        "seed": cell.seed,
        "metrics": result.metrics,
        "details": result.details,
        "cell": cell.key_payload(),
        "provenance": result.provenance,
        "versions": env["versions"],
        "git_commit": env["git_commit"],
        "hardware": {**env["hardware"], "device": device, "threads": thread_settings()},
        "wall_time_s": round(wall_time_s, 3),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": STATUS_OK,
        **origin(),
    }


def origin() -> dict[str, Any]:
    """The command line that produced a record and the host that ran it (`vitbench.cli.main(argv)` called
    from Python sets VITBENCH_ARGV, which worker processes inherit)."""
    try:
        argv = json.loads(os.environ["VITBENCH_ARGV"])
    except (KeyError, ValueError):
        argv = list(sys.argv)
    return {
        "command": _command_line(argv),
        "argv": argv,
        "host": socket.gethostname(),
    }


def _command_line(argv: list[str]) -> str | None:
    """A shell line that reruns the command: `vitbench <args>` for the console script and `python -m vitbench.cli`
    alike, each argument quoted for the shell."""
    import shlex

    if not argv or not argv[0]:
        return None
    program = Path(argv[0]).name
    head = ["vitbench"] if program in ("vitbench", "cli.py", "__main__.py") else [program]
    return shlex.join(head + [str(a) for a in argv[1:]])


def make_failure_record(cell: Cell, exc: BaseException, device: str, *, wall_time_s: float = 0.0,
                        traceback_text: str = "") -> dict[str, Any]:
    """The record of a cell that raised: what went wrong, where, when. Never a result (`metrics` is empty)."""
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    where = {"cell": cell.label, "host": socket.gethostname(), "pid": os.getpid(), "device": device}
    return {
        "schema_version": SCHEMA_VERSION,
        "key": cell.key,
        "status": STATUS_FAILED,
        "error": {"message": error_line(exc), "type": type(exc).__name__, "where": where, "when": when,
                  "traceback": traceback_text[-4000:]},
        "suite": cell.suite,
        "task": cell.task.name,
        "group": cell.task.group,
        "model": cell.model,
        "method": cell.method,
        "params": cell.params,
        "seed": cell.seed,
        "metrics": {},
        "cell": cell.key_payload(),
        "versions": environment()["versions"],
        "git_commit": environment()["git_commit"],
        "wall_time_s": round(wall_time_s, 3),
        "timestamp": when,
        **origin(),
    }


def error_line(exc: BaseException) -> str:
    """One line naming the error: a VitbenchError's own line, else `Type: first line of the message`."""
    text = " ".join(str(exc).split()) if isinstance(exc, VitbenchError) else (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, VitbenchError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def write_record(out_dir: Path, cell: Cell, record: dict[str, Any]) -> Path:
    path = record_path(out_dir, cell)
    atomic_write_json(path, record)
    return path


def iter_record_files(results_dir: Path):
    for p in sorted(Path(results_dir).rglob("*.json")):
        if ".tmp-" not in p.name:
            yield p


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    """All valid records under `results_dir` (invalid or partial files are skipped), failure records included
    (`ok_records` drops them)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise VitbenchError(f"results folder {str(results_dir)!r} does not exist; run `vitbench run` first or pass the folder that holds the records")
    records, unknown = [], []
    was_enabled = gc.isenabled()
    gc.disable()  # parsing allocates millions of acyclic objects: collections would walk them again and again (2x slower)
    try:
        for p in iter_record_files(results_dir):
            try:
                rec = read_record(p)
            except UnknownSchema:
                unknown.append(p)
                continue
            if rec is not None:
                records.append(rec)
    finally:
        if was_enabled:
            gc.enable()
    if unknown:
        warnings.warn(f"skipped {len(unknown)} record(s) of an unknown schema_version (e.g. {unknown[0]}); "
                      "they were written by another vitbench version", stacklevel=2)
    return records


def load_many(results_dirs: list[Path]) -> list[dict[str, Any]]:
    """Records of several results folders (shards from several machines), each (suite, key) once: a result
    wins over a failure record, then the newest copy."""
    best: dict[tuple[Any, Any], dict[str, Any]] = {}
    for d in results_dirs:
        for rec in load_records(d):
            ident = (rec.get("suite"), rec.get("key"))
            old = best.get(ident)
            rank = (not is_failed(rec), str(rec.get("timestamp") or ""))
            if old is None or rank > (not is_failed(old), str(old.get("timestamp") or "")):
                best[ident] = rec
    return list(best.values())


def records_frame(records: list[dict[str, Any]]):
    """A tidy pandas DataFrame, one row per record, with the metrics flattened into columns."""
    import pandas as pd

    rows = []
    for rec in ok_records(records):
        row = {k: rec.get(k) for k in ("suite", "task", "group", "model", "weights_id", "random_init", "method", "seed", "key", "wall_time_s", "timestamp")}
        for k, v in (rec.get("params") or {}).items():  # scalar parameters as columns (shots, lr, k, ...)
            if k not in row and (v is None or isinstance(v, (str, int, float, bool))):
                row[k] = v
        for k, v in (rec.get("metrics") or {}).items():
            row[k] = v
        row["record"] = rec
        rows.append(row)
    return pd.DataFrame(rows)
