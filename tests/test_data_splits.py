"""Slice arithmetic: parse_split syntax, TFDS percent rounding, and all 19 VTAB tasks vs docs/vtab.md#splits."""

import pytest

from vitbench.data.splits import parse_split, resolve_split
from vitbench.errors import VitbenchError
from vitbench.suites import load_suite

# TFDS split sizes per VTAB task's source (docs/vtab.md#tasks, #splits).
TFDS_SIZES = {
    "caltech101": {"train": 3060, "test": 6084},
    "cifar100": {"train": 50000, "test": 10000},
    "dtd": {"train": 1880, "validation": 1880, "test": 1880},
    "flowers102": {"train": 1020, "validation": 1020, "test": 6149},
    "pets": {"train": 3680, "test": 3669},
    "svhn": {"train": 73257, "test": 26032},
    "sun397": {"train": 76128, "validation": 10875, "test": 21750},
    "patch_camelyon": {"train": 262144, "validation": 32768, "test": 32768},
    "eurosat": {"train": 27000},
    "resisc45": {"train": 31500},
    "retinopathy": {"train": 35126, "validation": 10906, "test": 42670},
    "clevr_count": {"train": 70000, "validation": 15000, "test": 15000},
    "clevr_dist": {"train": 70000, "validation": 15000, "test": 15000},
    "dmlab": {"train": 65550, "validation": 22628, "test": 22735},
    "kitti_dist": {"train": 6347, "validation": 423, "test": 711},
    "dsprites_loc": {"train": 737280},
    "dsprites_ori": {"train": 737280},
    "smallnorb_azi": {"train": 24300, "test": 24300},
    "smallnorb_ele": {"train": 24300, "test": 24300},
}
# (full train, val, test sizes) and val200's first range, from the §2 table.
EXPECTED = {
    "caltech101": ((2754, 306, 6084), ("train", 2754, 2954)),
    "cifar100": ((45000, 5000, 10000), ("train", 45000, 45200)),
    "dtd": ((1880, 1880, 1880), ("validation", 0, 200)),
    "flowers102": ((1020, 1020, 6149), ("validation", 0, 200)),
    "pets": ((2944, 736, 3669), ("train", 2944, 3144)),
    "svhn": ((65931, 7326, 26032), ("train", 65931, 66131)),
    "sun397": ((76128, 10875, 21750), ("validation", 0, 200)),
    "patch_camelyon": ((262144, 32768, 32768), ("validation", 0, 200)),
    "eurosat": ((16200, 5400, 5400), ("train", 16200, 16400)),
    "resisc45": ((18900, 6300, 6300), ("train", 18900, 19100)),
    "retinopathy": ((35126, 10906, 42670), ("validation", 0, 200)),
    "clevr_count": ((63000, 7000, 15000), ("train", 63000, 63200)),
    "clevr_dist": ((63000, 7000, 15000), ("train", 63000, 63200)),
    "dmlab": ((65550, 22628, 22735), ("validation", 0, 200)),
    "kitti_dist": ((6347, 423, 711), ("validation", 0, 200)),
    "dsprites_loc": ((589824, 73728, 73728), ("train", 589824, 590024)),
    "dsprites_ori": ((589824, 73728, 73728), ("train", 589824, 590024)),
    "smallnorb_azi": ((24300, 12150, 12150), ("test", 0, 200)),
    "smallnorb_ele": ((24300, 12150, 12150), ("test", 0, 200)),
}


def _n(ranges):
    return sum(len(r) for r in ranges)


