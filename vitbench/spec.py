"""Task and source specifications: what a suite file's `[[tasks]]` entries become.

`TaskSpec` and `SourceSpec` are plain frozen dataclasses shared by the suite loader (`vitbench.suites`), the
data layer (`vitbench.data`) and cells (`vitbench.cells`, whose record key hashes `TaskSpec.key_dict()`).
They import nothing from vitbench, so every layer can depend on them. Exercised by `vitbench validate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

# Prose that documents a task or a source but cannot change a number; it stays out of record keys, so
# editing a description or a caveat never orphans results already computed.
DOC_FIELDS = ("description",)
DOC_SOURCE_OPTIONS = ("caveat", "substitute_note")
# Protocol-1 cell keys hold these per-task method tables as fields of the task, even when empty; other
# methods' per-task tables join the task's key only when set (so adding a method changes no existing key).
KEYED_TASK_TABLES = ("fewshot", "finetune")


@dataclass(frozen=True)
class SourceSpec:
    """Where a task's images come from. `kind` picks the reader; `id` is a hub id, class name or path."""

    kind: str
    id: str = ""
    options: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task: its sources (tried in order), named splits, classes, label map, group, metric.

    `splits` maps split names to slice expressions over the source's own splits, e.g.
    ``{"train": "train[:800]+train[2754:2954]", "val": "train[2754:2954]", "test": "test"}``.
    Runners train on `train_split` and evaluate on `test_split`.
    """

    name: str
    num_classes: int
    sources: tuple[SourceSpec, ...]
    splits: dict[str, str] = field(hash=False)
    group: str = ""
    metric: str = "top1"
    label_transform: str = ""
    train_split: str = "train"
    test_split: str = "test"
    val_split: str = ""
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    # per-task method parameters, over the suite's: method name -> table (e.g. {"finetune": {"lr": 0.03}})
    method_tables: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    # run only when its data is present (absent data: its cells are skipped with a note, not failed); not in
    # the key, since it changes no number
    optional: bool = False

    def method_table(self, method: str) -> dict[str, Any]:
        return self.method_tables.get(method, {})

    def to_dict(self) -> dict[str, Any]:
        """The task as it enters the cell key, without its prose (`DOC_FIELDS`, `DOC_SOURCE_OPTIONS`);
        computed once (callers must not modify it)."""
        return self._key_dict

    def key_dict(self) -> dict[str, Any]:
        """Same as `to_dict()`: what a record key hashes."""
        return self._key_dict

    @cached_property
    def _key_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in DOC_FIELDS and k != "optional"}
        out["sources"] = [
            {**s, "options": {k: v for k, v in s["options"].items() if k not in DOC_SOURCE_OPTIONS}}
            for s in out["sources"]
        ]
        tables = out.pop("method_tables")
        out.update({m: tables.get(m, {}) for m in KEYED_TASK_TABLES})
        out.update({m: t for m, t in tables.items() if t and m not in out})
        return out
