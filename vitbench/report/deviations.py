"""How a recorded number's setting differs from the paper's, derived from the record itself.

Owns the paper's recipes (Dosovitskiy et al. 2021: Table 4 and §B.1.1 for fine-tuning, §4.1 for VTAB-1k,
§4.1 "Metrics" and big_vision `configs/common_fewshot.py` for few-shot) and `deviations(rec, task, source)`,
which lists every difference between what a record says was run (params, cell, provenance) and the recipe
behind the paper number it is compared with. Each deviation is (text, material); a delta to the paper is
labelled comparable only when no material deviation is present. Exercised by `vitbench report` ("Beside
the paper") and `vitbench compare --expected paper`.
"""

from __future__ import annotations

from typing import Any

VTAB_RECIPE = {"steps": 2500, "lr": 0.01, "lr_grid": None, "batch_size": 512, "img_size": 384}
# Table 4: steps and the learning-rate sweep (chosen on a dev split, §B.1.1) per dataset; all at 384 px.
TABLE4 = {
    "imagenet": (20000, (0.003, 0.01, 0.03, 0.06)), "imagenet_real": (20000, (0.003, 0.01, 0.03, 0.06)),
    "cifar10": (10000, (0.001, 0.003, 0.01, 0.03)), "cifar100_full": (10000, (0.001, 0.003, 0.01, 0.03)),
    "pets_full": (500, (0.001, 0.003, 0.01, 0.03)), "flowers102_full": (500, (0.001, 0.003, 0.01, 0.03)),
}
PAPER_WEIGHTS_TAG = ".orig_in21k"  # the paper's released ImageNet-21k checkpoints (timm ports, no head)
FEWSHOT_RECIPE = {"l2_select": "fixed", "l2": 1024.0, "precision": "float64", "img_size": 224}


def recipe(task: str, method: str, source: str) -> dict[str, Any]:
    """The setting of the paper number for `task` / `method` taken from table `source` (paper.csv)."""
    if method.startswith("fewshot"):
        return dict(FEWSHOT_RECIPE)
    if task in TABLE4:
        steps, grid = TABLE4[task]
        out = {"steps": steps, "lr": None, "lr_grid": grid, "batch_size": 512, "img_size": 384}
        if source.startswith("Table 2") and task.startswith("imagenet"):
            out.update(img_size=512, polyak=True)  # §4.1: 512 (L/16) / 518 (H/14) px with Polyak averaging
        return out
    return dict(VTAB_RECIPE)


def _img_size(rec: dict[str, Any]) -> Any:
    cell = rec.get("cell") or {}
    if cell.get("img_size") is not None:
        return cell["img_size"]
    return ((rec.get("provenance") or {}).get("weights") or {}).get("img_size")


