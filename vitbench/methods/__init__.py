"""Benchmark methods behind one interface (`vitbench.methods.base.Method`), one module per method.

Importing this package imports every module in this folder; each registers its method. So a new method is
one new file here (plus its table in a suite). `vitbench ls methods` lists them with their parameters.
"""

from __future__ import annotations

import importlib
import pkgutil

from vitbench.methods.base import METHODS, Method, MethodParams, find_method, get_method, method_names, register

__all__ = ["METHODS", "Method", "MethodParams", "find_method", "get_method", "method_names", "register"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
