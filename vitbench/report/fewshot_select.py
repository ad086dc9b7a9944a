"""Few-shot l2 chosen across tasks (`mean-rank`, `leave-self-out`) for reports, one definition at a time.

A few-shot record run with `l2_select` mean-rank or leave-self-out stores the accuracy for every l2 of its
grid (`details.acc_per_l2`); the l2 itself can only be chosen once the other tasks' records are known.
`choose_l2(records)` makes that choice inside each *selection group*: records that share everything but the
task and the seed (model, weights, shots, grid, precision, suite, vitbench version, ...), so records of other
definitions never influence each other. Rules:

- mean-rank: the l2 with the best mean rank over the group's tasks (seed-averaged accuracies);
- leave-self-out: per task, the best mean rank over the *other* tasks;
- a group with a single task would pick its l2 on that task's own test accuracy: the record's fixed l2 is
  shown instead, with a note saying so.

Exercised by `vitbench report` and the few-shot table `vitbench run` prints. Pure; the protocol math lives
in `vitbench.fewshot` (`select_l2_mean_rank`, `select_l2_leave_self_out`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from vitbench.report.records import definition_id, row_definition

CROSS_TASK = ("mean-rank", "leave-self-out")
SINGLE_TASK_NOTE = "{mode} over one task would choose l2 on its own test accuracy: the fixed l2 is shown"


def selection_group(rec: dict[str, Any]) -> str:
    """Id of everything that defines a few-shot record except its task and seed."""
    return definition_id(row_definition(rec))


def lookup_l2(per_l2: dict, l2: float) -> float | None:
    """The accuracy stored for `l2` in an `acc_per_l2` dict (keys are `repr` of floats)."""
    for k, v in per_l2.items():
        if abs(float(k) - float(l2)) <= 1e-9 * max(1.0, abs(float(l2))):
            return float(v)
    return None


def choose_l2(records: list[dict[str, Any]]) -> dict[tuple, tuple[float, float | None, str]]:
    """(suite, key) -> (chosen l2, metric value at that l2 as a fraction, note) for every few-shot record
    whose `l2_select` is mean-rank or leave-self-out. Other records are not in the result."""
    from vitbench import fewshot as fs

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        if rec.get("method") == "fewshot" and (rec.get("params") or {}).get("l2_select") in CROSS_TASK:
            groups[selection_group(rec)].append(rec)
    out: dict[tuple, tuple[float, float | None, str]] = {}
    for members in groups.values():
        params = members[0].get("params") or {}
        mode, prefer = params.get("l2_select"), float(params.get("l2", fs.DEFAULT_L2))
        by_task: dict[str, list[dict]] = defaultdict(list)
        for rec in members:
            per_l2 = (rec.get("details") or {}).get("acc_per_l2") or {}
            by_task[str(rec.get("task"))].append({float(k): float(v) for k, v in per_l2.items()})
        table = {task: _mean_per_l2(rows) for task, rows in by_task.items()}
        note = ""
        if len(table) < 2:
            chosen = {task: prefer for task in table}
            note = SINGLE_TASK_NOTE.format(mode=mode)
        elif mode == "mean-rank":
            best = fs.select_l2_mean_rank(table, prefer=prefer)
            chosen = {task: best for task in table}
        else:
            chosen = fs.select_l2_leave_self_out(table, prefer=prefer)
        for rec in members:
            l2 = chosen[str(rec.get("task"))]
            value = lookup_l2((rec.get("details") or {}).get("acc_per_l2") or {}, l2)
            out[(rec.get("suite"), rec.get("key"))] = (l2, value, note)
    return out


def _mean_per_l2(rows: list[dict[float, float]]) -> dict[float, float]:
    """Seed-averaged accuracy per l2, over the l2 values every seed has."""
    common = set(rows[0]).intersection(*rows[1:]) if rows else set()
    return {l2: sum(r[l2] for r in rows) / len(rows) for l2 in sorted(common)}
