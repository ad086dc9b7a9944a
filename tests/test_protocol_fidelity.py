"""Options that must do what they say, and smaller protocol-fidelity items: --micro-batch, dropout placement,
few-shot --shots precedence, the optax step offset, ReaL file names, KITTI string types, VTAB test sizes,
the representation layer and big_vision's float32 few-shot computation."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from vitbench.cells import RunContext
from vitbench.cli import main
from vitbench.errors import VitbenchError
from vitbench.finetune import lr_at, update_lr
from vitbench.methods import get_method
from vitbench.planner import expand, method_params
from vitbench.suites import SourceSpec, TaskSpec, load_suite

DIGITS = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),),
                  splits={"train": "all[:256]", "test": "all[1697:]"})


def test_update_k_uses_schedule_at_k_minus_1():
    assert update_lr(1, 0.01, 100, 10) == 0.0  # optax counts from 0: the first update has rate 0
    assert [update_lr(k, 0.01, 100, 10) for k in range(1, 101)] == [lr_at(s, 0.01, 100, 10) for s in range(100)]
    assert update_lr(1, 0.01, 100, 0) == pytest.approx(0.01)  # no warm-up: the first update has the full rate
    with pytest.raises(VitbenchError):
        update_lr(0, 0.01, 100, 10)


def _cells(task, method, overrides):
    """The planner's cells of `method` on `task` (the smoke suite's tables, random-init ViT-Ti/16 at 32 px)."""
    suite = dataclasses.replace(load_suite("smoke"), tasks=(task,))
    return expand(suite, ["vit_ti16"], [method], weights="none", overrides={method: overrides})


def _run(cell, ctx):
    return get_method(cell.method).run_cell(cell, ctx, [])


def test_micro_batch_accumulates_with_the_same_batch_stream(tmp_path):
    ctx = RunContext(cache_dir=tmp_path)
    base = {"steps": 4, "batch_size": 64, "warmup_steps": 1, "lr": 0.05}
    (whole_cell,), (micro_cell,) = _cells(DIGITS, "finetune", base), _cells(DIGITS, "finetune", {**base, "micro_batch": 16})
    assert micro_cell.micro_batch == 16 and micro_cell.key == whole_cell.key
    whole, micro = _run(whole_cell, ctx), _run(micro_cell, ctx)
    assert (whole.details["accumulation"], micro.details["accumulation"]) == (1, 4)
    assert micro.details["micro_batch"] == 16 and micro.details["recipe"]["micro_batch"] == 16
    a = [p["loss"] for p in whole.details["loss_curve"]]
    b = [p["loss"] for p in micro.details["loss_curve"]]
    assert len(a) == 4 and np.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert whole.details["loss_curve"][0]["lr"] == 0.0  # first update at schedule step 0
    assert whole.details["dropout"] == {"rate": 0.0}


def test_planner_carries_micro_batch_outside_the_key():
    suite = load_suite("smoke")
    with_micro = expand(suite, ["vit_ti16"], ["finetune"], weights="none", overrides={"finetune": {"micro_batch": 16}})
    without = expand(suite, ["vit_ti16"], ["finetune"], weights="none")
    assert with_micro[0].micro_batch == 16 and without[0].micro_batch is None
    assert with_micro[0].key == without[0].key and "micro_batch" not in with_micro[0].params
    with pytest.raises(VitbenchError, match="micro_batch"):
        expand(suite, ["vit_ti16"], ["finetune"], weights="none", overrides={"finetune": {"micro_batch": 0}})


def test_dropout_placed_as_vit_jax():
    from vitbench.models import create

    model = create("vit_ti16", weights="none", img_size=32, dropout=0.1)
    trunk = model.trunk
    block = trunk.blocks[0]
    assert trunk.pos_drop.p == 0.1 and block.attn.proj_drop.p == 0.1
    assert block.mlp.drop1.p == 0.1 and block.mlp.drop2.p == 0.1
    assert block.attn.attn_drop.p == 0.0 and trunk.head_drop.p == 0.0  # no attention-prob or head dropout
    info = model.weights_info["dropout"]
    assert info["rate"] == 0.1 and info["timm_kwargs"]["proj_drop_rate"] == 0.1 and "position-embedding" in info["placement"]
    with pytest.raises(VitbenchError, match="dropout"):
        create("timm:resnet18", weights="none", dropout=0.1)


def test_fewshot_cli_shots_do_not_override_suite_or_task(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = open(load_suite("smoke").path).read().replace("shots = [1, 5, 10, 25]", "shots = [5]")
    (tmp_path / "s.toml").write_text(text)
    assert main(["fewshot", "--suite", "s.toml", "--out", "res", "--dry-run"]) == 0
    assert "3 to run" in capsys.readouterr().out  # shots [5] x seeds [0, 1, 2], not 4 shot values
    (tmp_path / "t.toml").write_text(text.replace('splits = { train', 'fewshot = { shots = [1, 10] }\nsplits = { train'))
    assert main(["fewshot", "--suite", "t.toml", "--out", "res", "--dry-run"]) == 0
    assert "6 to run" in capsys.readouterr().out  # the task's own shots win over the suite's
    assert main(["fewshot", "--suite", "t.toml", "--out", "res", "--dry-run", "--shots", "25"]) == 0
    assert "3 to run" in capsys.readouterr().out  # the command line wins over both


def test_real_matches_hf_file_names():
    from vitbench.data.real import canonical_val_name, label_sets_for

    real = {"ILSVRC2012_val_00000001.JPEG": [65], "ILSVRC2012_val_00000002.JPEG": []}
    names = ["ILSVRC2012_val_00000001_n01751748.JPEG", "val/n0/ILSVRC2012_val_00000002.JPEG"]
    assert label_sets_for(names, real) == [[65], []]
    assert canonical_val_name("ILSVRC2012_val_123.JPEG") is None
    with pytest.raises(VitbenchError, match="no ReaL entry"):
        label_sets_for(["cat.jpg"], real)


def test_kitti_string_object_types_refused():
    from vitbench.data.labels import LABEL_TRANSFORMS

    raw = [{"type": ["Car", "Pedestrian"], "location": [[0, 0, 5.0], [0, 0, 30.0]]}]
    with pytest.raises(VitbenchError) as e:
        LABEL_TRANSFORMS["kitti_closest_vehicle"](raw)
    assert "strings" in str(e.value) and "Car=0" in str(e.value) and "\n" not in str(e.value)
    assert LABEL_TRANSFORMS["kitti_closest_vehicle"]([{"type": [0, 4], "location": [[0, 0, 5.0], [0, 0, 30.0]]}]).tolist() == [0]


def test_vtab_test_sizes_checked():
    from vitbench.data import load_split

    vtab = load_suite("vtab")
    sizes = {t.name: t.options["expected_sizes"]["test"] for t in vtab.tasks}
    assert sizes["retinopathy"] == 42670 and sizes["kitti_dist"] == 711 and len(sizes) == 19
    task = TaskSpec(name="d", num_classes=10, sources=(SourceSpec("digits"),), splits={"test": "all[1790:]"},
                    options={"expected_sizes": {"test": 10}})
    with pytest.warns(UserWarning, match="task 'd' defines 10"):
        split = load_split(task, "test")
    assert split.provenance["incomplete"] is True and "incomplete" in split.provenance["caveats"][-1]


def test_representation_layer_not_used_for_fine_tuning(tmp_path):
    import timm

    from vitbench.models import create
    from vitbench.models.npz import timm_vit_to_npz

    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    arrays = timm_vit_to_npz(src.state_dict(), num_heads=3)
    arrays["pre_logits/kernel"] = np.full((192, 192), 0.01, np.float32)
    arrays["pre_logits/bias"] = np.zeros(192, np.float32)
    np.savez(tmp_path / "w.npz", **arrays)
    model = create("vit_ti16", weights=tmp_path / "w.npz", img_size=32, num_classes=3)
    torch.nn.init.normal_(model.head.weight)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls = src.forward_head(src.forward_features(x), pre_logits=True)
        assert torch.allclose(model(x), model.head(cls), atol=1e-5)
        model.set_feature_layer("pre_logits")
        assert torch.allclose(model(x), model.head(cls), atol=1e-5)  # the head always sits on the class token
        assert torch.allclose(model.forward_features(x), torch.tanh(cls @ torch.full((192, 192), 0.01)), atol=1e-5)


def test_fewshot_feature_layer_default_and_validation():
    suite = load_suite("smoke")
    assert method_params(suite, "fewshot").feature_layer == "pre_logits"
    assert method_params(suite, "fewshot").resize_impl == "tf"
    with pytest.raises(VitbenchError, match="feature_layer"):
        method_params(suite, "fewshot", {"feature_layer": "penultimate"})
    with pytest.raises(VitbenchError, match="resize_impl"):
        method_params(suite, "fewshot", {"resize_impl": "opencv"})


def _big_vision_transcription(x, y, xt, l2s, k):
    """big_vision `fewshot_lsr.py` `_precompute_cache` + `_eig_fewshot_acc_fn`, op for op, in torch float32."""
    x, xt = torch.from_numpy(x).float(), torch.from_numpy(xt).float()
    mean = x.mean(0, keepdim=True)
    std = torch.sqrt(torch.mean(torch.square(torch.abs(x - mean)), 0, keepdim=True)) + 1e-5  # jnp.std
    x = torch.nn.functional.pad((x - mean) / std, (0, 1), value=100.0)
    t = 2.0 * torch.nn.functional.one_hot(torch.from_numpy(y), k).float() - 1.0
    if x.shape[0] >= x.shape[1]:
        eigs, q = torch.linalg.eigh(x.T @ x)
        rhs, lhs = q.T @ (x.T @ t), q
    else:
        eigs, q = torch.linalg.eigh(x @ x.T)
        rhs, lhs = q.T @ t, x.T @ q
    xt = torch.nn.functional.pad((xt - mean) / std, (0, 1), value=100.0)
    out = []
    for l2 in l2s:
        scaling = 1.0 / (eigs + l2 * torch.ones_like(eigs))
        out.append((xt @ ((lhs * scaling.reshape(1, -1)) @ rhs)).argmax(1).numpy())
    return np.stack(out)


def test_float32_follows_big_vision_order_of_operations():
    from vitbench import fewshot as fs

    rng = np.random.default_rng(0)
    k, d, r = 10, 384, 16  # low-rank, offset features: ill-conditioned like real pre-logits
    basis, centers = rng.normal(size=(r, d)), rng.normal(size=(k, r))
    y, yt = np.repeat(np.arange(k), 80), rng.integers(0, k, 3000)

    def feats(labels):
        z = centers[labels] + rng.normal(size=(len(labels), r)) * 2
        return (z @ basis + rng.normal(size=(len(labels), d)) * 1e-3 + 5).astype(np.float32)

    x, xt = feats(y), feats(yt)
    l2s = list(fs.DEFAULT_L2_GRID)
    factors = fs.lsr_factorize_big_vision_float32(x, y, k)
    ours = fs.lsr_predict_big_vision_float32(factors, xt, l2s)
    assert np.array_equal(ours, _big_vision_transcription(x, y, xt, l2s, k))


def test_records_say_what_ran(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = open(load_suite("smoke").path).read().replace("shots = [1, 5, 10, 25]", "shots = [1]").replace("seeds = [0, 1, 2]", "seeds = [0]")
    (tmp_path / "s.toml").write_text(text)
    assert main(["fewshot", "--suite", "s.toml", "--out", "res", "--no-report"]) == 0
    rec = json.loads(next((tmp_path / "res").rglob("*.json")).read_text())
    assert rec["details"]["feature_layer"] == {"requested": "pre_logits", "used": "cls"}
    assert rec["provenance"]["preprocessing"]["resize_impl"] == "tf"
    assert rec["provenance"]["train"]["order"]["kind"] == "native"
    assert rec["details"]["class_coverage"]["eval_classes_missing_from_train"] == 0


def test_runners_refuse_eval_classes_missing_from_training(tmp_path):
    from vitbench.features import clear_memo

    task = TaskSpec(name="digits3", num_classes=10, sources=(SourceSpec("digits"),),
                    splits={"train": "all[:3]", "test": "all[3:40]"})  # rows 0-2 are digits 0, 1, 2
    ctx = RunContext(cache_dir=tmp_path)
    cell = _cells(task, "finetune", {"steps": 2, "warmup_steps": 0})[0]
    with pytest.raises(VitbenchError, match=r"task 'digits3': split 'test' has 7 class\(es\) that split 'train' lacks"):
        _run(cell, ctx)
    for method in ("fewshot", "knn", "linear"):
        with pytest.raises(VitbenchError, match="allow_missing_classes"):
            _run(_cells(task, method, {"shots": [1], "seeds": [0]} if method == "fewshot" else {})[0], ctx)
    clear_memo()
    ok = dataclasses.replace(task, options={"allow_missing_classes": True})
    result = _run(_cells(ok, "fewshot", {"shots": [1], "seeds": [0]})[0], ctx)
    assert result.details["class_coverage"]["accepted_because"] == "the task declares it acceptable"
    clear_memo()


def test_real_on_hf_style_parquet_names(tmp_path):
    """ReaL through a Hugging Face `ILSVRC/imagenet-1k`-style copy, whose validation files carry the wnid."""
    import datasets
    from PIL import Image

    from vitbench.data import load_split

    names = [f"ILSVRC2012_val_{i:08d}_n0175174{i}.JPEG" for i in (1, 2, 3)]
    for name in names:
        Image.new("RGB", (4, 4)).save(tmp_path / name, format="JPEG")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000)})
    ds = datasets.Dataset.from_dict({"image": [str(tmp_path / n) for n in names], "label": [0, 1, 2]}, features=feats)
    (tmp_path / "hf" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "hf" / "data" / "validation-00000-of-00001.parquet"))
    (tmp_path / "real.json").write_text("[[5], [], [0, 1]]")
    task = TaskSpec(name="imagenet_real", num_classes=1000, metric="real", splits={"test": "validation"},
                    sources=(SourceSpec("parquet", str(tmp_path / "hf")),), options={"real_json": "real.json"})
    split = load_split(task, "test", data_root=tmp_path)
    assert split.keys == names and split.real_labels == [[5], [], [0, 1]]
