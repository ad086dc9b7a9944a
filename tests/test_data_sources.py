"""Each source format written by the test and loaded back: digits, HF parquet, save_to_disk, webdataset tar
(webp/cls), vtab-1k folder, ImageFolder; offline and corrupt-image errors."""

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitbench.data import load_split
from vitbench.errors import VitbenchError
from vitbench.suites import SourceSpec, TaskSpec


def pixels(k: int, size: int = 6) -> np.ndarray:
    """A distinct, exactly recoverable image per index."""
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0] = k % 256
    arr[..., 1] = (k * 7) % 256
    arr[0, 0, 2] = 255
    return arr


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def make_task(kind, sid, splits, num_classes=3, label_transform="", **options):
    return TaskSpec(name="t", num_classes=num_classes, sources=(SourceSpec(kind, str(sid), options),),
                    splits=splits, label_transform=label_transform)


def test_digits_source():
    task = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:1200]", "test": "all[1200:]"})
    train, test = load_split(task, "train"), load_split(task, "test")
    assert (len(train), len(test)) == (1200, 597)
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.asarray(test.image(0))
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], np.rint(d.images[1200] * 255 / 16).astype(np.uint8))
    assert test.labels[0] == d.target[1200]
    assert train.provenance["ranges"] == [{"split": "all", "start": 0, "stop": 1200}]
    assert train.fingerprint != test.fingerprint
    assert load_split(task, "train").fingerprint == train.fingerprint


