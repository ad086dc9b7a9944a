"""The model zoo's registry: paper names (`vit_b16`, `bit_r50x1`, ...) with their metadata, and name parsing.

Owns: `ModelInfo` (one row of `vitbench ls models`), `list_models()`, `models_table()`, and
`parse_model_name()` which turns what a user typed (`vit_b16`, `vit_b16.augreg_in21k`, `timm:convnext_tiny`,
`torchvision:resnet50`) into a `ModelRef` naming the library, architecture and weights tag. Nothing here builds a
model or touches the network. Exercised by `vitbench ls models` and by every command that takes `--model`.

Facts carried over (docs/models.md): sizes (paper Table 1), pre-training data sizes (paper §4.1: ImageNet
1.3M, ImageNet-21k 14M, JFT 303M), pre-training compute (paper Tables 2 and 6),
checkpoint tags (docs/models.md#checkpoints), [-1, 1] input scaling (docs/models.md#checkpoints).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from vitbench.errors import VitbenchError, unknown_name

IN21K = "ImageNet-21k"
DATA_SIZES = {"ImageNet-1k": 1_280_000, IN21K: 14_000_000, "JFT-300M": 303_000_000}
DATA_ALIASES = {"ImageNet": "ImageNet-1k"}  # the paper's tables name ImageNet-1k pre-training "ImageNet"
# Pre-training compute in exaFLOPs, as the paper's Table 6 prints it (JFT-300M pre-training only; the paper gives
# no exaFLOPs for ImageNet / ImageNet-21k runs). (model, data) -> exaFLOPs; ViT-L/16 and ViT-H/14 use the
# 14-epoch runs, which are the ones behind Table 5's JFT columns (paper Tables 5 and 6; docs/models.md#sizes).
PRETRAIN_EXAFLOPS = {
    ("vit_b32", "JFT-300M"): 55.0, ("vit_b16", "JFT-300M"): 224.0, ("vit_l32", "JFT-300M"): 196.0,
    ("vit_l16", "JFT-300M"): 1567.0, ("vit_h14", "JFT-300M"): 4262.0,
    ("bit_r50x1", "JFT-300M"): 50.0, ("bit_r101x1", "JFT-300M"): 96.0, ("bit_r152x2", "JFT-300M"): 1126.0,
}
GOOGLE_NORM = "[-1, 1] (mean = std = 0.5)"  # docs/models.md#checkpoints
IMAGENET_NORM = "ImageNet mean/std"

# torchvision ViT builders and their weight enums (docs/models.md#checkpoints); tag -> enum member name.
TORCHVISION_VIT_TAGS = {
    "tv_in1k": "IMAGENET1K_V1",
    "tv_swag_e2e": "IMAGENET1K_SWAG_E2E_V1",
    "tv_swag_linear": "IMAGENET1K_SWAG_LINEAR_V1",
}


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one paper model. `params_backbone` is the measured timm count without any head."""

    name: str
    family: str  # "ViT" | "BiT"
    timm_arch: str
    default_tag: str
    patch_size: int | None
    layers: int
    hidden_size: int  # D, the pre-logits width
    mlp_size: int | None
    heads: int | None
    params_backbone: int
    params_paper: str  # what the source says, with where it comes from
    pretrain_data: str
    pretrain_compute: str
    normalization: str = GOOGLE_NORM
    native_resolution: int = 224
    torchvision_builder: str | None = None  # e.g. "vit_b_16": enables the `.tv_*` tags
    torchvision_tags: tuple[str, ...] = field(default=())

    @property
    def pretrain_images(self) -> int:
        return DATA_SIZES[self.pretrain_data]

    @property
    def default_weights(self) -> str:
        return f"timm/{self.timm_arch}.{self.default_tag}"


def _vit(name, arch, tag, patch, layers, d, mlp, heads, n, paper, compute, tv=None, tv_tags=()):
    return ModelInfo(name, "ViT", arch, tag, patch, layers, d, mlp, heads, n, paper, IN21K, compute,
                     torchvision_builder=tv, torchvision_tags=tuple(tv_tags))


def _bit(name, arch, layers, d, n, ref):
    return ModelInfo(name, "BiT", arch, "goog_in21k", None, layers, d, None, None, n, ref, IN21K,
                     "not published for BiT-M")