def test_parse_and_resolve_basic():
    expr = parse_split("train[:800]+train[2754:2954]")
    assert [str(t) for t in expr.terms] == ["train[:800]", "train[2754:2954]"]
    ranges = resolve_split(expr, {"train": 3060})
    assert [(r.split, r.start, r.stop) for r in ranges] == [("train", 0, 800), ("train", 2754, 2954)]
    assert [(r.start, r.stop) for r in resolve_split("test[50%:]", {"test": 24300})] == [(12150, 24300)]
    assert [(r.start, r.stop) for r in resolve_split("train[-200:]", {"train": 1000})] == [(800, 1000)]
    assert [(r.start, r.stop) for r in resolve_split("train[:-10%]", {"train": 1000})] == [(0, 900)]
    # TFDS "closest" rounding of percent boundaries: 33% of 10 -> 3.3 -> 3; 35% of 10 -> 3.5 -> 4 (round half even)
    assert resolve_split("a[:33%]", {"a": 10})[0].stop == 3
    assert resolve_split("a[:99%]", {"a": 1281167})[0].stop == 1268355


@pytest.mark.parametrize("bad", ["", "train[", "train[1]", "train[a:b]", "train[:800]+", "tr ain", "train[1:2:3]"])
def test_bad_syntax_raises_one_line(bad):
    with pytest.raises(VitbenchError) as e:
        parse_split(bad)
    assert "\n" not in str(e.value)


def test_unknown_source_split_names_choices():
    with pytest.raises(VitbenchError, match="validation"):
        resolve_split("validation[:200]", {"train": 10, "test": 5})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vtab_task_slices_match_reference(name):
    task = load_suite("vtab").task(name)
    sizes = TFDS_SIZES[name]
    (n_train, n_val, n_test), val200 = EXPECTED[name]
    resolved = {s: resolve_split(e, sizes) for s, e in task.splits.items()}
    assert (_n(resolved["train"]), _n(resolved["val"]), _n(resolved["test"])) == (n_train, n_val, n_test)
    assert [(r.split, r.start, r.stop) for r in resolved["train800"]] == [("train", 0, 800)]
    assert [(r.split, r.start, r.stop) for r in resolved["val200"]] == [val200]
    assert [(r.split, r.start, r.stop) for r in resolved["train800val200"]] == [("train", 0, 800), val200]
    assert (task.train_split, task.val_split, task.test_split) == ("train800val200", "val200", "test")
    # val200 is disjoint from train800 and from the test split
    t800 = {(r.split, i) for r in resolved["train800"] for i in range(r.start, r.stop)}
    v200 = {(r.split, i) for r in resolved["val200"] for i in range(r.start, r.stop)}
    test = {(r.split, i) for r in resolved["test"] for i in range(r.start, r.stop)}
    assert not t800 & v200 and not v200 & test and not t800 & test


def test_vtab_groups_and_classes():
    suite = load_suite("vtab")
    groups = [t.group for t in suite.tasks]
    assert (groups.count("natural"), groups.count("specialized"), groups.count("structured")) == (7, 4, 8)
    classes = {t.name: t.num_classes for t in suite.tasks}
    assert classes["caltech101"] == 102 and classes["clevr_count"] == 8 and classes["clevr_dist"] == 6
    assert classes["kitti_dist"] == 4 and classes["dsprites_ori"] == 16 and classes["smallnorb_azi"] == 18
    clevr = suite.task("clevr_count")
    assert clevr.splits["test"] == "validation"  # CLEVR's VTAB test is TFDS validation


def test_other_suites_load():
    assert {t.name for t in load_suite("fewshot").tasks} >= {"caltech101_full", "cars", "cifar100_full", "dtd_full", "pets_full", "uc_merced"}
    paper = load_suite("paper")
    assert {"imagenet", "imagenet_real", "cifar10", "cifar100_full", "pets_full", "flowers102_full"} <= {t.name for t in paper.tasks}
    assert paper.task("imagenet_real").metric == "real"
    assert len(paper.tasks) == 6 + 19


def test_absolute_slice_past_the_end_is_refused():
    from vitbench.data.splits import resolve_split

    # a partial mirror (e.g. 51,600 CLEVR train rows instead of 70,000) must not silently shrink val200
    with pytest.raises(VitbenchError, match=r"needs at least 63200 rows but source split 'train' has 51600"):
        resolve_split("train[:800]+train[63000:63200]", {"train": 51600})
    assert [len(r) for r in resolve_split("train[-200:]+test[50%:]", {"train": 1000, "test": 10})] == [200, 5]
