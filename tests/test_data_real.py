"""ReaL metric: toy case with empty sets, and the real `real.json` (50,000 entries, 3,163 empty; docs/real.md)."""

import os
from pathlib import Path

import numpy as np
import pytest

from vitbench.data.real import label_sets_for, load_real_labels, real_accuracy, real_topk_accuracy
from vitbench.errors import VitbenchError

# The real label file is not in the repository; point VITBENCH_TEST_REAL_JSON at a copy (.ci/run does when it can).
_ENV = os.environ.get("VITBENCH_TEST_REAL_JSON", "")
REAL_JSON = Path(_ENV).expanduser() if _ENV else None
_SKIP_REASON = (f"VITBENCH_TEST_REAL_JSON={_ENV!r} is not a file" if _ENV
                else "set VITBENCH_TEST_REAL_JSON to google-research/reassessed-imagenet's real.json to run this test")


def test_toy_case_with_empty_sets():
    sets = [[], [1, 2], [3], [], [0]]
    # image 0 and 3 are not scored; hits: 2 in {1,2} yes, 5 in {3} no, 0 in {0} yes -> 2/3
    assert real_accuracy([9, 2, 5, 9, 0], sets) == pytest.approx(2 / 3)
    assert real_topk_accuracy(np.array([[9, 9], [7, 1], [5, 3], [0, 0], [4, 4]]), sets) == pytest.approx(2 / 3)
    with pytest.raises(VitbenchError):
        real_accuracy([1, 2], [[], []])


def test_loader_is_one_based(tmp_path):
    path = tmp_path / "real.json"
    path.write_text("[[], [970, 795], [230]]")
    real = load_real_labels(path)
    assert real["ILSVRC2012_val_00000001.JPEG"] == [] and real["ILSVRC2012_val_00000002.JPEG"] == [970, 795]
    assert label_sets_for(["/x/ILSVRC2012_val_00000003.JPEG"], real) == [[230]]
    with pytest.raises(VitbenchError, match="no ReaL entry"):
        label_sets_for(["ILSVRC2012_val_00000004.JPEG"], real)
    with pytest.raises(VitbenchError, match="not found"):
        load_real_labels(tmp_path / "missing.json")


@pytest.mark.skipif(REAL_JSON is None or not REAL_JSON.is_file(), reason=_SKIP_REASON)
def test_real_json_file():
    real = load_real_labels(REAL_JSON)
    assert len(real) == 50_000
    sets = [real[f"ILSVRC2012_val_{i:08d}.JPEG"] for i in range(1, 50_001)]
    assert sum(1 for s in sets if not s) == 3_163
    assert sets[:5] == [[], [970, 795], [230, 231], [809], [516, 850]]
    # predicting the first label of every non-empty set scores 100%; a constant wrong class scores ~0
    assert real_accuracy([s[0] if s else 0 for s in sets], sets) == 1.0
    hits_for_0 = sum(1 for s in sets if s and 0 in s)
    assert real_accuracy(np.zeros(50_000, int), sets) == pytest.approx(hits_for_0 / 46_837)


def test_label_sets_for_split_by_file_names(tmp_path):
    from PIL import Image

    from vitbench.data import load_split
    from vitbench.data.real import real_label_sets_for_split
    from vitbench.suites import SourceSpec, TaskSpec

    for i, wnid in ((1, "n01"), (2, "n02"), (3, "n01")):
        folder = tmp_path / "imagenet" / "val" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(folder / f"ILSVRC2012_val_{i:08d}.JPEG", format="JPEG")
    (tmp_path / "real.json").write_text("[[5], [], [0, 1]]")
    task = TaskSpec(name="imagenet_real", num_classes=1000, metric="real", splits={"test": "validation"},
                    sources=(SourceSpec("imagefolder", "imagenet", {"split_map": {"validation": "val"}, "order": "native"}),),
                    options={"real_json": "real.json"})
    split = load_split(task, "test", data_root=tmp_path)
    sets = real_label_sets_for_split(split, task.options, tmp_path)
    # folder order: n01/...01, n01/...03, n02/...02
    assert split.keys == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    assert sets == [[5], [0, 1], []]
    assert real_accuracy([5, 1, 7], sets) == 1.0
    task_test = TaskSpec(name="imagenet_real", num_classes=1000, metric="real", splits={"test": "validation"},
                         sources=task.sources, options=task.options)
    attached = load_split(task_test, "test", data_root=tmp_path)
    assert attached.real_labels == [[5], [0, 1], []] and attached.provenance["real_labels"]["scored"] == 2
