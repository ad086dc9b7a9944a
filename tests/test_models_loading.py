"""Loading weights through `create(..., weights=PATH)`: safetensors, Google npz, .pth, torchvision layouts,
position-embedding resizing, and bad files (vitbench/models/checkpoints.py, npz.py, posembed.py, tvnets.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from vitbench.errors import VitbenchError
from vitbench.models import create, resample_pos_embed, resolve_weights_id, state_dict_sha256
from vitbench.models.npz import timm_vit_to_npz
from vitbench.models.checkpoints import torchvision_vit_to_timm



pytestmark = pytest.mark.usefixtures("plain_cpu_convs")

def _random_timm(arch: str, **kwargs):
    """A timm model with random weights, built on meta and filled with normal noise (timm's own init is slow)."""
    with torch.device("meta"):
        model = timm.create_model(arch, **kwargs)
    model.to_empty(device="cpu")
    return _fill_random(model).eval()


def _timm_pre_logits(model, x):
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("name, arch, size", [
    ("vit_ti16", "vit_tiny_patch16_224", 32),
    ("vit_b16", "vit_base_patch16_224", 32),
    ("bit_r50x1", "resnetv2_50x1_bit", 32),
])
@pytest.mark.slow
def test_safetensors_file_gives_timm_pre_logits(tmp_path, name, arch, size):
    kwargs = {"img_size": size} if arch.startswith("vit") else {}
    src = _random_timm(arch, num_classes=21843 if name != "vit_b16" else 0, **kwargs)
    path = tmp_path / f"{name}.safetensors"
    save_file(src.state_dict(), str(path))
    model = create(name, weights=str(path), img_size=size, num_classes=3)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = model.forward_features(x)
        assert torch.count_nonzero(model.head(ours)) == 0  # zero head on every family
    assert (ours - _timm_pre_logits(src, x)).abs().max().item() < 1e-5
    assert model.num_features == src.num_features
    assert (info_pos := model.weights_info["pos_embed_interpolation"]) == (
        None if name.startswith("bit") else "bilinear_align_corners"), info_pos
    info = model.weights_info
    assert info["weights_id"] == resolve_weights_id(name, str(path)) and info["weights_id"].startswith("file:")
    assert info["random_init"] is False and info["source"] == str(path.resolve())
    backbone_sd = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    assert info["weights_sha256"] == state_dict_sha256(backbone_sd)


def _vit_ti(size=32, depth=2):
    return _random_timm("vit_tiny_patch16_224", num_classes=0, img_size=size, depth=depth)


def _fill_random(model):
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def test_google_npz_round_trip(tmp_path):
    src = _vit_ti(size=32, depth=12)
    arrays = timm_vit_to_npz(src.state_dict(), num_heads=3)
    # the original i21k files also carry pre_logits and a zeroed 21843-class head (docs/models.md#checkpoints)
    arrays["pre_logits/kernel"] = np.ones((192, 192), np.float32)
    arrays["pre_logits/bias"] = np.ones(192, np.float32)
    arrays["head/kernel"] = np.zeros((192, 21843), np.float32)
    arrays["head/bias"] = np.zeros(21843, np.float32)
    path = tmp_path / "ViT-Ti_16.npz"
    np.savez(path, **arrays)
    model = create("vit_ti16", weights=path, img_size=32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model.forward_features(x) - _timm_pre_logits(src, x)).abs().max().item() < 1e-5
        # the representation layer is kept beside the trunk: big_vision's few-shot features are tanh(Dense(cls))
        assert model.set_feature_layer("pre_logits") == "representation"
        rep = torch.tanh(_timm_pre_logits(src, x) @ torch.ones(192, 192) + 1.0)
        assert (model.forward_features(x) - rep).abs().max().item() < 1e-5
        assert model.set_feature_layer("cls") == "cls"
    representation = {"representation.weight": torch.ones(192, 192), "representation.bias": torch.ones(192)}
    assert model.weights_info["weights_sha256"] == state_dict_sha256({**src.state_dict(), **representation})
    assert model.weights_info["representation_layer"] == {"in": 192, "out": 192}
    # same file under the old vit_jax training prefix
    np.savez(tmp_path / "target.npz", **{f"opt/target/{k}": v for k, v in arrays.items()})
    again = create("vit_ti16", weights=tmp_path / "target.npz", img_size=32)
    assert again.weights_info["weights_sha256"] == model.weights_info["weights_sha256"]


def test_big_vision_npz_layout(tmp_path):
    src = _vit_ti(size=32, depth=12)
    with torch.no_grad():
        src.pos_embed[:, 0] = 0  # big_vision adds no position embedding to the class token
    rename = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
              "MlpBlock_3": "MlpBlock_0"}
    arrays = {}
    for key, value in timm_vit_to_npz(src.state_dict(), num_heads=3).items():
        if key == "Transformer/posembed_input/pos_embedding":
            key, value = "pos_embedding", value[:, 1:]
        for old, new in rename.items():
            key = key.replace(old, new)
        arrays[f"params/img/{key}"] = value
    np.savez(tmp_path / "bv.npz", **arrays)
    model = create("vit_ti16", weights=tmp_path / "bv.npz", img_size=32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model.forward_features(x) - _timm_pre_logits(src, x)).abs().max().item() < 1e-5