_ALL_TV = ("tv_in1k", "tv_swag_e2e", "tv_swag_linear")
MODELS: dict[str, ModelInfo] = {m.name: m for m in [
    # ViT-Ti/S are not in the ViT paper; their ImageNet-21k weights are AugReg's (docs/models.md#checkpoints).
    _vit("vit_ti16", "vit_tiny_patch16_224", "augreg_in21k", 16, 12, 192, 768, 3, 5_524_416,
         "not in ViT paper (AugReg)", "not published"),
    _vit("vit_s16", "vit_small_patch16_224", "augreg_in21k", 16, 12, 384, 1536, 6, 21_665_664,
         "not in ViT paper (AugReg)", "not published"),
    _vit("vit_b16", "vit_base_patch16_224", "orig_in21k", 16, 12, 768, 3072, 12, 85_798_656,
         "86M (Table 1)", "JFT 7ep: 224 exaFLOPs (Table 6)", "vit_b_16", _ALL_TV),
    _vit("vit_b32", "vit_base_patch32_224", "orig_in21k", 32, 12, 768, 3072, 12, 87_455_232,
         "86M for Base (Table 1)", "JFT 7ep: 55 exaFLOPs (Table 6)", "vit_b_32", ("tv_in1k",)),
    _vit("vit_l16", "vit_large_patch16_224", "orig_in21k", 16, 24, 1024, 4096, 16, 303_301_632,
         "307M (Table 1)", "I21k: 0.23k TPUv3-core-days (Table 2)", "vit_l_16", _ALL_TV),
    _vit("vit_l32", "vit_large_patch32_224", "orig_in21k", 32, 24, 1024, 4096, 16, 305_510_400,
         "307M for Large (Table 1)", "JFT 7ep: 196 exaFLOPs (Table 6)", "vit_l_32", ("tv_in1k",)),
    _vit("vit_h14", "vit_huge_patch14_224", "orig_in21k", 14, 32, 1280, 5120, 16, 630_764_800,
         "632M (Table 1)", "JFT 14ep: 4262 exaFLOPs (Table 6)", "vit_h_14", ("tv_swag_e2e", "tv_swag_linear")),
    # BiT-M (docs/models.md#checkpoints); reference counts are timm's results CSV, with a 1000-class head (§4.2).
    _bit("bit_r50x1", "resnetv2_50x1_bit", 50, 2048, 23_500_352, "25.55M incl. 1k head (timm CSV)"),
    _bit("bit_r50x3", "resnetv2_50x3_bit", 50, 6144, 211_174_080, "n/a"),
    _bit("bit_r101x1", "resnetv2_101x1_bit", 101, 2048, 42_492_480, "n/a"),
    _bit("bit_r101x3", "resnetv2_101x3_bit", 101, 6144, 381_789_888, "387.93M incl. 1k head (timm CSV)"),
    _bit("bit_r152x2", "resnetv2_152x2_bit", 152, 4096, 232_238_208, "236.34M incl. 1k head (timm CSV)"),
    _bit("bit_r152x4", "resnetv2_152x4_bit", 152, 8192, 928_340_224, "936.53M incl. 1k head (timm CSV)"),
]}


def pretrain_images(data: str | None) -> int | None:
    """Images in a pre-training dataset (paper §B.1), or None when unknown."""
    return DATA_SIZES.get(DATA_ALIASES.get(data or "", data or ""))


def pretrain_exaflops(model: str, data: str | None) -> float | None:
    """The paper's pre-training compute (Table 6, exaFLOPs) for `model` pre-trained on `data`, or None."""
    return PRETRAIN_EXAFLOPS.get((model, DATA_ALIASES.get(data or "", data or "")))


def list_models() -> list[ModelInfo]:
    """The paper models, in registry order."""
    return list(MODELS.values())


def models_table(timm_tags: bool = True):
    """A pandas DataFrame with one row per paper model (what `vitbench ls models` prints). `other_tags` lists
    the torchvision tags, plus every timm weights tag when `timm_tags` (which imports timm, hence torch)."""
    import pandas as pd

    rows = []
    for m in MODELS.values():
        row = {k: v for k, v in asdict(m).items() if k not in ("torchvision_builder", "torchvision_tags")}
        row["params_backbone_m"] = round(row.pop("params_backbone") / 1e6, 2)
        row["pretrain_images"] = m.pretrain_images
        row["default_weights"] = m.default_weights
        others = [t for t in available_tags(m.name) if t != m.default_tag] if timm_tags else []
        row["other_tags"] = ", ".join(list(m.torchvision_tags) + [t for t in others if not t.startswith("tv_")])
        rows.append(row)
    return pd.DataFrame(rows).set_index("name")


def available_tags(name: str) -> list[str]:
    """Weights tags valid after `name.` (timm pretrained tags of the architecture, plus torchvision ones)."""
    import timm

    info = MODELS[name]
    tags = [t.split(".", 1)[1] for t in timm.list_pretrained(info.timm_arch + ".*")
            if t.split(".", 1)[0] == info.timm_arch]
    return sorted(tags) + list(info.torchvision_tags)


@dataclass(frozen=True)
class ModelRef:
    """A parsed model name. `library` is "timm" or "torchvision"; `tag` None means the default weights."""

    name: str  # as the user wrote it
    library: str
    arch: str  # timm architecture or torchvision builder
    tag: str | None
    info: ModelInfo | None  # registry metadata for paper names

    @property
    def is_torchvision_weights(self) -> bool:
        return self.library == "torchvision" or (self.tag or "").startswith("tv_")


