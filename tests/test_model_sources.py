"""Model sources on models the tests create: hf: (a saved random-init ViT / DINOv2), open_clip: (a tiny registered
config), timm:local-dir: / timm:hf-hub: (a folder and a fake hub cache), an nn.Module; offline failures."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vitbench
from vitbench.errors import VitbenchError

FAST = {"fewshot": {"shots": [5], "seeds": [0]}, "finetune": {"steps": 2, "warmup_steps": 0, "batch_size": 16},
        "knn": {"k": [5]}, "linear": {"max_iter": 10, "wd_grid": [1e-4]}}


def direct_features(record, forward, n=48):
    """(cached train features [:n], `forward` applied to the same preprocessed train images [:n])."""
    from vitbench.data import load_split
    from vitbench.data.transforms import Preprocessing, normalize, resized_images
    from vitbench.features import default_cache_dir
    from vitbench.suites import load_suite

    prep = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in record["provenance"]["preprocessing"].items()})
    task = load_suite("smoke").tasks[0]
    split = load_split(task, task.train_split)
    images = resized_images(split, prep, cache_dir=default_cache_dir() / "images")
    x = normalize(torch.from_numpy(np.array(images[:n])), prep)
    with torch.no_grad():
        direct = forward(x).float().numpy()
    cached = np.load(record["provenance"]["feature_cache"]["train"]["path"], mmap_mode="r")[:n]
    return np.asarray(cached), direct


def run(model, tmp_path, methods, **kw):
    return vitbench.evaluate(model, suite="smoke", methods=methods, out=tmp_path / "results", report=False,
                             overrides=FAST, **kw)


def one(frame, method):
    rows = frame[frame["method"] == method]
    assert len(rows) == 1
    return rows.iloc[0]["record"]


# ------------------------------------------------------------------------------------------------ hf:
needs_hf = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                              reason="hf: tests need transformers (pip install 'vitbench[hf]')")


def _tiny_vit(folder: Path, pooler: bool = True, processor: bool = True, mean=(0.4, 0.5, 0.6)) -> nn.Module:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=32, patch_size=8)
    model = ViTModel(cfg, add_pooling_layer=pooler).eval()
    model.save_pretrained(folder)
    if processor:
        ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=list(mean),
                          image_std=[0.25, 0.25, 0.25]).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-vit")
    return folder, _tiny_vit(folder)


@needs_hf
def test_hf_fewshot_features_are_the_models_class_token(vit_dir, tmp_path):
    folder, model = vit_dir
    frame = run(f"hf:{folder}", tmp_path, ["fewshot"])
    rec = one(frame, "fewshot")
    assert rec["model"] == f"hf:{folder}"
    assert rec["weights_id"].startswith("hfdir:") and rec["weights_id"].endswith("#cls")
    weights = rec["provenance"]["weights"]
    assert weights["feature_output"] == "cls" and weights["hf_class"] == "ViTModel"
    assert weights["model_preprocessing"]["image_mean"] == [0.4, 0.5, 0.6]
    assert rec["provenance"]["preprocessing"]["mean"] == [0.4, 0.5, 0.6]  # the processor's, not a default
    cached, direct = direct_features(rec, lambda x: model(pixel_values=x).last_hidden_state[:, 0])
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)


@needs_hf
def test_hf_feature_choice_is_keyed_and_recorded(vit_dir, tmp_path):
    folder, model = vit_dir
    rec_mean = one(run(f"hf:{folder}#mean", tmp_path, ["fewshot"]), "fewshot")
    rec_pool = one(run(f"hf:{folder}#pooled", tmp_path, ["fewshot"]), "fewshot")
    assert rec_mean["weights_id"].endswith("#mean") and rec_pool["weights_id"].endswith("#pooled")
    paths = {r["provenance"]["feature_cache"]["train"]["path"] for r in (rec_mean, rec_pool)}
    assert len(paths) == 2  # one cache entry per feature output
    cached, direct = direct_features(rec_mean, lambda x: model(pixel_values=x).last_hidden_state[:, 1:].mean(1))
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)
    cached, direct = direct_features(rec_pool, lambda x: model(pixel_values=x).pooler_output)
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)


@needs_hf
def test_hf_finetune_runs_with_a_zero_head(vit_dir, tmp_path):
    folder, _ = vit_dir
    from vitbench.models import create

    backbone = create(f"hf:{folder}", num_classes=10)
    assert backbone.head is not None and float(backbone.head.weight.detach().abs().sum()) == 0.0
    rec = one(run(f"hf:{folder}", tmp_path, ["finetune"], name="tiny-hf-vit"), "finetune")
    assert rec["model"] == "tiny-hf-vit" and rec["params"]["steps"] == 2
    assert 0.0 <= rec["metrics"]["top1"] <= 1.0
    assert rec["provenance"]["weights"]["spec"] == f"hf:{folder}"


@needs_hf
def test_alias_with_normalisation_override(vit_dir, tmp_path):
    folder, model = vit_dir
    prep = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    with pytest.raises(VitbenchError, match="name="):
        run(f"hf:{folder}", tmp_path, ["fewshot"], preprocess=prep)
    rec = one(run(f"hf:{folder}", tmp_path, ["fewshot"], name="vit-half", preprocess=prep), "fewshot")
    assert rec["model"] == "vit-half" and rec["weights_id"].endswith("#cls;mean=0.5,0.5,0.5;std=0.5,0.5,0.5")
    assert rec["provenance"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    cached, direct = direct_features(rec, lambda x: model(pixel_values=x).last_hidden_state[:, 0])
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)


@needs_hf
def test_hf_dinov2_mean_and_other_inputs(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32,
                       patch_size=8)
    model = Dinov2Model(cfg).eval()
    model.save_pretrained(tmp_path / "dino")
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      resample=3).save_pretrained(tmp_path / "dino")
    from vitbench.models import create

    backbone = create(f"hf:{tmp_path / 'dino'}#mean")
    assert backbone.data_config["input_size"] == (3, 32, 32)
    assert backbone.data_config["interpolation"] == "bicubic" and backbone.data_config["crop_pct"] == round(32 / 36, 4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixel_values=x).last_hidden_state[:, 1:].mean(1)
        torch.testing.assert_close(backbone.forward_features(x), expected)
        assert create(f"hf:{tmp_path / 'dino'}").weights_info["feature_output"] == "cls"


@needs_hf
def test_hf_clip_and_siglip_vision_towers(tmp_path):
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipImageProcessor, SiglipVisionConfig,
                              SiglipVisionModel)

    from vitbench.models import create

    torch.manual_seed(0)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64,
                max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).eval()
    clip.save_pretrained(tmp_path / "clip")  # a full CLIP checkpoint: vitbench loads its vision tower
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    siglip = SiglipVisionModel(SiglipVisionConfig(**vision)).eval()
    siglip.save_pretrained(tmp_path / "siglip")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "siglip")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tower = create(f"hf:{tmp_path / 'clip'}")
        assert tower.weights_info["hf_class"] == "CLIPVisionModel" and tower.weights_info["feature_output"] == "pooled"
        assert not any(k.startswith("model.text") for k in tower.trunk.state_dict())
        expected = clip.vision_model(pixel_values=x).pooler_output  # class token after post_layernorm
        torch.testing.assert_close(tower.forward_features(x), expected)
        torch.testing.assert_close(create(f"hf:{tmp_path / 'clip'}#cls").forward_features(x), expected)
        pooled = create(f"hf:{tmp_path / 'siglip'}")
        torch.testing.assert_close(pooled.forward_features(x), siglip(pixel_values=x).pooler_output)
        mean = create(f"hf:{tmp_path / 'siglip'}#mean")
        torch.testing.assert_close(mean.forward_features(x), siglip(pixel_values=x).last_hidden_state.mean(1))
        assert not any(".head." in k for k in mean.trunk.state_dict())  # the unused pooling head is not hashed
    with pytest.raises(VitbenchError, match="no class token"):
        create(f"hf:{tmp_path / 'siglip'}#cls")


@needs_hf
def test_hf_refusals(tmp_path):
    from vitbench.models import create, resolve_weights_id

    _tiny_vit(tmp_path / "nopool", pooler=False)
    with pytest.raises(VitbenchError, match="#cls"):
        create(f"hf:{tmp_path / 'nopool'}#pooled")
    assert create(f"hf:{tmp_path / 'nopool'}").num_features == 32  # the class token needs no pooler
    with pytest.raises(VitbenchError, match="patch size 8"):
        create(f"hf:{tmp_path / 'nopool'}", img_size=36)
    _tiny_vit(tmp_path / "noproc", processor=False)
    with pytest.raises(VitbenchError, match="preprocessor_config.json"):
        create(f"hf:{tmp_path / 'noproc'}")
    with pytest.raises(VitbenchError, match="feature output"):
        resolve_weights_id(f"hf:{tmp_path / 'nopool'}#tokens")
    (tmp_path / "nopool" / "model.safetensors").rename(tmp_path / "nopool" / "other.bin")
    with pytest.raises(VitbenchError, match="safetensors"):
        create(f"hf:{tmp_path / 'nopool'}")


@needs_hf
def test_cli_runs_an_hf_folder(vit_dir, tmp_path):
    from vitbench.cli import main
    from vitbench.results import load_records

    folder, _ = vit_dir
    code = main(["fewshot", "--suite", "smoke", "--model", f"hf:{folder}#mean", "--weights", "default", "--shots", "5",
                 "--seeds", "0", "--out", str(tmp_path / "r"), "--no-report"])
    assert code == 0
    (rec,) = load_records(tmp_path / "r")
    assert rec["model"] == f"hf:{folder}#mean" and rec["random_init"] is False


def test_missing_packages_name_the_extra(monkeypatch):
    import importlib.util as iu

    from vitbench.models import resolve_weights_id

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name in ("transformers", "open_clip") else real(name, *a))
    with pytest.raises(VitbenchError, match=r"vitbench\[hf\]"):
        resolve_weights_id("hf:facebook/dinov2-small")
    with pytest.raises(VitbenchError, match=r"vitbench\[openclip\]"):
        resolve_weights_id("open_clip:ViT-B-32/openai")


@needs_hf
def test_hf_repo_not_in_cache_fails_fast_offline(monkeypatch):
    from vitbench.models import create, resolve_weights_id

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(VitbenchError) as exc:
        create("hf:some/repo-not-in-cache")
    assert time.perf_counter() - started < 5
    message = str(exc.value)
    assert "\n" not in message and "HF_HUB_OFFLINE=1" in message and "local folder" in message
    with pytest.raises(VitbenchError, match="not in the Hugging Face cache"):
        resolve_weights_id("timm:hf-hub:timm/repo-not-in-cache")


def test_unreachable_hub_fails_at_once_without_the_offline_flag(monkeypatch):
    """Without HF_HUB_OFFLINE the hub client would retry for a minute; a short probe answers first."""
    from vitbench.models import checkpoints, resolve_weights_id

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(checkpoints, "_reachable", lambda url: False)
    started = time.perf_counter()
    with pytest.raises(VitbenchError, match="cannot be reached.*local folder"):
        resolve_weights_id("timm:hf-hub:timm/repo-not-in-cache")
    assert time.perf_counter() - started < 5


@needs_hf
def test_cli_hf_offline_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vitbench.cli", "fewshot", "--suite", "smoke", "--model",
                           "hf:some/repo-not-in-cache", "--out", str(tmp_path / "r"), "--no-report"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "repo-not-in-cache" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - started < 60  # the interpreter start and imports, not network retries


@needs_hf
def test_hf_hub_repo_from_the_cache(vit_dir, tmp_path, monkeypatch):
    """A hub repo id resolves to its cached snapshot offline; the weights id pins the commit."""
    import huggingface_hub.constants as hub_constants

    folder, model = vit_dir
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--someone--tiny-vit" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "hub" / "models--someone--tiny-vit" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-vit" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    from vitbench.models import create

    backbone = create("hf:someone/tiny-vit")
    assert backbone.weights_info["weights_id"] == f"hf/someone/tiny-vit@{commit}#cls"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x), model(pixel_values=x).last_hidden_state[:, 0])


# ------------------------------------------------------------------------------------------ open_clip:
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip", reason="open_clip: tests need open_clip_torch")
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open-clip")
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                              "patch_size": 8},
              "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (folder / "vitbench-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(str(folder / "vitbench-tiny-clip.json"))
    torch.manual_seed(0)
    model = open_clip.create_model("vitbench-tiny-clip", pretrained=None).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "clip.safetensors"))
    return model, folder / "clip.safetensors"


def test_open_clip_fewshot_features_and_finetune(tiny_clip, tmp_path):
    model, weights = tiny_clip
    frame = run("open_clip:vitbench-tiny-clip#embed", tmp_path, ["fewshot", "finetune"], weights=str(weights))
    rec = one(frame, "fewshot")
    assert rec["weights_id"].startswith("file:") and rec["weights_id"].endswith("#embed")
    assert rec["provenance"]["weights"]["model_preprocessing"]["interpolation"] == "bicubic"
    cached, direct = direct_features(rec, model.visual)
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)
    ft = one(frame, "finetune")
    assert ft["model"] == "open_clip:vitbench-tiny-clip#embed" and "top1" in ft["metrics"]


def test_open_clip_pooled_is_before_the_projection(tiny_clip):
    model, weights = tiny_clip
    from vitbench.models import create

    backbone = create("open_clip:vitbench-tiny-clip", weights=str(weights))
    assert backbone.weights_info["feature_output"] == "pooled" and backbone.num_features == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x) @ model.visual.proj, model.visual(x))
    with pytest.raises(VitbenchError, match="name the pretrained weights"):
        create("open_clip:vitbench-tiny-clip")
    with pytest.raises(VitbenchError, match="patch size 8"):
        create("open_clip:vitbench-tiny-clip", weights="none", img_size=36)


def test_open_clip_tag_offline_fails_fast(monkeypatch):
    pytest.importorskip("open_clip")
    from vitbench.models import create

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VitbenchError, match="HF_HUB_OFFLINE=1.*--weights"):
        create("open_clip:ViT-B-32/laion2b_s34b_b79k")


# ------------------------------------------------------------------------------------ timm hub / folder
def test_timm_local_dir_and_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants
    import timm
    from timm.models import save_for_hf

    from vitbench.models import create

    torch.manual_seed(0)
    args = {"img_size": 32, "patch_size": 8, "depth": 2}
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, **args).eval()
    save_for_hf(model, str(tmp_path / "saved"), safe_serialization=True, model_args=args)
    x = torch.randn(2, 3, 32, 32)
    backbone = create(f"timm:local-dir:{tmp_path / 'saved'}")
    assert backbone.weights_info["weights_id"].startswith("timmdir:")
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x), model.forward_head(model.forward_features(x), pre_logits=True))
    frame = run(f"timm:local-dir:{tmp_path / 'saved'}", tmp_path, ["fewshot", "finetune"])
    cached, direct = direct_features(one(frame, "fewshot"), lambda x: model.forward_head(model.forward_features(x), pre_logits=True))
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)
    assert one(frame, "finetune")["provenance"]["weights"]["timm_arch"] == "vit_tiny_patch16_224"
    commit = "f" * 40
    snapshot = tmp_path / "hub" / "models--timm--tiny-test" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in (tmp_path / "saved").iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = create("timm:hf-hub:timm/tiny-test")
    assert hub.weights_info["weights_id"] == f"timm-hub/timm/tiny-test@{commit}"
    assert hub.weights_info["weights_sha256"] == backbone.weights_info["weights_sha256"]


def test_timm_folder_dropout_is_placed_as_vit_jax(tmp_path):
    """dropout on a timm folder / hub ViT goes where vit_jax puts it (not timm's head dropout), and is recorded."""
    import timm
    from timm.models import save_for_hf

    from vitbench.models import create

    args = {"img_size": 32, "patch_size": 8, "depth": 1}
    save_for_hf(timm.create_model("vit_tiny_patch16_224", num_classes=0, **args), str(tmp_path / "vit"),
                safe_serialization=True, model_args=args)
    trunk = create(f"timm:local-dir:{tmp_path / 'vit'}", dropout=0.1)
    assert trunk.weights_info["dropout"]["rate"] == 0.1 and "vit_jax" in trunk.weights_info["dropout"]["placement"]
    vit = trunk.trunk
    assert vit.pos_drop.p == 0.1 and vit.blocks[0].attn.proj_drop.p == 0.1 and vit.blocks[0].mlp.drop1.p == 0.1
    assert vit.blocks[0].attn.attn_drop.p == 0.0 and vit.head_drop.p == 0.0
    save_for_hf(timm.create_model("resnet18", num_classes=0), str(tmp_path / "cnn"), safe_serialization=True)
    with pytest.raises(VitbenchError, match="dropout"):
        create(f"timm:local-dir:{tmp_path / 'cnn'}", dropout=0.1)


# --------------------------------------------------------------------------------------------- modules
class TokenNet(nn.Module):
    """A patch embedding + class token, returning [B, 1 + N, D] tokens."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 24, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 24))

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)


def test_module_tokens_need_a_pooling_and_then_match(tmp_path):
    torch.manual_seed(0)
    net = TokenNet().eval()
    prep = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    with pytest.raises(VitbenchError, match="pooling='cls'"):
        run(net, tmp_path, ["fewshot"], name="tokens", preprocess=prep)
    frame = run(net, tmp_path, ["fewshot", "finetune", "knn", "linear"], name="tokens", preprocess=prep,
                pooling="mean")
    for method in ("knn", "linear"):  # the other frozen-feature methods read the same cached features
        other = one(frame, method)
        assert other["model"] == "tokens" and 0.0 <= other["metrics"]["top1"] <= 1.0
    rec = one(frame, "fewshot")
    assert rec["model"] == "tokens" and rec["weights_id"].startswith("module:")
    assert "+mean" in rec["weights_id"] and ";mean=0.5,0.5,0.5" in rec["weights_id"]
    cached, direct = direct_features(rec, lambda x: net(x)[:, 1:].mean(1))
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert one(frame, "finetune")["params"]["steps"] == 2
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # fine-tuning trained a copy


def test_module_name_required_and_other_refusals(tmp_path):
    with pytest.raises(VitbenchError, match="name="):
        vitbench.evaluate(TokenNet(), suite="smoke", out=tmp_path)
    with pytest.raises(VitbenchError, match="mean"):
        vitbench.evaluate(TokenNet(), name="t", suite="smoke", out=tmp_path, pooling="cls",
                          preprocess={"size": 32})  # no normalisation known for a bare module
    with pytest.raises(VitbenchError, match="unknown field"):
        vitbench.evaluate(TokenNet(), name="t", suite="smoke", out=tmp_path, preprocess={"resolution": 32})
    with pytest.raises(VitbenchError, match="pooling"):
        vitbench.evaluate("vit_ti16", suite="smoke", out=tmp_path, pooling="cls")
    prep = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    with pytest.raises(VitbenchError, match="already a model spec"):
        vitbench.evaluate(TokenNet(), name="vit_ti16", suite="smoke", out=tmp_path, pooling="cls", preprocess=prep)


def test_timm_module_defaults_from_its_pretrained_cfg(tmp_path):
    """A timm module needs no preprocess: its pretrained_cfg gives mean/std; its pre-logits are the features."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, num_classes=0).eval()
    frame = run(net, tmp_path, ["fewshot"], name="timm-module")  # resolution and mean/std from the module
    rec = one(frame, "fewshot")
    assert rec["provenance"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert rec["provenance"]["preprocessing"]["size"] == 32
    assert "forward_head" in rec["provenance"]["weights"]["feature_output"]
    cached, direct = direct_features(rec, lambda x: net.forward_head(net.forward_features(x), pre_logits=True))
    np.testing.assert_allclose(cached, direct, rtol=1e-5, atol=1e-5)
