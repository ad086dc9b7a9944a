"""Planner: expand a suite into cells, order them after the cells they depend on, skip finished ones (resume), run.

Parameters resolve through each method (`vitbench/methods/`): the method's defaults, then the suite file's
`[<method>]` table, then the task's own table, then command-line overrides. Exercised by `vitbench run`,
`vitbench fewshot` and `vitbench finetune` (`--dry-run` prints the plan, `--shard i/n` runs a slice of it,
so several machines or GPUs can share one results folder; a cell and the cells it depends on, such as
dev-split selection runs, always share a shard).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench import env, results
from vitbench.cells import Cell, CellResult, RunContext
from vitbench.errors import VitbenchError
from vitbench.methods import get_method
from vitbench.methods.base import MethodParams
from vitbench.suites import Suite, TaskSpec

POS_INTERP = ("bilinear", "bicubic")  # bilinear align-corners = Google's resize; bicubic = timm / torchvision


@dataclass
class Plan:
    cells: list[Cell]
    done: list[Cell] = field(default_factory=list)
    todo: list[Cell] = field(default_factory=list)


def method_params(suite: Suite, method: str, overrides: Mapping[str, Any] | None = None, task: TaskSpec | None = None) -> MethodParams:
    """Resolved, validated parameters of `method` (defaults < suite table < the task's own table < overrides)."""
    return get_method(method).resolve(suite, task, overrides)


def resolve_methods(suite: Suite, text: str | None) -> list[str]:
    """`all` (or nothing) -> the suite's methods (`defaults.methods`); else a comma list of registered names."""
    if not text or text.strip() == "all":
        return suite.methods
    names = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    for name in names:
        get_method(name)
    if not names:
        raise VitbenchError(f"--method needs a method name, a comma list of them, or 'all'; got {text!r}")
    return names


def route_overrides(methods: list[str], options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Command-line parameter options -> per-method overrides, each method getting the fields it has.

    An option that none of `methods` takes is an error (e.g. `--shots` with `--method knn`).
    """
    given = {k: v for k, v in options.items() if v is not None}
    out: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for name in methods:
        fields = set(get_method(name).Params.field_names())
        out[name] = {k: v for k, v in given.items() if k in fields}
        taken |= set(out[name])
    unused = [k for k in given if k not in taken]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise VitbenchError(f"{flags}: not a parameter of the selected method(s) {', '.join(methods)}; "
                            "see `vitbench ls methods` for which method takes which parameter")
    return out


def resolve_weights_id(model: str, weights: str) -> str:
    from vitbench.models.weights import resolve_weights_id as _resolve

    return _resolve(model, weights)


def expand(
    suite: Suite,
    models: Iterable[str],
    methods: Iterable[str],
    *,
    weights: str = "default",
    tasks: list[str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    pos_interp: str = "bilinear",
) -> list[Cell]:
    """Cells for task x model x method x params x seed, in a stable order."""
    overrides = overrides or {}
    if pos_interp not in POS_INTERP:
        raise VitbenchError(f"position-embedding interpolation must be one of {list(POS_INTERP)}, got {pos_interp!r}")
    chosen = [get_method(m) for m in methods]
    selected = suite.select(tasks)
    cells: list[Cell] = []
    from vitbench.models.registry import check_img_size
    for model in models:
        weights_id = resolve_weights_id(model, weights)
        for method in chosen:
            for task in selected:
                params = method.resolve(suite, task, overrides.get(method.name))
                img_size = getattr(params, "img_size", None)
                check_img_size(model, img_size)  # refused before anything runs
                for variant in method.expand(params):
                    for seed in method.seeds(params):
                        cells.append(Cell(
                            suite=suite.name, task=task, model=model, weights=weights, method=method.name,
                            params=variant, seed=seed, img_size=img_size, weights_id=weights_id, pos_interp=pos_interp,
                            micro_batch=getattr(params, "micro_batch", None),  # execution detail, outside the key
                        ))
    return cells


def dependencies(cell: Cell) -> list[Cell]:
    """The cells whose records `cell` needs (its method's `dependencies`)."""
    return get_method(cell.method).dependencies(cell)


def ordered(cells: list[Cell]) -> tuple[list[Cell], dict[str, str]]:
    """(`cells` plus any missing dependencies, each after what it depends on; key -> group key).

    A group is a set of cells linked by dependencies, keyed by the cell that depends on the others (e.g. a
    final fine-tuning cell); a cell without dependencies is its own group (and shards as it always did).
    """
    parent: dict[str, str] = {}

    def root(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    out: list[Cell] = []
    seen: set[str] = set()

    def visit(cell: Cell, path: tuple[str, ...]) -> None:
        if cell.key in path:
            raise VitbenchError(f"{cell.label}: its method declares a dependency cycle")
        if cell.key in seen:
            return
        deps = dependencies(cell)
        for dep in deps:
            visit(dep, path + (cell.key,))
            a, b = root(cell.key), root(dep.key)
            if a != b:
                parent[b] = a  # the group is keyed by the cell that depends (e.g. the final fine-tuning cell)
        seen.add(cell.key)
        out.append(cell)

    for cell in cells:
        visit(cell, ())
    return out, {c.key: root(c.key) for c in out}


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`'i/n'` (1-based) -> (i, n); None passes through."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VitbenchError(f"--shard must look like i/n (e.g. 2/4), got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise VitbenchError(f"--shard {text!r}: need 1 <= i <= n")
    return i, n


def plan(cells: list[Cell], out_dir: Path, *, force: bool = False, shard: tuple[int, int] | None = None,
         data_fingerprint: Callable[[Cell], str | None] | None = None) -> Plan:
    """Order `cells` after their dependencies and split them into done and todo.

    `shard` = (i, n) keeps every n-th group of cells by group key: a cell and its dependencies stay together.
    Done = a valid record with the cell's key exists; with `data_fingerprint` (a cell -> its data's current
    fingerprint, `vitbench.data.fingerprint.cell_data_fingerprint`, or None when the data cannot be opened),
    only if the record was measured on that data too. Without it (`--dry-run`) no data is opened.
    """
    cells, group = ordered(cells)
    if shard:
        i, n = shard
        cells = [c for c in cells if int(group[c.key], 16) % n == i - 1]
    p = Plan(cells=cells)
    done = {} if force else results.done_records(out_dir, cells)
    for c in cells:
        ok = c.key in done
        if ok and data_fingerprint is not None:
            current = data_fingerprint(c)
            ok = current is None or done[c.key] == current  # None (data absent here): the record stands
        (p.done if ok else p.todo).append(c)
    return p


Runner = Callable[[Cell, RunContext, list], CellResult]


def runner_for(method: str) -> Runner:
    """`run_cell(cell, ctx, deps)` of the registered method `method`."""
    return get_method(method).run_cell


def execute(
    todo: list[Cell],
    out_dir: Path,
    ctx: RunContext,
    *,
    on_start: Callable[[Cell, int, int], None] | None = None,
    on_done: Callable[[Cell, dict[str, Any], Path], None] | None = None,
) -> list[tuple[Cell, dict[str, Any], Path]]:
    """Run each cell and write its record as soon as it finishes (so an interruption loses one cell at most).

    `todo` is in plan order, so the records a cell depends on are on disk before it runs.
    """
    from vitbench.threads import configure_threads

    configure_threads(ctx.num_threads)  # None: threads.default_threads() (recorded in each record's hardware.threads)
    with env.cache_dir_scope(ctx.cache_dir):  # --cache-dir also reaches code not handed ctx (HF datasets cache)
        return _execute(todo, out_dir, ctx, on_start, on_done)


def _execute(todo, out_dir, ctx, on_start, on_done) -> list[tuple[Cell, dict[str, Any], Path]]:
    written = []
    for i, cell in enumerate(todo):
        if on_start:
            on_start(cell, i, len(todo))
        deps = []
        for dep in dependencies(cell):
            rec = results.read_record(results.record_path(out_dir, dep))
            if rec is None or rec.get("key") != dep.key:
                raise VitbenchError(
                    f"{cell.label}: the record of {dep.label} it depends on is missing in {out_dir}; "
                    "it belongs to the same plan and shard, so rerun the same command"
                )
            deps.append(rec)
        t0 = time.perf_counter()
        from vitbench.runners.checkpoint import discard_if_recorded, remove_checkpoint

        prefix = results.record_path(out_dir, cell).with_suffix("")  # checkpoint and step log beside the record
        discard_if_recorded(prefix, results.record_path(out_dir, cell), cell.key)
        result = runner_for(cell.method)(cell, dataclasses.replace(ctx, cell_files=prefix), deps)
        from vitbench.data.fingerprint import cell_data_fingerprint

        record = results.make_record(cell, result, time.perf_counter() - t0, ctx.device,
                                     data_fingerprint=cell_data_fingerprint(cell, ctx.data_root))
        path = results.write_record(out_dir, cell, record)
        if not ctx.checkpoint.keep:
            remove_checkpoint(prefix)
        written.append((cell, record, path))
        if on_done:
            on_done(cell, record, path)
    return written
