"""VTAB fine-tuning augmentation keeps each task's label (BiT §3.3; Google's ViT-on-VTAB config).

Synthetic images shaped like each structured task's label go through the suite's own per-task training
pre-processing (resize, random crop and/or flip as the `vtab` suite sets them, at 64 px instead of 384) and
the label is read back from the augmented pixels."""

import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vitbench.data import crops
from vitbench.planner import method_params
from vitbench.runners.finetune import train_preprocessing
from vitbench.data.transforms import Preprocessing
from vitbench.suites import load_suite

SIZE = 64


def augment(task_name: str, images: list[np.ndarray], seed: int, suite: str = "vtab") -> np.ndarray:
    s = load_suite(suite)
    params = method_params(s, "finetune", {"img_size": SIZE}, s.task(task_name))
    prep = train_preprocessing(Preprocessing(size=SIZE, resize_impl=params.resize_impl), params)
    # what the fine-tuning input pipeline computes for each example (vitbench/data/train_pipeline.py)
    return np.stack([crops.augment_original(Image.fromarray(im), prep, crops.example_rng(seed, 1, slot))
                     for slot, im in enumerate(images)])[..., 0]


def sprites(xs):
    """dSprites-location-like: a 6 px square whose x position is the label (16 bins over the width)."""
    out = []
    for x in xs:
        im = np.zeros((SIZE, SIZE, 3), np.uint8)
        im[28:34, x:x + 6] = 255
        out.append(im)
    return out


def x_bin(mask: np.ndarray) -> int:
    cols = np.nonzero(mask.any(0))[0]
    return -1 if cols.size == 0 else int((cols.min() + cols.max() + 1) / 2 / SIZE * 16)


def test_dsprites_location_keeps_x_bin():
    xs = list(range(0, SIZE - 6, 2))
    labels = [x_bin(im[..., 0] > 127) for im in sprites(xs)]
    for seed in range(3):
        got = [x_bin(a > 127) for a in augment("dsprites_loc", sprites(xs), seed)]
        assert got == labels


def bar(angle_deg: float) -> np.ndarray:
    """An oriented bar through the centre (the label is its angle; a mirror image has angle 180 - a)."""
    im = np.zeros((SIZE, SIZE, 3), np.uint8)
    t = np.linspace(-14, 14, 400)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    for w in (-1, 0, 1):
        xs = np.clip(np.round(SIZE / 2 + t * c - w * s), 0, SIZE - 1).astype(int)
        ys = np.clip(np.round(SIZE / 2 - t * s - w * c), 0, SIZE - 1).astype(int)
        im[ys, xs] = 255
    return im


def angle(mask: np.ndarray) -> float:
    ys, xs = np.nonzero(mask)
    x, y = xs - xs.mean(), -(ys - ys.mean())
    return math.degrees(0.5 * math.atan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())) % 180


@pytest.mark.parametrize("task", ["dsprites_ori", "smallnorb_azi"])
def test_orientation_tasks_keep_angle(task):
    angles = [15, 35, 55, 75, 105, 125, 145, 165]
    for seed in range(3):
        got = [angle(a > 127) for a in augment(task, [bar(a) for a in angles], seed)]
        assert np.allclose(got, angles, atol=6), (task, got)


def blobs(seed: int, count: int) -> np.ndarray:
    """CLEVR-count-like: `count` separated blobs anywhere, including at the borders."""
    rng = np.random.default_rng(seed)
    im = np.zeros((SIZE, SIZE, 3), np.uint8)
    centres = []
    while len(centres) < count:
        c = rng.integers(3, SIZE - 3, 2)
        if all(np.abs(c - o).max() > 9 for o in centres):
            centres.append(c)
            im[c[0] - 3:c[0] + 3, c[1] - 3:c[1] + 3] = 255
    return im


def test_clevr_count_keeps_every_object():
    images = [blobs(i, 3 + i % 8) for i in range(24)]
    for seed in range(3):
        got = [ndimage.label(a > 127)[1] for a in augment("clevr_count", images, seed)]
        assert got == [3 + i % 8 for i in range(24)]


def ground_object(y: int, x: int) -> np.ndarray:
    """KITTI/CLEVR-distance-like: the nearer an object, the lower it stands in the frame (label = its row bin)."""
    im = np.zeros((SIZE, SIZE, 3), np.uint8)
    im[y - 6:y, x:x + 8] = 255
    return im


@pytest.mark.parametrize("task", ["clevr_dist", "dmlab", "kitti_dist"])
def test_distance_tasks_keep_position_and_size(task):
    spots = [(y, x) for y in (10, 30, 50, 63) for x in (0, 28, 56)]
    for seed in range(2):
        for (y, x), a in zip(spots, augment(task, [ground_object(y, x) for y, x in spots], seed)):
            rows = np.nonzero((a > 127).any(1))[0]
            cols = np.nonzero((a > 127).any(0))[0]
            assert (rows.max() + 1, rows.size, cols.size) == (y, 6, 8)


def test_paper_suite_vtab_part_matches_and_other_tasks_keep_inception():
    vtab, paper = load_suite("vtab"), load_suite("paper")
    for t in vtab.tasks:
        a = method_params(vtab, "finetune", None, t)
        b = method_params(paper, "finetune", None, paper.task(t.name))
        assert (a.train_crop, a.hflip) == (b.train_crop, b.hflip)
    assert method_params(paper, "finetune", None, paper.task("imagenet")).train_crop == "inception"


def test_resize_crop_is_448_to_384_and_uniform():
    prep = Preprocessing(size=384, train_crop="resize_crop")
    assert prep.train_source_size() == 448 and prep.train_cache().size == 448
    assert Preprocessing(size=64, train_crop="resize_crop", train_resize=80).train_source_size() == 80
    image = np.arange(8 * 8, dtype=np.uint8).reshape(8, 8, 1).repeat(3, axis=2)
    small = Preprocessing(size=6, train_crop="resize_crop", train_resize=8, hflip=False)
    corners = {int(crops.augment_source(image, small, crops.example_rng(0, 1, slot))[0, 0, 0]) for slot in range(200)}
    assert corners == {r * 8 + c for r in range(3) for c in range(3)}  # every offset in [0, 2] x [0, 2]
