"""The Python API: `vitbench.evaluate(model, suite=...)` runs a suite on any model and writes records + report.

Owns `evaluate` and `Preprocess`. `model` is a model spec (`vit_b16`, `timm:...`, `hf:...`, `open_clip:...`) or
an `nn.Module` (registered under `name` for the duration of the call, see `vitbench.models.custom`). It uses the
planner, runners, caches and result records of the CLI (`vitbench run`): cells are keyed by the weights hash of
the module's state dict and its preprocessing, so a second call resumes and reuses cached features. Exercised by
the README's "Python API" example (tests/test_api.py runs it).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from vitbench.errors import VitbenchError


@dataclass(frozen=True)
class Preprocess:
    """Input preprocessing; None fields come from the model (its own config) or the suite's protocol.

    `size`: input resolution (every method). `mean`/`std`: normalisation after scaling to [0, 1].
    `resize` (frozen-feature eval: "squash_crop" = big_vision's few-shot default, "squash", "resize_crop"),
    `crop_pct` and `interpolation` ("bilinear", "bicubic", ...) override the suite's settings for each method
    that has them (`vitbench ls methods`).
    """

    size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: str | None = None
    interpolation: str | None = None
    crop_pct: float | None = None

    @classmethod
    def coerce(cls, value: Preprocess | Mapping[str, Any] | None) -> Preprocess:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise VitbenchError(f"preprocess: unknown field(s) {unknown}; valid: "
                                    f"{[f.name for f in dataclasses.fields(cls)]}")
            return cls(**value)
        raise VitbenchError(f"preprocess must be a vitbench.Preprocess or a dict, got {type(value).__name__}")

    def normalization(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if (self.mean is None) != (self.std is None):
            raise VitbenchError("preprocess: give mean and std together")
        if self.mean is not None:
            for label, v in (("mean", self.mean), ("std", self.std)):
                if len(v) != 3 or any(not isinstance(x, (int, float)) for x in v):
                    raise VitbenchError(f"preprocess: {label} must be 3 numbers (R, G, B), got {v!r}")
            if any(s <= 0 for s in self.std):
                raise VitbenchError(f"preprocess: std must be positive, got {self.std!r}")
            out["mean"] = tuple(float(x) for x in self.mean)
            out["std"] = tuple(float(x) for x in self.std)
        if self.size is not None:
            if not isinstance(self.size, int) or self.size < 8:
                raise VitbenchError(f"preprocess: size must be an integer >= 8, got {self.size!r}")
            out["input_size"] = (3, self.size, self.size)
        return out


def _module_data_config(module: nn.Module) -> dict[str, Any]:
    """The module's own preprocessing, when it carries one (`data_config`, or a timm `pretrained_cfg`)."""
    own = getattr(module, "data_config", None)
    if isinstance(own, Mapping):
        return dict(own)
    if isinstance(getattr(module, "pretrained_cfg", None), Mapping):
        import timm.data

        config = dict(timm.data.resolve_data_config({}, model=module))
        size = getattr(getattr(module, "patch_embed", None), "img_size", None)
        if size is not None:  # built at another resolution than its pretrained_cfg says (img_size=...)
            config["input_size"] = (3, *tuple(size))
        return config
    return {}


def _device(name: str | None) -> str:
    import torch

    if name:
        try:
            torch.device(name)
        except (RuntimeError, ValueError):
            raise VitbenchError(f"device={name!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from None
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise VitbenchError(f"device={name!r}: no CUDA device is visible; use device='cpu'")
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _overrides(methods: list[str], prep: Preprocess,
               extra: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Per-method overrides: the preprocessing fields each method has, then the caller's `overrides`."""
    from vitbench.methods import get_method

    options = {"img_size": prep.size, "resize": prep.resize, "interpolation": prep.interpolation,
               "crop_pct": prep.crop_pct}
    out = {}
    for name in methods:
        fields = set(get_method(name).Params.field_names())
        out[name] = {k: v for k, v in options.items() if k in fields and v is not None}
    for name, values in (extra or {}).items():
        get_method(name)  # an unknown method name is an error; a known one that is not run is ignored
        if name in out:
            out[name] = {**out[name], **dict(values)}
    return out


def _clear_model_memo() -> None:
    """Models kept between cells are looked up by name: a name's module may differ from one call to the next."""
    from vitbench.runners.fewshot import clear_memo

    clear_memo()


def evaluate(
    model: str | nn.Module,
    *,
    suite: str,
    methods: str | Iterable[str] = "all",
    out: str | Path = "results",
    name: str | None = None,
    preprocess: Preprocess | Mapping[str, Any] | None = None,
    pooling: str | None = None,
    tasks: Iterable[str] | None = None,
    weights: str = "default",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    device: str | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
    report: bool = True,
    report_dir: str | Path | None = None,
):
    """Run `suite` on `model`; write one record per cell under `out` and the report; return the records.

    `model`: a model spec, or an `nn.Module` whose features are `forward_features(x)` (timm modules: their
    pre-logits) or `forward(x)`, [B, D]; [B, N, D] tokens need `pooling` ("cls" or "mean"). `name` is the model
    name in records (required for a module; for a spec it aliases it). `preprocess`: a `Preprocess` or dict
    (size, mean, std, resize, interpolation, crop_pct); unset fields come from the model (a module: its
    `data_config` or timm `pretrained_cfg`) and the suite. `methods`: "all" (the suite's methods), a name, or a
    list of names (`vitbench ls methods`). `weights`: "default" (the model's own), "none" or a file, for specs.
    `overrides`: method parameters, e.g. {"fewshot": {"shots": [5]}, "finetune": {"steps": 50}}.
    Returns a pandas DataFrame (`vitbench.results.records_frame`: one row per cell, metrics as columns, the raw
    record in column "record"); `frame.attrs["report"]` holds the report paths when `report` is true.
    """
    from vitbench import planner, results
    from vitbench.cells import RunContext
    from vitbench.models import sources
    from vitbench.models.custom import Registered
    from vitbench.suites import load_suite

    the_suite = load_suite(str(suite))
    wanted = planner.resolve_methods(the_suite, methods if isinstance(methods, str) else ",".join(methods))
    prep = Preprocess.coerce(preprocess)
    norm = prep.normalization()
    entry = None
    if isinstance(model, nn.Module):
        if not name or not isinstance(name, str):
            raise VitbenchError("evaluate(module): pass name='...' (the model name written into records)")
        entry = Registered(name, module=model, data_config={**_module_data_config(model), **norm}, pooling=pooling)
    elif isinstance(model, str):
        if pooling is not None:
            raise VitbenchError(f"pooling= applies to nn.Modules; for {model!r} choose the feature in the spec "
                                "(e.g. hf:<repo>#mean)")
        norm.pop("input_size", None)  # a spec's resolution goes through img_size (cell key)
        if norm and not name:
            raise VitbenchError(f"evaluate({model!r}, preprocess=mean/std): pass name='...' for the model with "
                                "this normalisation")
        if name and name != model:
            entry = Registered(name, spec=model, data_config=norm)
    else:
        raise VitbenchError(f"model must be a model name or an nn.Module, got {type(model).__name__}")
    model_name = entry.name if entry is not None else model
    out_dir = Path(out)
    registration = sources.registered(entry) if entry is not None else contextlib.nullcontext()
    with registration:
        _clear_model_memo()
        try:
            cells = planner.expand(the_suite, [model_name], wanted, weights=weights,
                                   tasks=list(tasks) if tasks else None, overrides=_overrides(wanted, prep, overrides),
                                   pos_interp=the_suite.defaults.get("pos_interp", "bilinear"))
            the_plan = planner.plan(cells, out_dir, force=force)
            if the_plan.todo:
                results.ensure_writable(out_dir)
            ctx = RunContext(data_root=Path(data_root) if data_root else None,
                             cache_dir=Path(cache_dir) if cache_dir else None, device=_device(device))
            planner.execute(the_plan.todo, out_dir, ctx)
        finally:
            _clear_model_memo()
    keys = {c.key for c in the_plan.cells}
    records = [r for r in results.load_records(out_dir) if r["key"] in keys]
    frame = results.records_frame(records)
    if report and records:
        from vitbench.report import build_report

        target = Path(report_dir) if report_dir else Path("reports") / the_suite.name
        frame.attrs["report"] = build_report(records, target, title=f"vitbench: {the_suite.name} ({model_name})")
    return frame