def test_pth_state_dict_with_wrapper_and_module_prefix(tmp_path):
    src = _random_timm("vit_tiny_patch16_224", num_classes=10, img_size=32)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    model = create("vit_ti16", weights=path, img_size=32, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model.forward_features(x) - _timm_pre_logits(src, x)).abs().max().item() < 1e-5
        assert torch.count_nonzero(model(x)) == 0


def _bilinear_align_corners_numpy(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Independent reference: separable linear interpolation, sample i at i * (n_in - 1) / (n_out - 1)."""
    def axis(a, n_out, ax):
        n_in = a.shape[ax]
        pos = np.arange(n_out) * (n_in - 1) / (n_out - 1)
        lo = np.floor(pos).astype(int).clip(0, n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (pos - lo).reshape([-1 if i == ax else 1 for i in range(a.ndim)])
        return np.take(a, lo, axis=ax) * (1 - frac) + np.take(a, hi, axis=ax) * frac
    return axis(axis(grid, out_h, 0), out_w, 1)


def test_pos_embed_same_size_is_identity():
    pe = torch.randn(1, 1 + 14 * 14, 8)
    assert resample_pos_embed(pe, (14, 14)) is pe


def test_pos_embed_224_to_384_bilinear_matches_independent_resize():
    pe = torch.randn(1, 1 + 14 * 14, 16, dtype=torch.float64)
    out = resample_pos_embed(pe, (24, 24))
    assert out.shape == (1, 1 + 24 * 24, 16)
    assert torch.equal(out[:, :1], pe[:, :1])  # class token kept apart
    ref = _bilinear_align_corners_numpy(pe[0, 1:].reshape(14, 14, 16).numpy(), 24, 24)
    assert np.abs(out[0, 1:].reshape(24, 24, 16).numpy() - ref).max() < 1e-5
    scipy_zoom = pytest.importorskip("scipy.ndimage").zoom  # Google's own call (docs/finetune.md#vit_jax)
    zoomed = scipy_zoom(pe[0, 1:].reshape(14, 14, 16).numpy(), (24 / 14, 24 / 14, 1), order=1)
    assert np.abs(out[0, 1:].reshape(24, 24, 16).numpy() - zoomed).max() < 1e-5


def test_pos_embed_bicubic_option_matches_timm():
    from timm.layers import resample_abs_pos_embed

    pe = torch.randn(1, 1 + 14 * 14, 16)
    ours = resample_pos_embed(pe, (24, 24), pos_interp="bicubic")
    theirs = resample_abs_pos_embed(pe, (24, 24), num_prefix_tokens=1, interpolation="bicubic", antialias=True)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(ours, resample_pos_embed(pe, (24, 24)), atol=1e-3)


@pytest.mark.parametrize("pos_interp, recorded", [("bilinear", "bilinear_align_corners"), ("bicubic", "bicubic")])
def test_create_at_new_resolution_resizes_checkpoint_pos_embed(tmp_path, pos_interp, recorded):
    src = _vit_ti(size=32, depth=12)
    path = tmp_path / "ti32.safetensors"
    save_file(src.state_dict(), str(path))
    model = create("vit_ti16", weights=str(path), img_size=64, pos_interp=pos_interp)
    expected = resample_pos_embed(src.pos_embed.detach(), (4, 4), pos_interp=pos_interp)
    assert torch.equal(model.trunk.pos_embed.detach(), expected)
    assert model.weights_info["pos_embed_interpolation"] == recorded and model.weights_info["img_size"] == 64
    assert model.data_config["input_size"] == (3, 64, 64)
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 192)


def test_torchvision_vit_weights_convert_to_timm_layout():
    from torchvision.models.vision_transformer import VisionTransformer

    tv = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=3, hidden_dim=192, mlp_dim=768)
    _fill_random(tv).eval()
    timm_vit = _vit_ti(size=32, depth=2)
    sd = torchvision_vit_to_timm(tv.state_dict())
    timm_vit.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
    tv.heads = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (tv(x) - _timm_pre_logits(timm_vit, x)).abs().max().item() < 1e-4


def test_torchvision_passthrough_with_local_weights(tmp_path):
    import torchvision

    src = torchvision.models.resnet18().eval()
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    model = create("torchvision:resnet18", weights=path, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    src.fc = torch.nn.Identity()
    with torch.no_grad():
        assert (model.forward_features(x) - src(x)).abs().max().item() < 1e-5
        assert torch.count_nonzero(model(x)) == 0
    assert model.num_features == 512 and model.weights_info["weights_id"].startswith("file:")
    small = create("torchvision:mobilenet_v3_small", weights="none")  # classifier is a Sequential
    torch.backends.mkldnn.enabled = True  # depthwise convs need oneDNN to be fast (the fixture restores it)
    with torch.no_grad():
        assert small.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, small.num_features)
    torch.backends.mkldnn.enabled = False


def test_torchvision_vit_classifier_removal_gives_class_token():
    from torchvision.models.vision_transformer import VisionTransformer

    from vitbench.models.tvnets import _strip_classifier

    tv = VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=3, hidden_dim=192,
                           mlp_dim=768, representation_size=64).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = tv.encoder(torch.cat([tv.class_token.expand(2, -1, -1), tv._process_input(x)], dim=1))
        assert _strip_classifier(tv) == ("heads", 192)  # pre_logits (representation) layer dropped too
        assert torch.allclose(tv(x), tokens[:, 0])


def test_timm_passthrough_random():
    model = create("timm:resnet18", weights="none", img_size=48, num_classes=2)
    assert model.forward_features(torch.randn(1, 3, 48, 48)).shape == (1, 512)
    assert model.data_config["input_size"] == (3, 48, 48) and model.weights_info["random_init"]


def test_wrong_architecture_names_the_mismatching_keys(tmp_path):
    path = tmp_path / "ti.safetensors"
    save_file(_vit_ti(size=32, depth=12).state_dict(), str(path))
    with pytest.raises(VitbenchError, match=r"do not fit model 'vit_s16'.*shape mismatches \(.*cls_token") as err:
        create("vit_s16", weights=str(path), img_size=32)
    assert "\n" not in str(err.value)
    bit = tmp_path / "bit.safetensors"
    save_file(_random_timm("resnetv2_50x1_bit", num_classes=0).state_dict(), str(bit))
    with pytest.raises(VitbenchError, match=r"missing \(.*unexpected \(.*stages\.0"):
        create("vit_ti16", weights=str(bit), img_size=32)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pth"])
def test_truncated_files_give_one_line(tmp_path, suffix):
    src = _vit_ti(size=32, depth=12)
    full = tmp_path / f"full{suffix}"
    if suffix == ".safetensors":
        save_file(src.state_dict(), str(full))
    elif suffix == ".npz":
        np.savez(full, **timm_vit_to_npz(src.state_dict(), num_heads=3))
    else:
        torch.save(src.state_dict(), full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VitbenchError, match="truncated or corrupt") as err:
        create("vit_ti16", weights=str(cut), img_size=32)
    assert "\n" not in str(err.value)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned_marker",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Exploit()}, f, protocol=2)
    evil_zip = tmp_path / "evil2.pt"
    torch.save({"w": torch.zeros(1), "x": _Exploit()}, evil_zip)
    for p in (path, evil_zip):
        with pytest.raises(VitbenchError, match="refusing to load"):
            create("vit_ti16", weights=str(p), img_size=32)
    assert not (tmp_path / "pwned_marker").exists()


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(VitbenchError, match="does not exist"):
        create("vit_ti16", weights=str(tmp_path / "nope.safetensors"))
    odd = tmp_path / "w.h5"
    odd.write_bytes(b"x")
    with pytest.raises(VitbenchError, match="unsupported weights file type"):
        create("vit_ti16", weights=str(odd))


def test_default_weights_load_from_the_local_hub_cache(tmp_path, monkeypatch):
    """The hub path end to end, offline: a file laid out as huggingface_hub caches it is found and loaded."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--timm--vit_tiny_patch16_224.augreg_in21k"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    src = _random_timm("vit_tiny_patch16_224", num_classes=21843)  # 224 px: 14 x 14 grid
    save_file(src.state_dict(), str(snapshot / "model.safetensors"))
    model = create("vit_ti16", img_size=32)
    info = model.weights_info
    assert info["weights_id"] == "timm/vit_tiny_patch16_224.augreg_in21k" and info["random_init"] is False
    assert info["source"] == "hub:timm/vit_tiny_patch16_224.augreg_in21k"
    assert info["pretrained_data"] == "ImageNet-21k"
    expected = resample_pos_embed(src.pos_embed.detach(), (2, 2))
    assert torch.equal(model.trunk.pos_embed.detach(), expected)
    assert torch.equal(model.trunk.blocks[3].attn.qkv.weight, src.blocks[3].attn.qkv.weight)


def _timm_bit_to_npz(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Export a timm ResNetV2 (BiT) state dict under big_transfer's npz names (inverse of timm's loader)."""
    def arr(t):
        a = t.detach().numpy()
        return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a  # OIHW -> HWIO

    names = {"conv1.weight": "a/standardized_conv2d/kernel", "conv2.weight": "b/standardized_conv2d/kernel",
             "conv3.weight": "c/standardized_conv2d/kernel", "downsample.conv.weight": "a/proj/standardized_conv2d/kernel"}
    for n, unit in ((1, "a"), (2, "b"), (3, "c")):
        names[f"norm{n}.weight"], names[f"norm{n}.bias"] = f"{unit}/group_norm/gamma", f"{unit}/group_norm/beta"
    out = {"resnet/root_block/standardized_conv2d/kernel": arr(sd["stem.conv.weight"]),
           "resnet/group_norm/gamma": arr(sd["norm.weight"]), "resnet/group_norm/beta": arr(sd["norm.bias"]),
           "resnet/head/conv2d/kernel": np.zeros((1, 1, 2048, 10), np.float32),
           "resnet/head/conv2d/bias": np.zeros(10, np.float32)}
    for key, value in sd.items():
        if key.startswith("stages."):
            _, i, _, j, rest = key.split(".", 4)
            out[f"resnet/block{int(i) + 1}/unit{int(j) + 1:02d}/{names[rest]}"] = arr(value)
    return out


def test_bit_npz_loads_through_timms_loader(tmp_path):
    src = _random_timm("resnetv2_50x1_bit", num_classes=0)
    np.savez(tmp_path / "BiT-M-R50x1.npz", **_timm_bit_to_npz(src.state_dict()))
    model = create("bit_r50x1", weights=tmp_path / "BiT-M-R50x1.npz", img_size=32)
    # identical weights tensor by tensor (hash over names, shapes and bytes): outputs are then timm's own
    assert model.weights_info["weights_sha256"] == state_dict_sha256(src.state_dict())
    with pytest.raises(VitbenchError, match="BiT .*checkpoint but model 'vit_ti16' is not"):
        create("vit_ti16", weights=tmp_path / "BiT-M-R50x1.npz", img_size=32)
