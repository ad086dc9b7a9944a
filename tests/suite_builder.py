"""Suites for tests, built from dicts: `write_suite(path, doc)` writes a TOML suite file; `smoke_doc(...)` is
the shipped smoke suite as a dict with fields replaced, so tests state what they change by field name."""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from vitbench.env import BUNDLED_SUITES


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"TOML has no {v!r} here")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: dict[str, Any]) -> str:
    """TOML text for a suite document: scalars first, then [tables], then [[tasks]] (nested values inline)."""
    lines = [f"{k} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict) and k != "tasks"]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_value(vv)}" for kk, vv in v.items()]
    for task in doc.get("tasks", []):
        lines += ["", "[[tasks]]"] + [f"{k} = {_value(v)}" for k, v in task.items()]
    return "\n".join(lines) + "\n"


def write_suite(path: Path, doc: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(to_toml(doc), encoding="utf-8")
    assert tomllib.loads(path.read_text()) == json.loads(json.dumps(doc)), "suite dict did not round-trip"
    return path


def shipped_doc(name: str) -> dict[str, Any]:
    return tomllib.loads((BUNDLED_SUITES / f"{name}.toml").read_text(encoding="utf-8"))


def smoke_doc(name: str = "fast_smoke", *, task: dict[str, Any] | None = None, **tables: dict[str, Any]) -> dict[str, Any]:
    """The shipped smoke suite, renamed, with table fields (`fewshot={...}`, `finetune={...}`, `defaults=...`)
    and the digits task's fields (`task={...}`) updated."""
    doc = copy.deepcopy(shipped_doc("smoke"))
    doc["name"] = name
    for table, fields in tables.items():
        doc.setdefault(table, {}).update(fields)
    doc["tasks"][0].update(task or {})
    return doc


# The smoke suite cut down for end-to-end tests: 2 few-shot cells and one 40-step fine-tune.
FAST = {"defaults": {"methods": ["fewshot", "finetune"]}, "fewshot": {"shots": [1, 5], "seeds": [0]},
        "finetune": {"steps": 40, "warmup_steps": 4}}
DEV_SPLITS = {"train": "all[:1200]", "minitrain": "all[:1000]", "val": "all[1000:1200]", "test": "all[1200:]"}


def fast_smoke_doc(name: str = "fast_smoke", **changes: Any) -> dict[str, Any]:
    tables = {k: dict(v) for k, v in FAST.items()}
    task = changes.pop("task", None)
    for table, fields in changes.items():
        tables.setdefault(table, {}).update(fields)
    return smoke_doc(name, task=task, **tables)


def fewshot_digits_suite(name: str, *, train: str = "all[:200]", test: str = "all[200:400]", **fewshot: Any) -> str:
    """TOML text of a one-task few-shot suite on the bundled digits with a random-init ViT-Ti/16 at 32 px (seed 0;
    `fewshot` fields such as `shots` added), for tests of planning, workers, locks and executors. Further
    `[[tasks]]` text may be appended."""
    return to_toml({
        "name": name,
        "defaults": {"model": "vit_ti16", "weights": "none", "img_size": 32, "methods": ["fewshot"]},
        "fewshot": {"seeds": [0], **fewshot},
        "tasks": [{"name": "digits", "num_classes": 10, "source": {"kind": "digits"}, "splits": {"train": train, "test": test}}],
    })
