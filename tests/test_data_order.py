"""Slices on sources that are not in TFDS order: the fixed class-mixing order and the class-coverage guard.

Layouts are written as empty files (labels and slices need no pixels), shaped like the real ones: UC Merced's
`Images/<class>/<class>NN.tif`, an ImageNet `train/<wnid>/` tree and torchvision's OxfordIIITPet lists, which are
grouped by breed."""

import dataclasses

import numpy as np
import pytest

from vitbench.data import load_split
from vitbench.data.order import check_class_coverage, hashed_permutation, missing_classes
from vitbench.errors import VitbenchError
from vitbench.suites import SourceSpec, TaskSpec, load_suite


def _tree(root, split, classes, per_class, ext=".tif"):
    for c in classes:
        d = root / split / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (d / f"{c}{i:02d}{ext}").write_bytes(b"")


def test_uc_merced_layout_every_class_on_both_sides(tmp_path):
    classes = ["agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential",
               "forest", "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark",
               "overpass", "parkinglot", "river", "runway", "sparseresidential", "storagetanks", "tenniscourt"]
    _tree(tmp_path / "UCMerced_LandUse", "Images", classes, 100)
    task = load_suite("fewshot").task("uc_merced")
    train, test = (load_split(task, s, data_root=tmp_path) for s in ("train", "test"))
    assert (len(train), len(test)) == (1000, 1100)
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(21))
    assert train.provenance["order"]["kind"] == "hashed"
    assert check_class_coverage(task, "train", train.labels, "test", test.labels)["eval_classes_missing_from_train"] == 0
    # train and test are disjoint and together the whole folder
    assert not set(train.keys) & set(test.keys) and len(set(train.keys) | set(test.keys)) == 2100


def test_order_independent_of_listing_and_stable(tmp_path):
    keys = [f"c{c}/img{i}.jpg" for c in range(5) for i in range(20)]
    perm = hashed_permutation("train", keys)
    assert sorted(perm.tolist()) == list(range(100))
    # the same examples listed in another order land in the same positions
    shuffled = list(np.random.default_rng(0).permutation(keys))
    again = hashed_permutation("train", shuffled)
    assert [keys[i] for i in perm] == [shuffled[i] for i in again]
    # a prefix of the order is class-mixed
    assert len({keys[i].split("/")[0] for i in perm[:20]}) == 5


def test_imagenet_folder_prefix_and_dev_split(tmp_path):
    wnids = [f"n{k:08d}" for k in range(200)]
    _tree(tmp_path / "imagenet", "train", wnids, 10, ext=".JPEG")
    splits = {"train": "train", "minitrain": "train[:99%]", "val": "train[99%:]", "fewshot_train": "train[:5%]"}
    task = TaskSpec(name="imagenet", num_classes=200, sources=(SourceSpec("imagefolder", "imagenet"),), splits=splits)
    few = load_split(task, "fewshot_train", data_root=tmp_path)
    assert len(few) == 100 and len(set(few.labels.tolist())) > 60  # class-sorted order gave 10 classes
    mini, val = (load_split(task, s, data_root=tmp_path) for s in ("minitrain", "val"))
    assert (len(mini), len(val)) == (1980, 20) and len(set(val.labels.tolist())) > 10
    check_class_coverage(task, "minitrain", mini.labels, "val", val.labels)  # no class of val missing
    # the source's own (class-sorted) order: the dev split is the last two classes, which minitrain lacks
    native = dataclasses.replace(task, sources=(SourceSpec("imagefolder", "imagenet", {"order": "native"}),))
    mini_n, val_n = (load_split(native, s, data_root=tmp_path) for s in ("minitrain", "val"))
    assert set(val_n.labels.tolist()) == {198, 199} and missing_classes(mini_n.labels, val_n.labels) == [198, 199]
    with pytest.raises(VitbenchError) as e:
        check_class_coverage(native, "minitrain", mini_n.labels, "val", val_n.labels)
    msg = str(e.value)
    assert "\n" not in msg and "'imagenet'" in msg and "'val'" in msg and "'minitrain'" in msg and "198, 199" in msg
    assert 'order = "hashed"' in msg and "allow_missing_classes" in msg


