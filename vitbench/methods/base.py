"""The method interface and registry: what a benchmark method (few-shot, fine-tuning, kNN, ...) provides.

A method is one module in `vitbench/methods/` defining a `Method` subclass and calling `register(...)`; the
package imports every module in the folder, so adding a method touches no other file. A method owns, in
one place: its typed parameters (`Params`, a frozen dataclass with defaults and validation), how they
expand into cells (`expand`), which cells a cell depends on (`dependencies`, e.g. dev-split selection
runs), how one cell runs (`run_cell`), and how its records read as numbers and tables (`setting`,
`values`, `summary_table`). Exercised by every `vitbench run` and listed by `vitbench ls methods`.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from vitbench.errors import VitbenchError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from vitbench.cells import Cell, CellResult, RunContext
    from vitbench.suites import Suite, TaskSpec

EXECUTION = {"key": False}  # field metadata: an execution detail, kept out of the cell key (never changes a number)


def as_list(value: Any) -> list:
    """A list of the values, duplicates dropped (first occurrence kept): `--shots 1,1` is one cell."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return list(dict.fromkeys(values))


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class MethodParams:
    """Base of every method's parameters. Subclasses add fields with defaults and extend `check`."""

    def check(self, where: str) -> None:
        """Raise a one-line `VitbenchError` naming `where` (file / task or 'command-line options') and the field."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def key_params(self) -> dict[str, Any]:
        """The parameters that change the number (every field not marked `EXECUTION`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("key", True)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class FeatureParams(MethodParams):
    """Parameters of methods on cached frozen features (few-shot, kNN, linear probe): the eval preprocessing.

    Shared defaults, so these methods share one feature cache: big_vision's few-shot preprocessing (resize
    both sides to 256, bilinear, aspect not kept, central crop 224; at other sizes the same ratio).
    """

    img_size: int | None = dataclasses.field(default=None, metadata=EXECUTION)  # the model's native size when None
    resize: str = "squash_crop"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    resize_impl: str = "tf"  # big_vision's resize op: TF bilinear without antialiasing, truncated; "pil" = PIL's

    def check(self, where: str) -> None:
        check_img_size(self.img_size, where)
        check_preprocessing(self.resize, self.interpolation, self.crop_pct, where)
        check_resize_impl(self.resize_impl, self.interpolation, where)


def check_seeds(seeds: Any, where: str) -> None:
    values = as_list(seeds)
    if not values or any(not is_int(s) or s < 0 for s in values):
        raise VitbenchError(f"{where}: seeds must be non-negative integers, got {seeds!r}")


def check_img_size(img_size: Any, where: str) -> None:
    if img_size is not None and (not isinstance(img_size, int) or img_size < 8):
        raise VitbenchError(f"{where}: img_size must be an integer >= 8, got {img_size!r}")


def check_preprocessing(resize: Any, interpolation: Any, crop_pct: Any, where: str) -> None:
    """Eval preprocessing of frozen features or fine-tuning evaluation (`vitbench.data.resize`)."""
    from vitbench.data.resize import PIL_INTERPOLATION, RESIZE_MODES  # torch-free: `vitbench validate` stays fast

    if resize not in RESIZE_MODES:
        raise VitbenchError(f"{where}: resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
    if interpolation not in PIL_INTERPOLATION:
        raise VitbenchError(f"{where}: interpolation must be one of {sorted(PIL_INTERPOLATION)}, got {interpolation!r}")
    if not (isinstance(crop_pct, (int, float)) and 0.1 <= crop_pct <= 1.0):
        raise VitbenchError(f"{where}: crop_pct must be in [0.1, 1], got {crop_pct!r}")


def check_resize_impl(resize_impl: Any, interpolation: Any, where: str) -> None:
    """`resize_impl`: "tf" (big_vision's resize: TF bilinear without antialiasing, truncated) or "pil"."""
    from vitbench.data.resize import RESIZE_IMPLS

    if resize_impl not in RESIZE_IMPLS:
        raise VitbenchError(f"{where}: resize_impl must be one of {list(RESIZE_IMPLS)} (tf = big_vision's resize, pil = PIL's), got {resize_impl!r}")
    if resize_impl == "tf" and interpolation != "bilinear":
        raise VitbenchError(f"{where}: resize_impl 'tf' is bilinear only, got interpolation {interpolation!r}; set resize_impl = 'pil' for other filters")


def check_fields(table: Mapping[str, Any], valid: list[str], where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise VitbenchError(f"{where}: unknown field(s) {unknown}; valid: {sorted(valid)}")


def _merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if v is not None:
                out[k] = v
    return out


class Method(ABC):
    """One benchmark method. Subclasses set the class attributes and implement `expand` and `run_cell`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `vitbench ls methods`
    Params: ClassVar[type[MethodParams]]
    label_params: ClassVar[tuple[str, ...]] = ()  # parameters shown in a cell's label and the plan table
    table_title: ClassVar[str] = ""  # title of `summary_table` when printed after a run

    # ------------------------------------------------------------------------------------------ parameters
    def resolve(self, suite: Suite, task: TaskSpec | None = None, overrides: Mapping[str, Any] | None = None) -> MethodParams:
        """Parameters for `task` (defaults < suite `[name]` table < the task's own table < overrides), validated.

        Errors name the suite file, the task and the field; overrides are checked as 'command-line options'.
        """
        valid = self.Params.field_names()
        table = suite.method_table(self.name)
        check_fields(table, valid, f"{suite.path}: [{self.name}]")
        task_table = task.method_table(self.name) if task is not None else {}
        if task is not None:
            check_fields(task_table, valid, f"{suite.path}: task {task.name!r} field '{self.name}'")
        common = {k: suite.defaults.get(k) for k in ("img_size",) if k in valid}
        from_files = _merge(common, table, task_table)
        where = f"{suite.path}" + (f": task {task.name!r}" if task is not None else "")
        params = self._build(from_files, where)
        if overrides and any(v is not None for v in overrides.values()):
            check_fields({k: v for k, v in overrides.items() if v is not None}, valid, "command-line options")
            params = self._build(_merge(params.to_dict(), overrides), "command-line options")
        if task is not None:
            self.check_task(params, task, str(suite.path))
        return params

    def _build(self, values: Mapping[str, Any], where: str) -> MethodParams:
        params = self.Params(**values)
        params.check(where)
        return params

    def defaults(self) -> MethodParams:
        return self.Params()

    def check_task(self, params: MethodParams, task: TaskSpec, where: str) -> None:
        """Checks that need the task (e.g. that named splits exist); `where` is the suite file."""

    # ---------------------------------------------------------------------------------------------- cells
    @abstractmethod
    def expand(self, params: MethodParams) -> list[dict[str, Any]]:
        """The `Cell.params` (JSON-able, everything that changes the number) of each cell, in run order."""

    def seeds(self, params: MethodParams) -> list[int]:
        """Seeds to run each variant with; deterministic methods run seed 0 only."""
        return as_list(getattr(params, "seeds", [0]))

    def dependencies(self, cell: Cell) -> list[Cell]:
        """Cells whose records `run_cell` needs (they run first, in the same shard)."""
        return []

    @abstractmethod
    def run_cell(self, cell: Cell, ctx: RunContext, deps: list[dict[str, Any]]) -> CellResult:
        """Compute one cell; `deps` are the records of `dependencies(cell)`, in that order."""

    # --------------------------------------------------------------------------------------------- tables
    def setting(self, rec: Mapping[str, Any]) -> str:
        """A short label of the parameters that define a comparable column of a table, e.g. '5-shot'."""
        return ""

    def values(self, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Record key -> {'value': the headline number (fraction), plus extra tidy columns}.

        Default: the task's metric as the record holds it. Methods whose selection spans several records
        (e.g. one l2 chosen across tasks) override this.
        """
        return recorded_values(records)

    def paper_method(self, rec: Mapping[str, Any]) -> str:
        """The `method` column of `report/reference/paper.csv` this record compares with."""
        return self.name

    def summary_table(self, records: list[dict[str, Any]]) -> pd.DataFrame | None:
        """A printable per-method table (e.g. tasks x shots) printed after a run, or None for none."""
        return None

    def describe(self) -> list[tuple[str, Any]]:
        """(parameter, default) pairs for `vitbench ls methods`."""
        d = self.defaults()
        own = set(type(d).__dict__.get("__annotations__", {}))  # the method's own parameters first, shared ones after
        fields = sorted(dataclasses.fields(d), key=lambda f: f.name not in own)
        return [(f.name, getattr(d, f.name)) for f in fields]


def recorded_values(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Record key -> {'value': the task's metric as the record holds it (top-1 when absent)}."""
    out = {}
    for rec in records:
        metric = ((rec.get("cell") or {}).get("task") or {}).get("metric", "top1")
        metrics = rec.get("metrics") or {}
        out[rec.get("key")] = {"value": metrics.get(metric, metrics.get("top1"))}
    return out


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'params.shots': 5, 'task.name': 'dtd', ...}; lists are kept as values."""
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for k, v in obj.items():
            flat.update(flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: obj}


def table_row_key(rec: dict[str, Any], column_params: tuple[str, ...]) -> str:
    """Canonical text of everything that defines a record's number except its seed, its task and the parameters
    shown as columns (`column_params`, e.g. k): records of one table row share it, different setups never do."""
    import json

    cell = {k: v for k, v in (rec.get("cell") or {}).items() if k not in ("seed", "task")}
    cell["params"] = {k: v for k, v in (rec.get("params") or {}).items() if k not in column_params}
    defining = {"cell": cell, "suite": rec.get("suite"), "model": rec.get("model"), "weights_id": rec.get("weights_id"),
                "vitbench": (rec.get("versions") or {}).get("vitbench")}
    return json.dumps(defining, sort_keys=True, default=str)


def differing_fields(texts: list[str], limit: int = 3) -> dict[str, str]:
    """For row keys (`table_row_key`) sharing a label: key -> 'field=value; ...' of the fields where they differ."""
    import json

    flats = {t: flatten(json.loads(t)) for t in texts}
    fields = sorted({f for d in flats.values() for f in d})
    varying = [f for f in fields if len({repr(d.get(f)) for d in flats.values()}) > 1]
    # the same parameter may sit in two places (cell.img_size, cell.params.img_size): name it once
    return {t: "; ".join(list(dict.fromkeys(f"{f.split('.')[-1]}={d.get(f)}" for f in varying))[:limit])
            for t, d in flats.items()}


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS and type(METHODS[method.name]) is not type(method):
        raise VitbenchError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def method_names() -> list[str]:
    from vitbench import methods  # noqa: F401 - importing the package registers every method module

    return list(METHODS)


def get_method(name: str) -> Method:
    """The registered method `name`; a one-line error listing the known methods otherwise."""
    if name in METHODS:
        return METHODS[name]
    names = method_names()
    if name not in METHODS:
        raise VitbenchError(f"unknown method {name!r}; known methods: {', '.join(names)} (or 'all')")
    return METHODS[name]


def find_method(name: Any) -> Method | None:
    """The registered method `name`, or None (records written by a method this version does not have)."""
    if name not in METHODS:
        method_names()
    return METHODS.get(name) if isinstance(name, str) else None
