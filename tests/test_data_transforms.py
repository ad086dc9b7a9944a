"""Preprocessing from a data config, eval resize modes, normalisation, train augmentation, decoded cache,
and the torchvision source (a fake EuroSAT folder)."""

import numpy as np
import pytest
import torch
from PIL import Image

from vitbench.data import load_split
from vitbench.data.image_cache import cache_file
from vitbench.data.transforms import Preprocessing, normalize, preprocessing_for, resize_image, resized_images
from vitbench.errors import VitbenchError
from vitbench.suites import SourceSpec, TaskSpec

DIGITS = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:40]", "test": "all[40:50]"})
GOOGLE = {"input_size": (3, 224, 224), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "crop_pct": 0.9}


def test_preprocessing_for_and_record():
    prep = preprocessing_for(GOOGLE, size=32, resize_impl="pil")
    assert (prep.size, prep.resize, prep.crop_pct, prep.interpolation) == (32, "squash", 1.0, "bicubic")
    # big_vision's resize (the default) is bilinear whatever the model's config says
    assert (preprocessing_for(GOOGLE, size=32).interpolation, preprocessing_for(GOOGLE).resize_impl) == ("bilinear", "tf")
    d = prep.to_dict()
    assert d["mean"] == [0.5, 0.5, 0.5] and d["train_crop_scale"] == [0.05, 1.0] and d["hflip"] is True
    assert preprocessing_for(GOOGLE, resize="resize_crop").crop_pct == 0.9
    assert preprocessing_for(GOOGLE).size == 224
    with pytest.raises(VitbenchError):
        Preprocessing(size=32, resize="stretch")


def test_resize_modes():
    img = Image.fromarray(np.tile(np.arange(40, dtype=np.uint8)[None, :, None], (20, 1, 3)))  # 40 wide, 20 high
    squash = resize_image(img, Preprocessing(size=10))
    assert squash.shape == (10, 10, 3) and squash[0, 0, 0] < 4 and squash[0, -1, 0] > 35  # whole width kept
    crop = resize_image(img, Preprocessing(size=10, resize="resize_crop", crop_pct=1.0))
    assert crop.shape == (10, 10, 3) and crop[0, 0, 0] > 5 and crop[0, -1, 0] < 34  # centre crop drops the sides


def test_normalize_google_range():
    batch = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # [1, 1, 1, 3]
    out = normalize(batch, Preprocessing(size=1))
    assert out.shape == (1, 3, 1, 1)
    assert out.flatten().tolist() == pytest.approx([-1.0, 128 / 255 * 2 - 1, 1.0], abs=1e-6)


def test_decoded_cache_reused(tmp_path):
    split = load_split(DIGITS, "test")
    prep = Preprocessing(size=12)
    arr = resized_images(split, prep, cache_dir=tmp_path)
    assert arr.shape == (10, 12, 12, 3) and arr.dtype == np.uint8 and isinstance(arr, np.memmap)
    assert np.array_equal(arr[3], resize_image(split.image(3), prep))
    path = cache_file(split, prep, tmp_path)
    mtime = path.stat().st_mtime_ns
    again = resized_images(split, prep, cache_dir=tmp_path)
    assert path.stat().st_mtime_ns == mtime and np.array_equal(again, arr)
    assert cache_file(split, Preprocessing(size=12, resize="resize_crop"), tmp_path) != path
    assert cache_file(load_split(DIGITS, "train"), prep, tmp_path) != path


def test_torchvision_source_fake_eurosat(tmp_path):
    for c in ("AnnualCrop", "Forest"):
        folder = tmp_path / "torchvision" / "eurosat" / "2750" / c
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), i * 50, np.uint8)).save(folder / f"{c}_{i}.jpg")
    task = TaskSpec(name="eurosat_tv", num_classes=10, splits={"train": "all[:4]", "test": "all[4:]"},
                    sources=(SourceSpec("torchvision", "EuroSAT", {"order": "native"}),))
    train = load_split(task, "train", data_root=tmp_path)
    assert train.labels.tolist() == [0, 0, 0, 1] and train.keys[0] == "AnnualCrop_0.jpg"
    assert train.image(3).size == (8, 8) and train.image_bytes(0)[:2] == b"\xff\xd8"
    assert train.provenance["source"]["kind"] == "torchvision"
    missing = TaskSpec(name="cifar_tv", num_classes=10, splits={"test": "test"}, sources=(SourceSpec("torchvision", "CIFAR10"),))
    with pytest.raises(VitbenchError, match="torchvision.datasets.CIFAR10 not found"):
        load_split(missing, "test", data_root=tmp_path)


def test_squash_crop_is_big_vision_resize_then_central_crop():
    from PIL import Image

    # 2 columns of colour: a 40x20 image whose left half is red, right half blue
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20, 0] = 255
    arr[:, 20:, 2] = 255
    prep = preprocessing_for(GOOGLE, size=28, resize="squash_crop", interpolation="bilinear", crop_pct=0.875)
    assert prep.crop_pct == 0.875 and prep.interpolation == "bilinear"
    out = resize_image(Image.fromarray(arr), prep)
    assert out.shape == (28, 28, 3)
    # squashed to 32x32 (aspect not kept), then the central 28x28: both halves survive, split in the middle
    assert out[:, :10, 0].min() > 200 and out[:, -10:, 2].min() > 200