def test_digits_ship_with_the_package_and_load_without_sklearn():
    code = ("import sys; from vitbench.data.sources.digits import digits_arrays; x, y = digits_arrays(); "
            "assert x.shape == (1797, 8, 8, 3) and y.shape == (1797,); print('sklearn' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_digits_arrays_equal_sklearn_load_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    from vitbench.data.sources.digits import digits_arrays, digits_raw

    d = datasets.load_digits()
    images, target = digits_raw()
    assert np.array_equal(images, d.images) and np.array_equal(target, d.target)
    rgb, labels = digits_arrays()
    expected = np.clip(np.rint(d.images * 255.0 / 16.0), 0, 255).astype(np.uint8)  # the pre-copy conversion
    assert np.array_equal(rgb, np.repeat(expected[..., None], 3, axis=-1))
    assert labels.dtype == np.int64 and np.array_equal(labels, d.target)


def _hf_dict(n_train=12, n_test=5):
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    def part(lo, n):
        return datasets.Dataset.from_dict({"image": [Image.fromarray(pixels(k)) for k in range(lo, lo + n)],
                                           "label": [k % 3 for k in range(lo, lo + n)]}, features=feats)
    return datasets.DatasetDict({"train": part(0, n_train), "test": part(100, n_test)})


def test_parquet_and_disk_sources(tmp_path):
    dd = _hf_dict()
    pq_dir = tmp_path / "pq"
    (pq_dir / "data").mkdir(parents=True)
    for split, ds in dd.items():
        ds.to_parquet(str(pq_dir / "data" / f"{split}-00000-of-00001.parquet"))
    dd.save_to_disk(str(tmp_path / "disk"))
    splits = {"train": "train[:10]", "val": "train[10:]", "test": "test"}
    for kind, path in (("parquet", pq_dir), ("disk", tmp_path / "disk")):
        task = make_task(kind, path, splits)
        val = load_split(task, "val")
        assert len(val) == 2 and val.labels.tolist() == [10 % 3, 11 % 3]
        assert np.array_equal(np.asarray(val.image(1)), pixels(11))
        test = load_split(task, "test")
        assert np.array_equal(np.asarray(test.image(4)), pixels(104))
        assert test.image_bytes(0)[:4] == b"\x89PNG"
        assert val.provenance["source"]["kind"] == kind


def _write_wds(folder, split, items_per_shard, label_fn):
    folder = folder / split
    folder.mkdir(parents=True)
    k = 0
    for shard, count in enumerate(items_per_shard):
        with tarfile.open(folder / f"{shard}.tar", "w") as tar:
            for _ in range(count):
                for ext, data in (("webp", png_bytes(pixels(k), "WEBP")), ("cls", str(label_fn(k)).encode())):
                    info = tarfile.TarInfo(f"s{k:07d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                k += 1
    (folder / "nshards.txt").write_text(str(len(items_per_shard)))


def test_wds_mirror_raw_labels_order_and_substitute(tmp_path):
    # 11 shards so that lexicographic order (0, 1, 10, 2, ...) differs from row order.
    _write_wds(tmp_path, "train", [2] * 11, lambda k: k % 32)
    _write_wds(tmp_path, "test", [3], lambda k: (k + 5) % 32)
    task = TaskSpec(
        name="dsprites_loc", num_classes=16, label_transform="dsprites_x_position",
        splits={"train800": "train[:4]", "val200": "train[20:22]", "train800val200": "train[:4]+train[20:22]", "test": "train[22:]"},
        sources=(SourceSpec("wds", str(tmp_path), {
            "splits": {"test": "test"}, "substitutes": {"val200": "train[-2:]"}, "substitute_note": "mirror has no val"}),),
    )
    t800 = load_split(task, "train800")
    assert t800.labels.tolist() == [0, 0, 1, 1]  # raw x positions 0..3 // 2
    assert [np.asarray(t800.image(i))[0, 1, 0] for i in range(4)] == [0, 1, 2, 3]
    assert t800.keys == ["s0000000", "s0000001", "s0000002", "s0000003"]
    assert load_split(task, "test").labels.tolist() == [2, 3, 3]  # raw 5, 6, 7 -> 2, 3, 3
    val = load_split(task, "val200")
    assert [np.asarray(val.image(i))[0, 1, 0] for i in range(2)] == [20, 21]
    sub = val.provenance["substitutions"][0]
    assert sub["paper_expression"] == "train[20:22]" and sub["used_expression"] == "train[-2:]"


def _write_vtab1k(root, counts):
    k = 0
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            rel = f"images/{split}/{i:06d}.jpg"
            Image.fromarray(pixels(k, 16)).save(root / rel, quality=95)
            lines.append(f"{rel} {k % 3}")
            k += 1
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")


def test_vtab1k_folder(tmp_path):
    _write_vtab1k(tmp_path / "vtab-1k" / "dsprites_loc", {"train800": 4, "val200": 2, "train800val200": 6, "test": 3})
    task = TaskSpec(
        name="dsprites_loc", num_classes=16, label_transform="dsprites_x_position",
        splits={"train": "train[:589824]", "train800": "train[:800]", "val200": "train[589824:590024]",
                "train800val200": "train[:800]+train[589824:590024]", "test": "train[663552:]"},
        sources=(SourceSpec("vtab1k_folder", "vtab-1k/dsprites_loc"),),
    )
    with pytest.warns(UserWarning, match="has 6 images, VTAB-1k defines 1000"):
        split = load_split(task, "train800val200", data_root=tmp_path)
    assert split.provenance["incomplete"] is True and "incomplete" in split.provenance["caveats"][-1]
    assert len(split) == 6 and split.labels.tolist() == [k % 3 for k in range(6, 12)]  # labels used as is
    assert split.provenance["lossy"] is True and split.provenance["label_transform"] == ""
    assert split.image(0).size == (16, 16)
    with pytest.raises(VitbenchError, match="only splits"):
        load_split(task, "train", data_root=tmp_path)


def test_imagefolder_and_corrupt_image(tmp_path):
    for split, classes in (("train", ["cat", "dog"]), ("val", ["dog"])):
        for c in classes:
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(pixels(i)).save(tmp_path / "f" / split / c / f"{c}{i}.png")
    (tmp_path / "f" / "train" / "dog" / "dog9.png").write_bytes(b"not a png")
    task = make_task("imagefolder", tmp_path / "f", {"train": "train", "val": "val"}, num_classes=2, order="native")
    train = load_split(task, "train")
    assert train.labels.tolist() == [0, 0, 1, 1, 1] and train.keys[0] == "cat0.png"
    assert load_split(task, "val").labels.tolist() == [1, 1]  # classes fixed across splits
    with pytest.raises(VitbenchError) as e:
        train.image(4)
    assert "dog9.png" in str(e.value) and "index 4" in str(e.value) and "\n" not in str(e.value)
    skipped = load_split(task, "train", skip_corrupt=True)
    assert len(skipped) == 4 and skipped.provenance["skipped_corrupt"]["count"] == 1


def test_absent_data_offline_fails_fast_with_command(tmp_path):
    task = TaskSpec(name="cifar100", num_classes=100, splits={"train": "train", "test": "test"},
                    sources=(SourceSpec("vtab1k_folder", "vtab-1k/cifar"), SourceSpec("hf", "someone/not-cached-anywhere")))
    start = time.perf_counter()
    with pytest.raises(VitbenchError) as e:
        load_split(task, "test", data_root=tmp_path)
    assert time.perf_counter() - start < 1.0
    msg = str(e.value)
    assert "\n" not in msg and "'cifar100'" in msg and "hf:someone/not-cached-anywhere" in msg
    assert f"vitbench data prepare vtab --tasks cifar100 --root {tmp_path}" in msg


def test_unknown_split_suggests():
    task = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:10]"})
    with pytest.raises(VitbenchError, match="Did you mean 'train'"):
        load_split(task, "trian")