def parse_model_name(name: str) -> ModelRef:
    """Parse `vit_b16`, `vit_b16.<tag>`, `timm:<arch>[.<tag>]` or `torchvision:<builder>[.<ENUM>]`."""
    name = name.strip()
    if name.startswith("timm:"):
        import timm

        arch, _, tag = name[5:].partition(".")
        if not timm.is_model(arch):
            raise unknown_name("timm model", arch, timm.list_models(f"*{arch[:4]}*") or timm.list_models()[:40])
        if tag and not _timm_has_tag(arch, tag):
            tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{arch}.*") if t.split(".", 1)[0] == arch]
            raise unknown_name(f"weights tag for timm:{arch}", tag, tags or ["(none: use --weights PATH or none)"])
        return ModelRef(name, "timm", arch, tag or None, None)
    if name.startswith("torchvision:"):
        import torchvision

        arch, _, tag = name[12:].partition(".")
        valid = torchvision.models.list_models()
        if arch not in valid:
            raise unknown_name("torchvision model", arch, valid)
        return ModelRef(name, "torchvision", arch, tag or None, None)
    base, _, tag = name.partition(".")
    if base not in MODELS:
        raise unknown_name("model", base, list(MODELS) + ["timm:<name>", "torchvision:<name>", "hf:<repo or folder>",
                                                          "open_clip:<arch>/<tag>", "timm:hf-hub:<repo>"])
    info = MODELS[base]
    if tag:
        valid_tags = available_tags(base)
        if tag not in valid_tags:
            raise unknown_name(f"weights tag for {base}", tag, valid_tags)
        if tag.startswith("tv_"):
            return ModelRef(name, "timm", info.timm_arch, tag, info)
    return ModelRef(name, "timm", info.timm_arch, tag or None, info)


def patch_size_of(ref: ModelRef) -> int | None:
    """The ViT patch size of a parsed model (registry, or `patch<N>` / `_<b|l|h><N>` in the architecture name)."""
    if ref.info is not None:
        return ref.info.patch_size
    import re

    m = re.search(r"patch(\d+)", ref.arch) or (re.match(r"vit_[a-z]_(\d+)$", ref.arch) if ref.library == "torchvision" else None)
    return int(m.group(1)) if m else None


def check_img_size(name: str, img_size: int | None) -> None:
    """Refuse an input size a ViT cannot tile exactly (timm would silently drop the border pixels)."""
    if img_size is None:
        return
    from vitbench.models import sources

    if sources.kind_of(name) is not None:
        patch = sources.patch_size(name)
    else:
        patch = patch_size_of(parse_model_name(name))
    if patch and img_size % patch:
        raise VitbenchError(
            f"img_size {img_size} is not a multiple of {name}'s patch size {patch}; a ViT would drop the border "
            f"pixels. Use a multiple of {patch}, e.g. {max(patch, img_size // patch * patch)} or {(img_size // patch + 1) * patch}"
        )


def _timm_has_tag(arch: str, tag: str) -> bool:
    import timm.models

    try:
        return timm.models.get_pretrained_cfg(f"{arch}.{tag}") is not None
    except RuntimeError:  # timm raises for an unknown tag
        return False


def hub_weights_id(ref: ModelRef, tag: str | None = None) -> str:
    """The weights id of a hub checkpoint (`timm/<arch>.<tag>`, `torchvision/<builder>.<ENUM>`), no I/O."""
    tag = tag or ref.tag
    if ref.library == "torchvision":  # DEFAULT resolves to the concrete enum: it may change between versions
        return f"torchvision/{ref.arch}.{weights_enum(ref.arch, tag).name}"
    if tag and tag.startswith("tv_"):
        return f"torchvision/{ref.info.torchvision_builder}.{TORCHVISION_VIT_TAGS[tag]}"
    if tag is None:
        if ref.info is not None:
            tag = ref.info.default_tag
        else:
            import timm

            cfg = timm.models.get_pretrained_cfg(ref.arch)
            if cfg is None or not (cfg.hf_hub_id or cfg.url):
                raise VitbenchError(f"timm model {ref.arch!r} has no pretrained weights; "
                                    "pass --weights PATH (a local file) or --weights none")
            tag = cfg.tag
    return f"timm/{ref.arch}.{tag}"


def weights_enum(builder: str, enum_name: str | None):
    """The torchvision weights enum member (`DEFAULT` when `enum_name` is None)."""
    import torchvision

    try:
        enum_cls = torchvision.models.get_model_weights(builder)
    except (ValueError, KeyError):
        raise VitbenchError(f"torchvision model {builder!r} has no pretrained weights; pass --weights PATH "
                            "or --weights none") from None
    names = [e.name for e in enum_cls] + ["DEFAULT"]
    name = enum_name or "DEFAULT"
    if name not in names:
        raise unknown_name(f"weights of torchvision:{builder}", name, names)
    return enum_cls[name] if name != "DEFAULT" else enum_cls.DEFAULT
