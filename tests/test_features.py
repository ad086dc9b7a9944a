"""Tests for vitbench.features (feature cache) and `vitbench cache ls|clear`, with a tiny fake backbone."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vitbench import features, fsutil
from vitbench.cells import RunContext
from vitbench.data.base import ImageSplit
from vitbench.data.transforms import normalize, preprocessing_for, resized_images


class TinyBackbone(torch.nn.Module):
    """Stands in for `vitbench.models.create(...)`: forward_features, num_features, data_config, weights_info."""

    def __init__(self, seed=0, dim=6):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Linear(3 * 4 * 4, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(dim, 48, generator=g))
            self.proj.bias.zero_()
        self.num_features = dim
        self.data_config = {"input_size": (3, 8, 8), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        self.weights_info = {"weights_id": f"fake/{seed}", "weights_sha256": f"sha-{seed}", "random_init": False}

    def forward_features(self, x):
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def make_split(n=10, seed=0, name="toy"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 12, 10, 3), dtype=np.uint8)
    return ImageSplit(
        labels=np.arange(n, dtype=np.int64) % 3,
        fingerprint=f"{name}-{seed}-{n}",
        provenance={"task": name, "split": "train"},
        load_image=lambda i: Image.fromarray(pixels[i]),
        describe=lambda i: f"{name}[{i}]",
    )


@pytest.fixture
def ctx(tmp_path):
    return RunContext(cache_dir=tmp_path / "cache", eval_batch_size=4)


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("VITBENCH_CACHE_DIR", str(tmp_path / "env"))
    assert features.default_cache_dir() == tmp_path / "env"
    assert features.default_cache_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("VITBENCH_CACHE_DIR")
    assert features.default_cache_dir().parts[-2:] == (".cache", "vitbench")


def test_extracts_in_order_then_second_run_does_no_forward_pass(ctx):
    model, split = TinyBackbone(), make_split(10)
    prep = preprocessing_for(model.data_config)
    progress = []
    ctx.progress = lambda desc, done, total: progress.append((desc, done, total))
    features.reset_counters()
    first = features.load_or_extract(model, split, prep, ctx, split_name="train", model_name="tiny", task_name="toy")
    assert not first.hit and first.array.shape == (10, 6) and first.array.dtype == np.float32
    assert features.forward_pass_count() == 3  # 10 images, batch 4
    images = resized_images(split, prep, cache_dir=features.default_cache_dir(ctx.cache_dir) / "images")
    with torch.inference_mode():
        direct = model.forward_features(normalize(torch.from_numpy(np.array(images)), prep)).numpy()
    np.testing.assert_allclose(first.array, direct, rtol=1e-5, atol=1e-5)
    assert progress[-1][1:] == (10, 10) and any(d.startswith("features tiny toy train") for d, _, _ in progress)

    second = features.extract_features(model, split, prep, ctx, split_name="train", model_name="tiny", task_name="toy")
    assert features.forward_pass_count() == 3 and features.COUNTERS["cache_hits"] == 1
    np.testing.assert_array_equal(second, first.array)
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["shape"] == [10, 6] and meta["weights_sha256"] == "sha-0" and meta["model"] == "tiny"


def test_key_changes_with_weights_preprocessing_data_and_split(ctx):
    model, split = TinyBackbone(), make_split(6)
    prep = preprocessing_for(model.data_config)
    base = features.feature_key(model, split, prep, split_name="train").digest
    assert features.feature_key(TinyBackbone(seed=1), split, prep, split_name="train").digest != base
    assert features.feature_key(model, split, preprocessing_for(model.data_config, size=16), split_name="train").digest != base
    assert features.feature_key(model, make_split(6, seed=1), prep, split_name="train").digest != base
    assert features.feature_key(model, split, prep, split_name="test").digest != base
    assert features.feature_key(model, split, prep, split_name="train", model_name="x").digest == base


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "drop_sidecar", "garbage_sidecar"])
def test_partial_or_corrupt_cache_is_rebuilt(ctx, damage):
    model, split = TinyBackbone(), make_split(9)
    prep = preprocessing_for(model.data_config)
    first = features.load_or_extract(model, split, prep, ctx, split_name="train")
    good = np.array(first.array)
    path, meta = first.path, first.path.with_suffix(".json")
    del first
    if damage == "truncate":
        os.truncate(path, path.stat().st_size - 30)
    elif damage == "flip_byte":
        raw = bytearray(path.read_bytes())
        raw[-5] ^= 0xFF
        path.write_bytes(bytes(raw))
        fsutil.forget_verified()  # as in a fresh process
    elif damage == "drop_sidecar":
        meta.unlink()
    else:
        meta.write_text("{not json")
    features.reset_counters()
    with pytest.warns(UserWarning, match="rebuilding"):
        again = features.load_or_extract(model, split, prep, ctx, split_name="train")
    assert not again.hit and again.rebuilt_reason and features.forward_pass_count() == 3
    np.testing.assert_array_equal(again.array, good)
    assert features.load_or_extract(model, split, prep, ctx, split_name="train").hit


def test_unwritable_cache_is_a_one_line_error(tmp_path):
    from vitbench.errors import VitbenchError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    model, split = TinyBackbone(), make_split(3)
    with pytest.raises(VitbenchError, match="cache"):
        features.load_or_extract(model, split, preprocessing_for(model.data_config),
                                 RunContext(cache_dir=blocker), split_name="train")


def test_cache_ls_and_clear_commands(ctx):
    from vitbench.commands.cache import app

    model = TinyBackbone()
    prep = preprocessing_for(model.data_config)
    for task in ("a", "b"):
        features.load_or_extract(model, make_split(5, name=task), prep, ctx, split_name="train", model_name="tiny", task_name=task)
    rows = features.list_feature_cache(ctx.cache_dir)
    assert sorted(r["task"] for r in rows) == ["a", "b"] and all(r["status"] == "ok" for r in rows)
    runner = CliRunner()
    res = runner.invoke(app, ["ls", "--cache-dir", str(ctx.cache_dir)])
    assert res.exit_code == 0, res.output
    assert "features: 2 entries" in res.output and "decoded images: 2 splits" in res.output
    res = runner.invoke(app, ["clear", "--what", "features", "--task", "a", "--yes", "--cache-dir", str(ctx.cache_dir)])
    assert res.exit_code == 0, res.output
    assert "deleted 1 cached file" in res.output
    assert [r["task"] for r in features.list_feature_cache(ctx.cache_dir)] == ["b"]
    res = runner.invoke(app, ["clear", "--cache-dir", str(ctx.cache_dir)], input="n\n")
    assert "nothing deleted" in res.output and len(features.list_feature_cache(ctx.cache_dir)) == 1
    res = runner.invoke(app, ["clear", "-y", "--cache-dir", str(ctx.cache_dir)])
    assert res.exit_code == 0, res.output
    assert features.list_feature_cache(ctx.cache_dir) == []
    assert not (ctx.cache_dir / "images").exists()
