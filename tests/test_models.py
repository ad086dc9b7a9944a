"""Registry, the create() contract, zero head, parameter counts, names, offline errors (vitbench/models/)."""

from __future__ import annotations

import functools
import time

import pytest
import timm
import torch

from vitbench.errors import VitbenchError
from vitbench.models import MODELS, create, list_models, models_table, resolve_weights_id, state_dict_sha256
from vitbench.models import checkpoints as ckpt

PAPER_NAMES = ["vit_ti16", "vit_s16", "vit_b16", "vit_b32", "vit_l16", "vit_l32", "vit_h14", "bit_r50x1",
               "bit_r50x3", "bit_r101x1", "bit_r101x3", "bit_r152x2", "bit_r152x4"]

pytestmark = pytest.mark.usefixtures("plain_cpu_convs")


@functools.lru_cache(maxsize=None)
def _meta_model_stats(arch: str, num_classes: int = 0) -> tuple[int, int]:
    """(parameter count, num_features) of a timm model built on the meta device: no memory, no init."""
    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters()), model.num_features


def _meta_params(arch: str, num_classes: int = 0) -> int:
    return _meta_model_stats(arch, num_classes)[0]


def test_registry_lists_every_paper_model_with_metadata():
    assert [m.name for m in list_models()] == PAPER_NAMES
    table = models_table()
    assert list(table.index) == PAPER_NAMES
    for col in ("family", "patch_size", "layers", "hidden_size", "mlp_size", "heads", "params_backbone_m",
                "pretrain_data", "pretrain_images", "pretrain_compute", "normalization", "native_resolution",
                "default_weights"):
        assert col in table.columns
    b16 = MODELS["vit_b16"]
    assert (b16.layers, b16.hidden_size, b16.mlp_size, b16.heads, b16.patch_size) == (12, 768, 3072, 12, 16)
    assert b16.default_weights == "timm/vit_base_patch16_224.orig_in21k"
    assert table.loc["vit_l16", "pretrain_images"] == 14_000_000
    assert MODELS["bit_r152x4"].default_weights == "timm/resnetv2_152x4_bit.goog_in21k"


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_every_registry_model_matches_timm_and_resolves_its_weights_offline(name):
    """Each registry entry, without downloading: timm builds the architecture (on the meta device) with the
    recorded parameter count and width, the default weights tag exists in timm, and every weights choice
    resolves to its id."""
    m = MODELS[name]
    assert _meta_model_stats(m.timm_arch) == (m.params_backbone, m.hidden_size)
    assert f"{m.timm_arch}.{m.default_tag}" in timm.list_pretrained(f"{m.timm_arch}.*")
    assert resolve_weights_id(name) == m.default_weights
    assert resolve_weights_id(name, "none") == "none"
    for tag in m.torchvision_tags:
        assert resolve_weights_id(f"{name}.{tag}").startswith(f"torchvision/{m.torchvision_builder}.")
    assert m.pretrain_images > 0 and m.native_resolution == 224 and m.family in ("ViT", "BiT")


@pytest.mark.parametrize("name, paper, tol", [
    ("vit_b16", 86e6, 0.01),
    ("vit_h14", 632e6, 0.01),
    # timm's L/16 backbone is 303.3M, 1.2% under the 307M of Table 1; with the i21k checkpoints' pre_logits
    # representation layer (D x D + D, removed for transfer) it is 304.35M, within 1%.
    ("vit_l16", 307e6, 0.013),
])
def test_vit_parameter_counts_match_table_1(name, paper, tol):
    n = _meta_params(MODELS[name].timm_arch)
    assert abs(n - paper) / paper < tol
    d = MODELS[name].hidden_size
    assert abs(n + d * d + d - paper) / paper < 0.01


def test_bit_r152x4_parameter_count_matches_timm_reference():
    # timm's results CSV (huggingface/pytorch-image-models `results/`): resnetv2_152x4_bit with its 1000-class head, 936.53M
    n = _meta_params("resnetv2_152x4_bit", num_classes=1000)
    assert abs(n - 936.53e6) / 936.53e6 < 0.001


@pytest.mark.parametrize("img_size", [32, 64])
def test_create_random_vit_ti16_follows_the_contract(img_size):
    model = create("vit_ti16", weights="none", img_size=img_size)
    x = torch.randn(3, 3, img_size, img_size)
    with torch.no_grad():
        feats = model.forward_features(x)
        ref = model.trunk.forward_head(model.trunk.forward_features(x), pre_logits=True)
    assert feats.shape == (3, 192) and model.num_features == 192
    assert torch.equal(feats, ref)
    assert torch.equal(model(x), feats)  # no head: forward gives features
    assert not model.training and not model.trunk.training
    assert model.data_config["input_size"] == (3, img_size, img_size)
    assert model.data_config["mean"] == (0.5, 0.5, 0.5) and model.data_config["std"] == (0.5, 0.5, 0.5)
    assert {"interpolation", "crop_pct", "crop_mode"} <= set(model.data_config)
    info = model.weights_info
    assert info["weights_id"] == "none" and info["random_init"] is True
    assert info["weights_sha256"] == state_dict_sha256(model.trunk.state_dict())
    assert info["pos_embed_interpolation"] == "bilinear_align_corners" and info["img_size"] == img_size


