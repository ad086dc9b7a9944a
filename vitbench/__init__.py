"""vitbench: transfer benchmarks for pretrained vision backbones, following the ViT paper's protocols.

Entry point: the `vitbench` command (see `vitbench --help`). Public APIs: `vitbench.models.create`,
`vitbench.fewshot.lsr_predict`, `vitbench.fewshot.sample_shots`, `vitbench.suites.load_suite`,
`vitbench.results.load_records`, `vitbench.methods.get_method` (the method registry; one module per method).
"""

__version__ = "0.1.0"