def test_pets_torchvision_grouped_list(tmp_path):
    """torchvision's OxfordIIITPet reads annotations/trainval.txt, which is grouped by breed."""
    base = tmp_path / "torchvision" / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    lines = []
    for breed in range(37):
        for i in range(1, 101):
            name = f"Breed{breed:02d}_{i}"
            (base / "images" / f"{name}.jpg").write_bytes(b"")
            lines.append(f"{name} {breed + 1} {1 + breed % 2} 1")
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines) + "\n")
    (base / "annotations" / "test.txt").write_text("\n".join(lines[:74]) + "\n")
    paper = load_suite("paper").task("pets_full")
    tv = next(s for s in paper.sources if s.kind == "torchvision")
    task = dataclasses.replace(paper, sources=(tv,))
    mini, val = (load_split(task, s, data_root=tmp_path) for s in ("minitrain", "val"))
    assert (len(mini), len(val)) == (3330, 370)
    assert set(mini.labels.tolist()) == set(val.labels.tolist()) == set(range(37))
    assert val.provenance["order"]["kind"] == "hashed" and mini.fingerprint != val.fingerprint


def test_native_order_sources_unchanged():
    """Sources in TFDS-like order (here: digits) keep their own order and fingerprint payload."""
    task = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:100]"})
    split = load_split(task, "train")
    from sklearn.datasets import load_digits

    assert split.labels.tolist() == load_digits().target[:100].tolist()
    assert split.provenance["order"]["kind"] == "native"


def test_guard_acceptance_and_bad_order_option(tmp_path):
    ok = TaskSpec(name="t", num_classes=3, sources=(), splits={}, options={"allow_missing_classes": "VTAB-1k prefix"})
    rec = check_class_coverage(ok, "train", np.array([0, 1]), "test", np.array([0, 1, 2]))
    assert rec["accepted_because"] == "VTAB-1k prefix" and rec["missing_classes"] == [2]
    _tree(tmp_path / "f", "train", ["a", "b"], 2)
    bad = TaskSpec(name="t", num_classes=2, sources=(SourceSpec("imagefolder", str(tmp_path / "f"), {"order": "random"}),),
                   splits={"train": "train"})
    with pytest.raises(VitbenchError, match="order = 'random'"):
        load_split(bad, "train")


def test_prepared_copy_without_order_is_stale():
    from vitbench.data.prepared import entry_matches_task

    task = TaskSpec(name="t", num_classes=2, sources=(), splits={"train": "train[:10]"})
    prov = {"paper_expression": "train[:10]", "num_classes": 2, "source": {"kind": "imagefolder"}}
    assert not entry_matches_task({"provenance": prov}, task, "train")
    assert entry_matches_task({"provenance": {**prov, "order": {"kind": "hashed"}}}, task, "train")
    assert entry_matches_task({"provenance": {**prov, "source": {"kind": "wds"}}}, task, "train")


def test_suite_validates_order_option():
    from vitbench.suites import parse_suite

    raw = {"tasks": [{"name": "t", "num_classes": 2, "splits": {"train": "train", "test": "test"},
                      "source": {"kind": "imagefolder", "id": "x", "order": "shuffled"}}]}
    with pytest.raises(VitbenchError, match="field 'order' must be 'native' or 'hashed'"):
        parse_suite(raw, "s.toml")
    raw["tasks"][0]["source"]["order"] = "native"
    assert parse_suite(raw, "s.toml").tasks[0].sources[0].options["order"] == "native"


def test_prepared_copy_of_a_hashed_source_keeps_its_order(tmp_path):
    from PIL import Image

    from vitbench.data.prepare import prepare_task, split_info

    for c in ("a", "b", "c"):
        (tmp_path / "src" / "all" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(tmp_path / "src" / "all" / c / f"{c}{i}.png")
    task = TaskSpec(name="folder3", num_classes=3, sources=(SourceSpec("imagefolder", str(tmp_path / "src")),),
                    splits={"train": "all[:9]", "test": "all[9:]"})
    direct = load_split(task, "train", data_root=tmp_path / "root")
    prepare_task(task, tmp_path / "root", ["train", "test"])
    prepared = load_split(task, "train", data_root=tmp_path / "root")
    assert "prepared" in prepared.provenance and prepared.keys == direct.keys
    assert prepared.labels.tolist() == direct.labels.tolist() and prepared.provenance["order"]["kind"] == "hashed"
    assert split_info(task, tmp_path / "root", "train")["order"] == "hashed"