def test_new_head_is_zero_and_logits_are_exactly_zero():
    model = create("vit_ti16", weights="none", img_size=32, num_classes=7)
    assert isinstance(model.head, torch.nn.Linear) and model.head.weight.shape == (7, 192)
    assert not model.head.weight.any() and not model.head.bias.any()
    with torch.no_grad():
        logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 7) and torch.count_nonzero(logits) == 0


def test_two_random_inits_get_different_hashes():
    torch.manual_seed(0)
    a = create("vit_ti16", weights="none", img_size=32)
    torch.manual_seed(1)
    b = create("vit_ti16", weights="none", img_size=32)
    assert a.weights_info["weights_sha256"] != b.weights_info["weights_sha256"]


def test_resolve_weights_id_without_loading():
    assert resolve_weights_id("vit_b16") == "timm/vit_base_patch16_224.orig_in21k"
    assert resolve_weights_id("vit_ti16") == "timm/vit_tiny_patch16_224.augreg_in21k"
    assert resolve_weights_id("vit_b16", "augreg_in21k") == "timm/vit_base_patch16_224.augreg_in21k"
    assert resolve_weights_id("vit_b16.augreg_in21k") == "timm/vit_base_patch16_224.augreg_in21k"
    assert resolve_weights_id("vit_b16.tv_in1k") == "torchvision/vit_b_16.IMAGENET1K_V1"
    assert resolve_weights_id("bit_r50x1") == "timm/resnetv2_50x1_bit.goog_in21k"
    assert resolve_weights_id("vit_b16", "none") == "none"
    assert resolve_weights_id("timm:convnext_tiny").startswith("timm/convnext_tiny.")
    assert resolve_weights_id("torchvision:resnet18") == "torchvision/resnet18.IMAGENET1K_V1"


def test_unknown_names_suggest_the_closest():
    with pytest.raises(VitbenchError, match="Did you mean 'vit_b16'"):
        create("vit_b61", weights="none")
    with pytest.raises(VitbenchError, match="weights tag for vit_b16 'augreg_in12k'.*augreg_in21k"):
        resolve_weights_id("vit_b16", "augreg_in12k")
    with pytest.raises(VitbenchError, match="unknown timm model"):
        resolve_weights_id("timm:vit_bse_patch16_224")
    with pytest.raises(VitbenchError, match="weights tag for timm:vit_base_patch16_224 'augreg_in22k'"):
        resolve_weights_id("timm:vit_base_patch16_224", "augreg_in22k")
    with pytest.raises(VitbenchError, match="weights of torchvision:resnet18 'IMAGENET1K_V9'"):
        resolve_weights_id("torchvision:resnet18.IMAGENET1K_V9")
    with pytest.raises(VitbenchError, match="unknown torchvision model 'resnet5'.*resnet50"):
        resolve_weights_id("torchvision:resnet5")
    with pytest.raises(VitbenchError, match="pos_interp"):
        create("vit_ti16", weights="none", pos_interp="nearest")


def test_offline_default_weights_fail_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, wid in [("vit_b16", "timm/vit_base_patch16_224.orig_in21k"),
                      ("bit_r50x1", "timm/resnetv2_50x1_bit.goog_in21k")]:
        start = time.perf_counter()
        with pytest.raises(VitbenchError) as err:
            create(name)
        assert time.perf_counter() - start < 5
        msg = str(err.value)
        assert "\n" not in msg and repr(name) in msg and wid in msg and "--weights PATH" in msg
        assert "Hugging Face cache" in msg


def test_unreachable_hub_fails_fast(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # closed port: refused at once
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(VitbenchError, match="cannot be reached.*--weights PATH"):
        ckpt.fetch_hub_file("timm/vit_base_patch16_224.orig_in21k", model_name="vit_b16",
                            weights_id="timm/vit_base_patch16_224.orig_in21k")
    assert time.perf_counter() - start < 5


def test_offline_torchvision_weights_name_the_torch_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(VitbenchError, match="torchvision/vit_b_16.IMAGENET1K_V1.*torch hub cache.*--weights PATH"):
        create("vit_b16.tv_in1k", img_size=32)
