"""`include` in suite files: read a suite TOML together with the suites it includes, as one document.

```toml
include = ["vtab"]             # suite names or .toml paths (relative to this file), merged in order

[finetune]                     # tables merge key-wise: this file's keys win
steps = 500

[[tasks]]                      # a new name adds a task
name = "mine"
...

[[tasks]]                      # an included task's name with `override = true` updates that task:
name = "dtd"                   # plain fields replace; the tables (`splits`, `options`, a method's table such
override = true                # as `finetune`) merge key-wise; `source`/`sources` replace the source list
finetune = { steps = 1000 }
```

Rules: an included name is looked up first beside the including file, then where `--suite` looks
(`./suites`, then the shipped suites), so a shipped suite always includes its shipped siblings. `name` and
`description` are never inherited. Tasks keep their order: included ones first (in include order), then this
file's new ones. Redefining an included task without `override = true`, two included suites defining the same
task, an `override` of a task nobody defined, and include cycles are refused with one line. Exercised by
`vitbench validate SUITE` and every command that loads a suite.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from vitbench import env
from vitbench.errors import VitbenchError, unknown_name

NOT_INHERITED = ("name", "description", "include")
REPLACED_TABLES = ("source",)  # a task's one-source table is replaced, never merged, by an override


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise VitbenchError(f"{path}: not valid TOML ({exc}); fix the syntax and rerun `vitbench validate {path}`")
    except (OSError, UnicodeDecodeError) as exc:
        raise VitbenchError(f"{path}: cannot read suite file ({exc})")


def resolve_include(ref: Any, including: Path) -> Path:
    """The file an `include` entry names: a path relative to the including file, or a suite name."""
    if not isinstance(ref, str) or not ref.strip():
        raise VitbenchError(f"{including}: field 'include' must list suite names or .toml paths, got {ref!r}")
    if ref.endswith(".toml") or "/" in ref:
        p = Path(ref).expanduser()
        p = p if p.is_absolute() else including.parent / p
        if not p.is_file():
            raise VitbenchError(f"{including}: field 'include': suite file {str(p)!r} does not exist")
        return p
    beside = including.parent / f"{ref}.toml"
    if beside.is_file():
        return beside
    found = env.available_suites()
    if ref not in found:
        raise VitbenchError(f"{including}: field 'include': {unknown_name('suite', ref, found)}")
    return found[ref]


def read_suite(path: Path, _stack: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """(the merged TOML document, the file each of its tasks comes from) for the suite file `path`."""
    here = path.resolve()
    if here in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, here))
        raise VitbenchError(f"suite include cycle: {chain}; remove one of these includes")
    raw = read_toml(path)
    includes = raw.get("include", [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list):
        raise VitbenchError(f"{path}: field 'include' must be a list of suite names or .toml paths, got {includes!r}")
    merged: dict[str, Any] = {}
    tasks: list[dict[str, Any]] = []
    origins: list[str] = []
    for ref in includes:
        doc, doc_origins = read_suite(resolve_include(ref, path), (*_stack, here))
        _merge_tables(merged, doc, path)
        for task, origin in zip(doc.get("tasks", []), doc_origins):
            clash = _index(tasks, task.get("name"))
            if clash is not None:
                raise VitbenchError(f"{path}: task {task.get('name')!r} comes from two included suites "
                                    f"({origins[clash]} and {origin}); include one of them")
            tasks.append(task)
            origins.append(origin)
    _merge_tables(merged, raw, path)
    own = raw.get("tasks", [])
    for i, task in enumerate(own if isinstance(own, list) else []):
        _add_own_task(tasks, origins, task, str(path), i, bool(includes))
    out = {k: v for k, v in merged.items() if k not in NOT_INHERITED}
    out.update({k: raw[k] for k in ("name", "description") if k in raw})
    if includes:
        out["include"] = includes
    if tasks or "tasks" in raw:
        out["tasks"] = tasks if isinstance(own, list) else own  # a malformed `tasks` is reported by the parser
    return out, origins


def _index(tasks: list[dict[str, Any]], name: Any) -> int | None:
    for i, t in enumerate(tasks):
        if isinstance(t, dict) and t.get("name") == name:
            return i
    return None


def _merge_tables(merged: dict[str, Any], doc: dict[str, Any], path: Path) -> None:
    for key, value in doc.items():
        if key in NOT_INHERITED or key == "tasks":
            continue
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value


def _add_own_task(tasks: list, origins: list, task: Any, where: str, i: int, has_includes: bool) -> None:
    if not isinstance(task, dict):
        tasks.append(task)  # the parser reports it, with its position
        origins.append(where)
        return
    name = task.get("name")
    at = _index(tasks, name)
    override = task.get("override", False)
    if not isinstance(override, bool):
        raise VitbenchError(f"{where}: task {name!r}: field 'override' must be true/false, got {override!r}")
    if at is None:
        if override:
            raise VitbenchError(f"{where}: task {name!r} has override = true but no included suite defines it"
                                + ("" if has_includes else " (this file has no 'include')"))
        tasks.append({k: v for k, v in task.items() if k != "override"})
        origins.append(where)
        return
    if origins[at] == where:
        tasks.append(task)  # a name repeated inside one file: the parser reports it
        origins.append(where)
        return
    if not override:
        raise VitbenchError(f"{where}: task {name!r} is already defined by {origins[at]}; add override = true "
                            "to change its fields, or rename it")
    tasks[at] = _override(tasks[at], task)
    origins[at] = f"{where} (overriding {origins[at]})"


def _override(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    if "source" in new or "sources" in new:
        out.pop("source", None)
        out.pop("sources", None)
    for key, value in new.items():
        if key == "override":
            continue
        if key not in REPLACED_TABLES and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
