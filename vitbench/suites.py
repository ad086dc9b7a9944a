"""Suite files: load and validate suite TOML files (with their `include`s) into typed dataclasses.

A suite is a list of tasks plus defaults for the methods that run on them. Exercised by
`vitbench validate SUITE`, `vitbench ls suites|tasks` and every `vitbench run`. The format is documented
in README.md ("Suite files"); every error names the file, the task and the field. Suites are found by name
in `./suites`, then among the shipped ones (`vitbench/suite_files/`, see `vitbench.env`); `include` is
resolved by `vitbench.suite_include`. The suite layer also decides what a run uses when the command line
does not say (`Suite.run_models`, `run_methods`, `run_weights`, `run_pos_interp`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitbench.data.labels import LABEL_TRANSFORMS
from vitbench.data.splits import parse_split
from vitbench.env import BUNDLED_SUITES, available_suites, suite_dirs  # noqa: F401  (re-exported)
from vitbench.errors import VitbenchError, unknown_name
from vitbench.spec import KEYED_TASK_TABLES, SourceSpec, TaskSpec  # noqa: F401  (re-exported)
from vitbench.suite_include import read_suite

SUITES_DIR = BUNDLED_SUITES
DEFAULT_MODEL = "vit_b16"  # when neither --model nor the suite's defaults.model says
METRICS = ("top1", "real")
SOURCE_KINDS = (
    "digits", "hf", "wds", "vtab1k_folder", "torchvision", "imagefolder", "parquet", "disk", "prepared",
)


@dataclass(frozen=True)
class Suite:
    """A named list of tasks with `defaults` and one parameter table per method (`[fewshot]`, `[knn]`, ...)."""

    name: str
    path: str
    tasks: tuple[TaskSpec, ...]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict, hash=False)
    method_tables: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    def method_table(self, method: str) -> dict[str, Any]:
        return self.method_tables.get(method, {})

    @property
    def methods(self) -> list[str]:
        """The methods `--method all` runs: `defaults.methods`, else every registered method."""
        from vitbench.methods import method_names

        return list(self.defaults.get("methods") or method_names())

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise unknown_name("task", name, [t.name for t in self.tasks], where=f"in suite {self.name!r}")

    def select(self, names: list[str] | None) -> tuple[TaskSpec, ...]:
        """The tasks named in `names` (all when None or empty), in suite order; unknown names raise."""
        if not names:
            return self.tasks
        wanted = [self.task(n).name for n in names]
        return tuple(t for t in self.tasks if t.name in wanted)

    # What a run uses when the command line leaves it open: the suite's [defaults], then vitbench's.
    def run_models(self, requested: list[str] | None) -> list[str]:
        return list(requested) if requested else [str(self.defaults.get("model", DEFAULT_MODEL))]

    def run_weights(self, requested: str | None) -> str:
        return requested or str(self.defaults.get("weights", "default"))

    def run_pos_interp(self, requested: str | None) -> str:
        return requested or str(self.defaults.get("pos_interp", "bilinear"))



def resolve_suite_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or "/" in name_or_path:
        if not p.is_file():
            raise VitbenchError(f"suite file {name_or_path!r} does not exist; pass a suite name or a path to a .toml file")
        return p
    suites = available_suites()
    if name_or_path not in suites:
        raise unknown_name("suite", name_or_path, suites)
    return suites[name_or_path]


def load_suite(name_or_path: str) -> Suite:
    """Load and validate a suite by name (`smoke`, `vtab`, ...) or by path to a `.toml` file."""
    path = resolve_suite_path(name_or_path)
    raw, origins = read_suite(path)
    return parse_suite(raw, str(path), default_name=path.stem, origins=origins)


def _fail(where: str, msg: str) -> VitbenchError:
    return VitbenchError(f"{where}: {msg}")


def _typed(raw: dict, key: str, kind: type | tuple[type, ...], where: str, default: Any = None, required: bool = False):
    if key not in raw:
        if required:
            raise _fail(where, f"missing required field '{key}'")
        return default
    value = raw[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise _fail(where, f"field '{key}' must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise _fail(where, f"field '{key}' must be {_kind_name(kind)}, got {type(value).__name__} {value!r}")
    return value


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "a table", list: "a list", bool: "true/false"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _parse_source(raw: Any, where: str) -> SourceSpec:
    if not isinstance(raw, dict):
        raise _fail(where, "a source must be a table with at least 'kind'")
    kind = _typed(raw, "kind", str, where, required=True)
    if kind not in SOURCE_KINDS:
        near = unknown_name("source kind", kind, SOURCE_KINDS)
        raise _fail(where, f"field 'kind': {near}")
    sid = _typed(raw, "id", str, where, default="")
    options = {k: v for k, v in raw.items() if k not in ("kind", "id")}
    if options.get("order", "native") not in ("native", "hashed"):  # row order slices are taken in (docs/slices.md)
        raise _fail(where, f"field 'order' must be 'native' or 'hashed', got {options['order']!r}")
    return SourceSpec(kind=kind, id=sid, options=options)


TASK_FIELDS = {
    "name", "num_classes", "source", "sources", "splits", "group", "metric", "label_transform",
    "train_split", "test_split", "val_split", "description", "options", "optional",
}  # plus one optional table per registered method


def _method_names() -> list[str]:
    from vitbench.methods import method_names

    return method_names()


def _parse_task(raw: Any, where_file: str, index: int) -> TaskSpec:
    if not isinstance(raw, dict):
        raise _fail(f"{where_file}: tasks[{index}]", "each [[tasks]] entry must be a table")
    name = raw.get("name")
    where = f"{where_file}: task {name!r}" if isinstance(name, str) else f"{where_file}: tasks[{index}]"
    name = _typed(raw, "name", str, where, required=True)
    _path_safe(name, f"{where_file}: task name")
    methods = _method_names()
    unknown = sorted(set(raw) - TASK_FIELDS - set(methods))
    if unknown:
        raise _fail(where, f"unknown field(s) {unknown}; valid fields are {sorted(TASK_FIELDS | set(methods))}")
    num_classes = _typed(raw, "num_classes", int, where, required=True)
    if num_classes < 2:
        raise _fail(where, f"field 'num_classes' must be >= 2, got {num_classes}")
    if "source" in raw and "sources" in raw:
        raise _fail(where, "give either 'source' (one table) or 'sources' (a list of tables), not both")
    if "source" in raw:
        sources = (_parse_source(raw["source"], f"{where} field 'source'"),)
    elif "sources" in raw:
        if not isinstance(raw["sources"], list) or not raw["sources"]:
            raise _fail(where, "field 'sources' must be a non-empty list of tables")
        sources = tuple(_parse_source(s, f"{where} field 'sources[{i}]'") for i, s in enumerate(raw["sources"]))
    else:
        raise _fail(where, "missing required field 'source' (a table with 'kind', e.g. kind = \"hf\")")
    splits = _typed(raw, "splits", dict, where, required=True)
    for sname, expr in splits.items():
        if not isinstance(expr, str) or not expr.strip():
            raise _fail(where, f"field 'splits.{sname}' must be a non-empty slice expression like 'train[:800]'")
        _check_split_syntax(expr, f"{where} field 'splits.{sname}'")
    train_split = _typed(raw, "train_split", str, where, default="train")
    test_split = _typed(raw, "test_split", str, where, default="test")
    val_split = _typed(raw, "val_split", str, where, default="val" if "val" in splits else "")
    for role, sname in (("train_split", train_split), ("test_split", test_split), ("val_split", val_split)):
        if sname and sname not in splits:
            raise _fail(where, f"field '{role}' names split {sname!r}, which is not in 'splits' ({sorted(splits)})")
    metric = _typed(raw, "metric", str, where, default="top1")
    if metric not in METRICS:
        raise _fail(where, f"field 'metric' must be one of {list(METRICS)}, got {metric!r}")
    label_transform = _typed(raw, "label_transform", str, where, default="")
    if label_transform:
        _check_label_transform(label_transform, f"{where} field 'label_transform'")
    return TaskSpec(
        name=name,
        num_classes=num_classes,
        sources=sources,
        splits=dict(splits),
        group=_typed(raw, "group", str, where, default=""),
        metric=metric,
        label_transform=label_transform,
        train_split=train_split,
        test_split=test_split,
        val_split=val_split,
        description=_typed(raw, "description", str, where, default=""),
        options=dict(_typed(raw, "options", dict, where, default={})),
        method_tables={m: dict(raw[m]) for m in methods if _typed(raw, m, dict, where) is not None},
        optional=_typed(raw, "optional", bool, where, default=False),
    )


def _check_split_syntax(expr: str, where: str) -> None:
    try:
        parse_split(expr)
    except VitbenchError as exc:
        raise _fail(where, str(exc)) from None


def _check_label_transform(name: str, where: str) -> None:
    if name not in LABEL_TRANSFORMS:
        raise _fail(where, str(unknown_name("label transform", name, LABEL_TRANSFORMS)))


def _path_safe(name: str, what: str) -> None:
    """Suite and task names become folder names (results, reports, prepared data): refuse unsafe ones early."""
    from vitbench.fsutil import safe_name

    safe_name(name, what)


def parse_suite(raw: dict[str, Any], path: str, default_name: str = "suite", origins: list[str] | None = None) -> Suite:
    """Validate a parsed TOML document into a `Suite`; errors name the file (for an included task, the file
    that defines it: `origins[i]`), the task and the field."""
    methods = _method_names()
    known = {"name", "description", "include", "defaults", "tasks", *methods}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _fail(path, f"unknown top-level field(s) {unknown}; valid: {sorted(known)}")
    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise _fail(path, "a suite needs at least one [[tasks]] table")
    origins = origins or [path] * len(tasks_raw)
    tasks = tuple(_parse_task(t, origins[i], i) for i, t in enumerate(tasks_raw))
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(path, f"task names must be unique; repeated: {dupes}")
    defaults = dict(_typed(raw, "defaults", dict, path, default={}))
    tables = {m: dict(raw[m]) for m in methods if _typed(raw, m, dict, path) is not None}
    chosen = defaults.get("methods", methods)
    if not isinstance(chosen, list) or not chosen or any(m not in methods for m in chosen):
        raise _fail(path, f"field 'defaults.methods' must be a list drawn from {methods}, got {chosen!r}")
    suite_name = _typed(raw, "name", str, path, default=default_name)
    _path_safe(suite_name, f"{path}: suite name")
    return Suite(
        name=suite_name,
        path=path,
        tasks=tasks,
        description=_typed(raw, "description", str, path, default=""),
        defaults=defaults,
        method_tables=tables,
    )
