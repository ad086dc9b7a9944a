"""Which records a report counts, and what defines each number: dedup, failed runs, definitions.

Owns `prepare(records)` (the one entry every table, plot and `vitbench compare` goes through): records with
`status == "failed"` are listed apart, never counted as results; records with the same (suite, key) count
once (a results folder copied twice under one parent must not double its seeds); a record whose `params`
is null or not a dict is skipped with a warning line. `definition(rec)` is everything that defines a number
except the seed; `differences(defs)` says in a few words how definitions that share a visible label differ.
Exercised by `vitbench report` and `vitbench compare`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from vitbench.hashing import canonical_json, json_sha256
from vitbench.methods.base import flatten  # noqa: F401 - also this module's public name (definitions flattened)

# Fields of a record that define its number besides `cell` (the key payload): a result from another suite or
# another vitbench release is its own definition, even when the cell payload is the same.
_EXTRA_DEFINING = ("suite",)


@dataclass
class Prepared:
    """Records a report counts (`results`), failed runs, and the warning lines to show."""

    results: list[dict[str, Any]]
    failed: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _timestamp(rec: dict[str, Any]) -> str:
    return str(rec.get("timestamp") or "")


def prepare(records: list[dict[str, Any]]) -> Prepared:
    """Split off failed runs, skip malformed records (one warning each kind), count each (suite, key) once."""
    out = Prepared(results=[])
    malformed = 0
    newest: dict[tuple, dict[str, Any]] = {}
    copies = 0
    for rec in records:
        if not isinstance(rec, dict):
            malformed += 1
            continue
        if rec.get("status") == "failed":
            out.failed.append(rec)
            continue
        if not isinstance(rec.get("params"), dict) or not isinstance(rec.get("metrics"), dict):
            malformed += 1
            continue
        ident = (rec.get("suite"), rec.get("key"))
        if ident in newest:
            copies += 1
            if _timestamp(rec) <= _timestamp(newest[ident]):
                continue  # the newest copy wins; identical copies are simply counted once
        newest[ident] = rec
    out.results = list(newest.values())
    if malformed:
        out.warnings.append(f"{malformed} record(s) without a params/metrics object were skipped (written by other "
                            "tools or damaged); rerun those cells to include them.")
    if copies:
        out.warnings.append(f"{copies} duplicate record(s) with the same suite and key (e.g. a results folder copied "
                            "twice) were counted once.")
    if out.failed:
        out.warnings.append(f"{len(out.failed)} failed cell(s) are listed under 'Failed cells' and not counted as results.")
    return out


def definition(rec: dict[str, Any]) -> dict[str, Any]:
    """Everything that defines the number except the seed: the cell payload, the suite, the vitbench version."""
    cell = {k: v for k, v in (rec.get("cell") or {}).items() if k != "seed"}
    extra = {k: rec.get(k) for k in _EXTRA_DEFINING}
    extra["vitbench"] = (rec.get("versions") or {}).get("vitbench")
    return {**cell, **extra}


# Parameters that name per-task choices (a task's own dev split); a table row spans tasks without them.
PER_TASK_PARAMS = ("select_train_split", "select_eval_split")


def row_definition(rec: dict[str, Any], defn: dict[str, Any] | None = None) -> dict[str, Any]:
    """The definition without the task: what one row of a tasks-as-columns table (VTAB, few-shot) shares.
    `defn`: `definition(rec)` when already built (not modified)."""
    row = {k: v for k, v in (definition(rec) if defn is None else defn).items() if k != "task"}
    row["params"] = {k: v for k, v in (rec.get("params") or {}).items() if k not in PER_TASK_PARAMS}
    row["model"], row["weights_id"] = rec.get("model"), rec.get("weights_id")
    return row


def line_definition(rec: dict[str, Any], row: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row definition without the shot count: one line of a curve over shots (few-shot). `row`:
    `row_definition(rec)` when already built (not modified)."""
    line = dict(row_definition(rec) if row is None else row)
    line["params"] = {k: v for k, v in line["params"].items() if k != "shots"}
    return line


class RecordIds:
    """(definition id, row id, line id) of records: each definition's canonical JSON text is made once per
    record (by the C encoder, cheaper than any Python-level key), the row and line ids once per distinct
    definition when they follow from it alone (the record's params, model and weights are the cell's, as
    `vitbench.results.make_record` writes them)."""

    def __init__(self):
        self.memo: dict[str, tuple[str, str, str]] = {}

    def __call__(self, rec: dict[str, Any]) -> tuple[str, str, str]:
        defn = definition(rec)
        text = canonical_json(defn)
        follows = (rec.get("params") == defn.get("params") and rec.get("model") == defn.get("model")
                   and rec.get("weights_id") == defn.get("weights_id"))
        if follows and text in self.memo:
            return self.memo[text]
        row = row_definition(rec, defn)
        ids = (_hash(text), definition_id(row), definition_id(line_definition(rec, row)))
        if follows:
            self.memo[text] = ids
        return ids


def _hash(text: str) -> str:
    """`definition_id` from an already made canonical JSON text (`vitbench.hashing.json_sha256`, 8 digits)."""
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def definition_id(defn: dict[str, Any]) -> str:
    """Short hash of a definition: records that differ only by seed share it."""
    return json_sha256(defn, 8)


def differences(defs: dict[str, dict[str, Any]], limit: int = 4) -> dict[str, str]:
    """For definitions (id -> definition) sharing a visible label: id -> 'field=value; ...' of the fields
    where they differ (at most `limit`, then '+N more'). One definition -> {id: ''}."""
    if len(defs) <= 1:
        return {k: "" for k in defs}
    flat = {k: flatten(v) for k, v in defs.items()}
    fields = sorted({f for d in flat.values() for f in d})
    varying = [f for f in fields if len({repr(d.get(f)) for d in flat.values()}) > 1]
    out = {}
    for k, d in flat.items():
        shown = [f"{f}={_short(d.get(f))}" for f in varying[:limit]]
        if len(varying) > limit:
            shown.append(f"+{len(varying) - limit} more")
        out[k] = "; ".join(shown)
    return out


def _short(value: Any) -> str:
    text = "absent" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
