"""User-facing errors.

Anything a user can cause (bad suite file, unknown name, missing data, unwritable folder) is raised as
`VitbenchError` with a one-line message that says what is wrong and what to do. The CLI (`vitbench ...`)
prints that line and exits with code 2, with no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VitbenchError(Exception):
    """A user-facing error; `str(exc)` is one line: what is wrong, and what to do about it."""

    exit_code = 2


class DataMissing(VitbenchError):
    """A task's data is not present (no prepared copy, no reachable source). A task a suite marks
    `optional = true` is skipped with a note on this error instead of failing (see `vitbench/worker.py`)."""


class CellFailed(VitbenchError):
    """A cell ran but produced no trustworthy number (e.g. training diverged); its failure record says why."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The `n` names in `choices` closest to `name` (difflib ratio), best first."""
    choices = list(choices)
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not hits:
        hits = [c for c in choices if name.lower() in c.lower()][:n]
    return hits


def unknown_name(kind: str, name: str, choices: Iterable[str], where: str = "") -> VitbenchError:
    """A `VitbenchError` for an unknown `kind` called `name` (optionally `where`, e.g. "in suite 'vtab'"),
    suggesting the closest valid names."""
    choices = sorted(set(choices))
    near = closest(name, choices)
    hint = f" Did you mean {', '.join(repr(c) for c in near)}?" if near else ""
    shown = ", ".join(choices[:40]) + (" ..." if len(choices) > 40 else "")
    place = f" {where}" if where else ""
    return VitbenchError(f"unknown {kind} {name!r}{place}.{hint} Valid: {shown}")
