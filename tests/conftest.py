"""Shared test setup: never touch the network, keep torch to few threads, isolate caches per session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("vitbench-cache")
    os.environ["VITBENCH_CACHE_DIR"] = str(cache)
    import torch

    torch.set_num_threads(2)
    yield cache


@pytest.fixture(scope="module")
def plain_cpu_convs():
    """oneDNN's per-shape primitive setup costs seconds for tiny conv inputs (BiT tests); plain convs are faster."""
    import torch

    old = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = old
