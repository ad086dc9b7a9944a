"""Every source kind of `vitbench.suites.SOURCE_KINDS` reads a tiny offline fixture of its own format: the same six
images (labels 0, 1, 2, 0, 1, 2) come back, in order, from `load_split`, with the kind in the provenance."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from vitbench.data import load_split
from vitbench.spec import SourceSpec, TaskSpec
from vitbench.suites import SOURCE_KINDS

N, LABELS = 6, [0, 1, 2, 0, 1, 2]


def pixels(k: int) -> np.ndarray:
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[..., 0] = 10 * k + 5  # distinct per image, exactly recoverable from a lossless copy
    return arr


def _hf_dataset():
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    return datasets.Dataset.from_dict({"image": [Image.fromarray(pixels(k)) for k in range(N)], "label": LABELS},
                                      features=feats)


def _disk(tmp_path):
    import datasets

    datasets.DatasetDict({"train": _hf_dataset()}).save_to_disk(str(tmp_path / "disk"))
    return SourceSpec("disk", str(tmp_path / "disk")), "train"


def _hf(tmp_path):  # a local path given to `hf` is read like the folder it is (here: save_to_disk)
    spec, split = _disk(tmp_path)
    return SourceSpec("hf", spec.id), split


def _parquet(tmp_path):
    (tmp_path / "pq" / "data").mkdir(parents=True)
    _hf_dataset().to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    return SourceSpec("parquet", str(tmp_path / "pq")), "train"


def _wds(tmp_path):
    (tmp_path / "wds" / "train").mkdir(parents=True)
    with tarfile.open(tmp_path / "wds" / "train" / "0.tar", "w") as tar:
        for k in range(N):
            buf = io.BytesIO()
            Image.fromarray(pixels(k)).save(buf, format="WEBP", lossless=True)
            for ext, data in (("webp", buf.getvalue()), ("cls", str(LABELS[k]).encode())):
                info = tarfile.TarInfo(f"s{k:07d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (tmp_path / "wds" / "train" / "nshards.txt").write_text("1")
    return SourceSpec("wds", str(tmp_path / "wds")), "train"


def _imagefolder(tmp_path):
    for k in range(N):
        folder = tmp_path / "folder" / "train" / f"class{LABELS[k]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(k)).save(folder / f"img{k}.png")
    return SourceSpec("imagefolder", str(tmp_path / "folder")), "train"


def _vtab1k_folder(tmp_path):
    root = tmp_path / "vtab1k"
    (root / "images" / "test").mkdir(parents=True)
    lines = []
    for k in range(N):
        Image.fromarray(pixels(k)).save(root / "images" / "test" / f"{k:06d}.jpg", quality=100)
        lines.append(f"images/test/{k:06d}.jpg {LABELS[k]}")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return SourceSpec("vtab1k_folder", str(root)), "test"


def _torchvision(tmp_path):  # torchvision.datasets.EuroSAT reads <root>/eurosat/2750/<class>/*.jpg
    for k in range(N):
        folder = tmp_path / "tv" / "eurosat" / "2750" / f"class{LABELS[k]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(k)).save(folder / f"img{k}.png")
    return SourceSpec("torchvision", "EuroSAT", {"root": str(tmp_path / "tv")}), "all"


def _prepared(tmp_path):
    from vitbench.data.prepare import prepare_task

    spec, split = _imagefolder(tmp_path)
    prepare_task(TaskSpec(name="t", num_classes=3, sources=(spec,), splits={"train": f"{split}[:{N}]"}), tmp_path / "prep",
                 ["train"])
    return SourceSpec("prepared", str(tmp_path / "prep")), "train"


def _digits(tmp_path):
    return SourceSpec("digits"), "all"


FIXTURES = {"digits": _digits, "hf": _hf, "wds": _wds, "parquet": _parquet, "disk": _disk, "imagefolder": _imagefolder,
            "vtab1k_folder": _vtab1k_folder, "torchvision": _torchvision, "prepared": _prepared}


CLASS_ORDERED = {"imagefolder", "torchvision", "prepared"}  # prepared here from an imagefolder


def test_every_source_kind_has_a_fixture():
    assert sorted(FIXTURES) == sorted(SOURCE_KINDS)


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_source_kind_reads_its_fixture(kind, tmp_path):
    spec, source_split = FIXTURES[kind](tmp_path)
    if kind == "digits":  # scikit-learn's own images: compare with load_digits
        from sklearn.datasets import load_digits

        task = TaskSpec(name="t", num_classes=10, sources=(spec,), splits={"train": f"{source_split}[:{N}]"})
        split = load_split(task, "train", data_root=tmp_path)
        assert split.labels.tolist() == load_digits().target[:N].tolist()
        assert split.provenance["source"]["kind"] == "digits"
        return
    # vtab-1k folders serve their split files whole (no slicing); the others take the first N rows
    name, expr = (source_split, source_split) if kind == "vtab1k_folder" else ("train", f"{source_split}[:{N}]")
    task = TaskSpec(name="t", num_classes=3, sources=(spec,), splits={name: expr})
    split = load_split(task, name, data_root=tmp_path)
    assert len(split) == N
    reds = [int(np.asarray(split.image(i).convert("RGB"))[4, 4, 0]) for i in range(N)]
    if kind == "vtab1k_folder":  # JPEG copies: close, not exact, and flagged lossy
        reds = [10 * round((r - 5) / 10) + 5 for r in reds]
        assert split.provenance["lossy"] is True
    got = list(zip(split.labels.tolist(), reds))
    want = [(LABELS[k], 10 * k + 5) for k in range(N)]
    if kind in CLASS_ORDERED:  # listed class by class, so sliced in the fixed class-mixing order (docs/slices.md)
        assert split.provenance["order"]["kind"] == "hashed"
        got, want = sorted(got), sorted(want)
    assert got == want
    if kind == "prepared":  # the prepared copy keeps its origin's provenance and says where it was read
        assert split.provenance["source"]["kind"] == "imagefolder"
        assert split.provenance["prepared"]["root"] == spec.id
    else:
        assert split.provenance["source"]["kind"] in ({kind, "disk"} if kind == "hf" else {kind})