def _data_deviations(rec: dict[str, Any]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    prov = rec.get("provenance") or {}
    for split in ("train", "test"):
        info = prov.get(split) or {}
        if not isinstance(info, dict):
            continue
        for sub in info.get("substitutions") or []:
            note = sub.get("note") if isinstance(sub, dict) else str(sub)
            out.append((f"substitute {split} split: {note}", True))
        if info.get("lossy"):
            out.append((f"lossy (JPEG) copy of the {split} data", True))
        if info.get("incomplete"):
            out.append((f"incomplete copy of the {split} split", True))
        if info.get("skipped") or info.get("corrupt_skipped"):
            out.append((f"unreadable {split} images skipped", True))
    return out


def _weights_deviations(rec: dict[str, Any], pretrain: str) -> list[tuple[str, bool]]:
    weights = (rec.get("provenance") or {}).get("weights") or {}
    wid = str(rec.get("weights_id") or weights.get("weights_id") or "")
    if rec.get("random_init") or weights.get("random_init"):
        return [("random-init weights (no pre-training)", True)]
    if pretrain == "ImageNet-21k" and PAPER_WEIGHTS_TAG not in wid:
        return [(f"weights {wid}: not the paper's released checkpoint", True)]
    if pretrain == "JFT-300M":
        return [(f"weights {wid}: JFT-300M checkpoints are not public; cannot be verified as the paper's", False)]
    if pretrain not in ("ImageNet-21k", "JFT-300M"):
        return [(f"weights {wid}: pre-trained on {pretrain or 'unknown data'}", True)]
    return []


def _finetune_deviations(rec: dict[str, Any], want: dict[str, Any]) -> list[tuple[str, bool]]:
    p = rec.get("params") or {}
    out: list[tuple[str, bool]] = []
    if p.get("steps") != want["steps"]:
        out.append((f"steps {p.get('steps')} (paper {want['steps']})", True))
    if p.get("batch_size") != want["batch_size"]:
        out.append((f"batch {p.get('batch_size')} (paper {want['batch_size']})", True))
    if want.get("lr_grid"):
        grid = tuple(float(v) for v in p.get("lr_grid") or [])
        if p.get("stage") != "final" or grid != tuple(want["lr_grid"]):
            lr = f"lr {p.get('lr'):g}" if isinstance(p.get("lr"), (int, float)) else f"lr grid {list(grid)}"
            out.append((f"{lr} (paper: chosen on a dev split from {list(want['lr_grid'])})", True))
    elif p.get("lr") != want["lr"]:
        out.append((f"lr {p.get('lr')} (paper {want['lr']})", True))
    if p.get("stage") == "select":
        out.append(("dev-split score of an lr-selection run, not a test result", True))
    if p.get("train_crop", "inception") != "inception" or p.get("hflip", True) is not True:
        out.append((f"augmentation: train_crop {p.get('train_crop')}, flip {p.get('hflip')} (paper: inception crop + flip)", True))
    for name, paper in (("momentum", 0.9), ("weight_decay", 0.0), ("grad_clip", 1.0)):
        if name in p and p[name] != paper:
            out.append((f"{name} {p[name]} (paper {paper})", True))
    if want.get("polyak"):
        out.append(("no Polyak averaging (paper: 0.9999)", True))
    return out


def _fewshot_deviations(rec: dict[str, Any], want: dict[str, Any]) -> list[tuple[str, bool]]:
    p = rec.get("params") or {}
    out: list[tuple[str, bool]] = []
    mode = p.get("l2_select", "fixed")
    if mode != want["l2_select"] or float(p.get("l2", want["l2"])) != want["l2"]:
        out.append((f"l2 selection {mode}, l2 {p.get('l2')} (big_vision: fixed 1024)", True))
    precision = p.get("precision", "float64")
    if precision != want["precision"]:
        out.append((f"precision {precision} (reference float64)", precision == "float32"))
    return out


def deviations(rec: dict[str, Any], task: str, method: str, source: str, pretrain: str) -> list[tuple[str, bool]]:
    """Every recorded difference between `rec` and the paper's setting for (task, method, source table)."""
    want = recipe(task, method, source)
    out = _weights_deviations(rec, pretrain)
    size = _img_size(rec)
    if size is not None and size != want["img_size"]:
        out.append((f"resolution {size} px (paper {want['img_size']})", True))
    if (rec.get("cell") or {}).get("pos_interp", "bilinear") != "bilinear":
        out.append((f"position embeddings resized {rec['cell']['pos_interp']} (Google: bilinear)", True))
    out += _finetune_deviations(rec, want) if method == "finetune" else _fewshot_deviations(rec, want)
    out += _data_deviations(rec)
    if rec.get("method") not in ("finetune", "fewshot"):
        out.append((f"method {rec.get('method')} is not the paper's", True))
    return out


def label(devs: list[tuple[str, bool]]) -> tuple[str, bool]:
    """('; '-joined deviations, comparable?) for a table cell."""
    return "; ".join(t for t, _ in devs), not any(m for _, m in devs)
