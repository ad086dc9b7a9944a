"""vitbench: transfer benchmarks for pretrained vision backbones, following the ViT paper's protocols.

Entry points: the `vitbench` command (see `vitbench --help`) and `vitbench.evaluate(model, suite=...)` (any model
spec or `nn.Module`; writes records and the report, returns a DataFrame; README "Python API"). Public APIs:
`vitbench.evaluate`, `vitbench.Preprocess`, `vitbench.models.create`, `vitbench.fewshot.lsr_predict`,
`vitbench.fewshot.sample_shots`, `vitbench.suites.load_suite`, `vitbench.results.load_records`,
`vitbench.methods.get_method` (the method registry; one module per method).
"""

__version__ = "0.1.0"
__all__ = ["Preprocess", "evaluate"]


def __getattr__(name):  # `import vitbench` stays light: torch loads on first use of the API
    if name in __all__:
        from vitbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'vitbench' has no attribute {name!r}")
