"""Training crops (`vitbench.data.crops`) and the streaming fine-tuning loader (`vitbench.data.train_pipeline`):
TF's sample_distorted_bounding_box against a plain port of the C++ kernel and by hand, its statistics, keyed
randomness (same batches for any number of workers or ranks, resume = tail), the cache being exact for
resize_crop / none, the inception crop cut from the original image, labels, and the error lines."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitbench.data import crops
from vitbench.data.base import ImageSplit, decode_image
from vitbench.data.resize import Preprocessing, resize_image, tf_bilinear_resize
from vitbench.data.train_pipeline import TrainBatches, choose_source, index_batches
from vitbench.errors import VitbenchError
from vitbench.finetune import batch_stream


# --- a plain port of tensorflow/core/kernels/image/sample_distorted_bounding_box_op.cc, scalar by scalar ---

def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def lrintf(x: float) -> int:
    return round(f32(x))  # Python's round: nearest, ties to even, as lrintf in the default mode


def port_generate_random_crop(W, H, min_rel, max_rel, aspect, draws):
    min_area = f32(f32(min_rel * W) * H)
    max_area = f32(f32(max_rel * W) * H)
    height = lrintf(math.sqrt(f32(min_area / aspect)))
    max_height = lrintf(math.sqrt(f32(max_area / aspect)))
    if lrintf(f32(max_height * aspect)) > W:
        max_height = int((W + 0.5 - f32(1e-7)) / aspect)
        if lrintf(f32(max_height * aspect)) > W:
            max_height -= 1
    if max_height > H:
        max_height = H
    if height >= max_height:
        height = max_height
    if height < max_height:
        height += int(draws[0]) % (max_height - height + 1)
    width = lrintf(f32(height * aspect))
    area = f32(width * height)
    if area < min_area:
        height += 1
        width = lrintf(f32(height * aspect))
        area = f32(width * height)
    if area > max_area:
        height -= 1
        width = lrintf(f32(height * aspect))
        area = f32(width * height)
    if area < min_area or area > max_area or width > W or height > H or width <= 0 or height <= 0:
        return None
    y = int(draws[1]) % (H - height) if height < H else 0
    x = int(draws[2]) % (W - width) if width < W else 0
    return y, x, height, width


def port_distorted_box(H, W, block, area=(0.05, 1.0), ratio=(0.75, 1.33)):
    lo, hi = f32(ratio[0]), f32(ratio[1])
    for row in block:
        aspect = f32(f32((int(row[0]) & 0x7FFFFF) / 2**23 * f32(hi - lo)) + lo)
        box = port_generate_random_crop(W, H, f32(area[0]), f32(area[1]), aspect, row[1:])
        if box is not None:
            return box
    return 0, 0, H, W


@pytest.mark.parametrize("shape", [(300, 400), (375, 500), (1000, 10), (10, 1000), (7, 5), (2, 2), (1, 1), (32, 32)])
def test_distorted_box_matches_a_plain_port_of_the_tf_kernel(shape):
    h, w = shape
    for key in range(300):
        block = np.random.Generator(np.random.Philox(key=key)).integers(0, 1 << 32, size=(100, 4), dtype=np.uint64)
        got = crops.distorted_box(h, w, np.random.Generator(np.random.Philox(key=key)))
        assert got == port_distorted_box(h, w, block), (shape, key)


# --- TensorFlow's own random stream, to compare sample_box with the op's recorded outputs exactly ---
# Philox4x32-10 (tensorflow `tensorflow/core/lib/random/philox_random.h`), the stateless op's seed scrambling
# (`GenerateKey`, `tensorflow/core/kernels/stateless_random_ops.cc`), SimplePhilox's RandFloat / Uniform
# (`random_distributions.h`, `exact_uniform_int.h`: rejection of the values below 2^32 mod n).
M32 = 0xFFFFFFFF


def philox4x32(counter, key):
    c, k = list(counter), list(key)
    for r in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k[1]) & M32, p0 & M32]
        if r < 9:
            k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
    return c


class TFStatelessStream:
    def __init__(self, seed):
        s0, s1 = (int(x) & 0xFFFFFFFFFFFFFFFF for x in seed)
        mix = philox4x32([s0 & M32, s0 >> 32, s1 & M32, s1 >> 32], [0x3EC8F720, 0x02461E29])
        self.key, self.counter, self.buf = mix[:2], [0, 0, mix[2], mix[3]], []

    def rand32(self) -> int:
        if not self.buf:
            self.buf = philox4x32(self.counter, self.key)
            v = sum(c << (32 * i) for i, c in enumerate(self.counter)) + 1
            self.counter = [(v >> (32 * i)) & M32 for i in range(4)]
        return self.buf.pop(0)

    def rand_float(self, attempt):
        return np.float32((self.rand32() & 0x7FFFFF) * 2.0**-23)

    def uniform(self, n, k):
        if n & (n - 1) == 0:
            return self.rand32() & (n - 1)
        rem = (M32 % n) + 1
        while (x := self.rand32()) < rem:
            pass
        return x % n


def test_sample_box_reproduces_tensorflows_op_given_its_random_stream():
    """tests/fixtures/tf_distorted_boxes.json: 248 boxes from TensorFlow 2.21's
    `tf.image.stateless_sample_distorted_bounding_box` (random shapes up to 900 px, strips, vit_jax's ranges and
    others); fed TF's stream, the kernel logic of `crops.sample_box` returns every one of them exactly."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "tf_distorted_boxes.json").read_text())
    genuine = 0
    for row in fixture["rows"]:
        stream = TFStatelessStream(row["seed"])
        box = crops.sample_box(*row["shape"], stream.rand_float, stream.uniform, row["area_range"], row["aspect_range"])
        assert list(box) == row["box"], row
        genuine += list(box[2:]) != row["shape"]
    assert genuine > 150  # most are real crops, not the whole-image fallback


def test_distorted_box_by_hand():
    rng = np.random.default_rng(0)
    # whole area, aspect exactly 1: the whole 10x10 image, offsets 0
    assert crops.distorted_box(10, 10, rng, area_range=(1.0, 1.0), aspect_range=(1.0, 1.0)) == (0, 0, 10, 10)
    # a quarter of 20x20 at aspect 1: lrintf(sqrt(100)) = 10 rows; offsets uniform in [0, 20 - 10) = [0, 9]
    boxes = {crops.distorted_box(20, 20, rng, area_range=(0.25, 0.25), aspect_range=(1.0, 1.0)) for _ in range(600)}
    assert {b[2:] for b in boxes} == {(10, 10)}
    assert {b[0] for b in boxes} == set(range(10)) == {b[1] for b in boxes}  # 10 is never drawn (TF's half-open range)
    # a 1x200 strip: 5 % of the area is 10 px but a crop 1 row high is at most 1.33 px wide -> the whole image
    assert all(crops.distorted_box(1, 200, rng) == (0, 0, 1, 200) for _ in range(50))


def test_distorted_box_stays_in_bounds_and_in_range():
    rng = np.random.default_rng(1)
    for h, w in [(300, 400), (1000, 10), (10, 1000), (64, 48)]:
        for _ in range(400):
            top, left, ch, cw = crops.distorted_box(h, w, rng)
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
            if (ch, cw) != (h, w):  # not the fallback: the kernel's constraints hold
                assert 0.05 * h * w <= ch * cw <= h * w + 1e-3
                assert 0.75 - 1.0 / ch <= cw / ch <= 1.33 + 1.0 / ch  # width = lrintf(height * aspect)


def test_distorted_box_statistics():
    """area_range (0.05, 0.5) on a square never hits the caps, so the first attempt is taken: aspect uniform on
    [0.75, 1.33] and crop height uniform, i.e. area / A = 0.5 v^2 with v uniform on [sqrt(0.1), 1]."""
    rng = np.random.default_rng(2)
    side = 2000
    boxes = np.array([crops.distorted_box(side, side, rng, area_range=(0.05, 0.5)) for _ in range(4000)])
    area = boxes[:, 2] * boxes[:, 3] / side**2
    aspect = boxes[:, 3] / boxes[:, 2]
    assert area.min() >= 0.05 - 1e-3 and area.max() <= 0.5 + 1e-3
    assert area.min() < 0.06 and area.max() > 0.48
    expected = 0.5 * (1 - 0.1**1.5) / (3 * (1 - math.sqrt(0.1)))
    assert area.mean() == pytest.approx(expected, abs=0.01)
    assert aspect.min() >= 0.749 and aspect.max() <= 1.331
    assert aspect.mean() == pytest.approx((0.75 + 1.33) / 2, abs=0.012)
    assert np.histogram(aspect, bins=4, range=(0.75, 1.33))[0].min() > 800  # uniform: about 1000 per bin
    # full range on a 4:3 photo: every crop covers 5-100 % of the area
    full = np.array([crops.distorted_box(300, 400, rng) for _ in range(2000)])
    frac = full[:, 2] * full[:, 3] / (300 * 400)
    assert frac.min() >= 0.05 and frac.max() <= 1.0 and frac.min() < 0.07 and frac.max() > 0.9


def test_random_crop_offsets_include_the_last_offset_and_flip_is_fair():
    rng = np.random.default_rng(3)
    offsets = {crops.random_crop_offsets(18, 17, 16, rng) for _ in range(200)}
    assert offsets == {(a, b) for a in (0, 1, 2) for b in (0, 1)}
    flips = [crops.flip_draw(rng) for _ in range(4000)]
    assert 0.46 < np.mean(flips) < 0.54
    with pytest.raises(VitbenchError, match="train_resize must be >= the crop size"):
        crops.random_crop_offsets(10, 20, 16, rng)


def test_example_rng_is_keyed_by_seed_step_and_slot():
    draw = lambda *k: crops.example_rng(*k).integers(0, 1 << 62, size=4).tolist()  # noqa: E731
    assert draw(0, 1, 0) == draw(0, 1, 0)
    assert len({str(draw(*k)) for k in [(0, 1, 0), (1, 1, 0), (0, 2, 0), (0, 1, 1), (0, 0, 1), (0, 1, 2**40)]}) == 6


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("crop", ["inception", "resize_crop", "none"])
def test_augment_draws_the_same_count_whatever_the_image(crop):
    prep = Preprocessing(size=16, train_crop=crop, hflip=True)
    after = set()
    for h, w in [(1, 200), (40, 30), (16, 16), (300, 20)]:
        rng = crops.example_rng(5, 1, 0)
        out = crops.augment_original(_image(h, w, 0), prep, rng)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        after.add(int(rng.integers(0, 1 << 62)))
    assert len(after) == 1


def test_augment_original_inception_is_the_crop_of_the_original_resized():
    prep = Preprocessing(size=16, train_crop="inception", hflip=True)
    img = _image(60, 20, 1)  # tall: the squashed cache would distort it 3:1
    for slot in range(20):
        rng = crops.example_rng(0, 3, slot)
        top, left, h, w = crops.distorted_box(60, 20, rng, area_range=prep.train_crop_scale, aspect_range=prep.train_crop_ratio)
        expected = tf_bilinear_resize(img[top : top + h, left : left + w], 16, 16)
        if crops.flip_draw(rng):
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(crops.augment_original(img, prep, crops.example_rng(0, 3, slot)), expected)


# --- the streaming loader ---

def make_split(images: list[np.ndarray], labels, bad: set[int] = frozenset(), name: str = "toy") -> ImageSplit:
    """An in-memory split of PNG-encoded images; indices in `bad` hold bytes that are not an image."""
    blobs = []
    for i, arr in enumerate(images):
        if i in bad:
            blobs.append(b"not an image")
            continue
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    describe = lambda i: f"{name}/img_{i:03d}.png"  # noqa: E731
    return ImageSplit(labels=np.asarray(labels, dtype=np.int64), fingerprint=f"fp-{name}-{len(images)}",
                      provenance={"task": name, "split": "train", "n": len(images)},
                      load_image=lambda i: decode_image(blobs[i], f"{describe(i)} (index {i})"), describe=describe)


@pytest.fixture(scope="module")
def split():
    # 22 non-square images of assorted sizes, label = i % 5
    return make_split([_image(30 + 3 * (i % 7), 20 + 5 * (i % 4), i) for i in range(22)], [i % 5 for i in range(22)])


def take(batches: TrainBatches, k: int):
    out = []
    for item in batches:
        out.append(item)
        if len(out) == k:
            break
    return out


def same(a, b):
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    for (_, xa, ya), (_, xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


INCEPTION = Preprocessing(size=16, train_crop="inception", hflip=True)
RESIZE_CROP = Preprocessing(size=16, train_crop="resize_crop", train_resize=20, hflip=True)
NONE = Preprocessing(size=16, train_crop="none", hflip=True)


def test_batches_follow_the_index_stream_with_labels(split):
    with TrainBatches(split, INCEPTION, seed=7, batch_size=8, workers=0, source="original") as tb:
        got = take(tb, 5)
    gen = torch.Generator().manual_seed(7)
    stream = batch_stream(len(split), 8, gen)
    for (step, x, y), want in zip(got, stream):
        idx = np.sort(want)
        assert x.dtype == torch.uint8 and x.shape == (8, 16, 16, 3) and x.is_contiguous()
        assert y.dtype == torch.int64 and y.tolist() == (idx % 5).tolist()
        for p, i in enumerate(idx):  # each image is its example's crop, drawn from its (seed, step, position) key
            expected = crops.augment_original(split.image(int(i)), INCEPTION, crops.example_rng(7, step, p))
            np.testing.assert_array_equal(x[p].numpy(), expected)
    assert [s for s, _, _ in got] == [1, 2, 3, 4, 5]
    assert tb.info["source"] == "original" and tb.info["workers"] == 0 and "Philox" in tb.info["rng"]
    assert json.loads(json.dumps(tb.info)) == tb.info and "inception crop on the original" in tb.info["crop"]


def test_labels_follow_images(tmp_path):
    # image i is a flat colour 10 * label: the label can be read back from the pixels after any crop or flip
    labels = [i % 4 for i in range(12)]
    flat = make_split([np.full((24 + i, 18, 3), 10 * labels[i], np.uint8) for i in range(12)], labels, name="flat")
    for prep, source in [(INCEPTION, "memory"), (RESIZE_CROP, "cache"), (NONE, "original")]:
        with TrainBatches(flat, prep, seed=1, batch_size=6, workers=0, source=source, cache_dir=tmp_path) as tb:
            for _, x, y in take(tb, 4):
                assert (x[:, 8, 8, 0] // 10).tolist() == y.tolist()


@pytest.mark.parametrize("prep", [INCEPTION, RESIZE_CROP], ids=["inception", "resize_crop"])
def test_same_batches_with_0_or_2_workers_and_1_or_2_ranks(split, prep, tmp_path):
    source = "original"
    one = take(TrainBatches(split, prep, seed=3, batch_size=8, workers=0, source=source), 4)
    with TrainBatches(split, prep, seed=3, batch_size=8, workers=2, source=source) as tb:
        two = take(tb, 4)
    same(one, two)
    assert all(isinstance(item, tuple) and type(item[0]) is int for item in one + two)
    ranks = [take(TrainBatches(split, prep, seed=3, batch_size=8, rank=r, world=2, workers=0, source=source), 4) for r in (0, 1)]
    for k, (step, x, y) in enumerate(one):
        (s0, x0, y0), (s1, x1, y1) = ranks[0][k], ranks[1][k]
        assert s0 == s1 == step and x0.shape[0] == 4
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_resume_gives_the_tail_of_the_uninterrupted_stream(split):
    full = take(TrainBatches(split, INCEPTION, seed=4, batch_size=8, workers=0, source="memory"), 9)
    tail = take(TrainBatches(split, INCEPTION, seed=4, batch_size=8, start_step=6, workers=0, source="memory"), 3)
    assert [s for s, _, _ in tail] == [7, 8, 9]
    same(full[6:], tail)
    replay = index_batches(22, 8, 4, start_step=6)
    assert [next(replay)[0], next(replay)[0]] == [7, 8]


PIL_BICUBIC = Preprocessing(size=16, train_crop="resize_crop", train_resize=20, hflip=True, resize_impl="pil", interpolation="bicubic")


@pytest.mark.parametrize("prep", [RESIZE_CROP, NONE, PIL_BICUBIC], ids=["resize_crop", "none", "pil_bicubic"])
def test_cache_memory_and_original_give_identical_batches(split, prep, tmp_path):
    """The resize before the random part is deterministic, so cropping the decoded cache is exact."""
    calls = []
    cached = TrainBatches(split, prep, seed=9, batch_size=8, workers=0, source="cache", cache_dir=tmp_path,
                          progress=lambda desc, done, total: calls.append((done, total)))
    assert cached.info["cache_key"] and cached.info["source"] == "cache" and calls[-1] == (22, 22)
    ref = take(cached, 4)
    same(ref, take(TrainBatches(split, prep, seed=9, batch_size=8, workers=0, source="original"), 4))
    calls.clear()
    same(ref, take(TrainBatches(split, prep, seed=9, batch_size=8, workers=0, source="memory",
                                progress=lambda desc, done, total: calls.append((done, total))), 4))
    assert calls[-1] == (22, 22)
    # and the cache holds exactly the squashed originals at train_source_size()
    arr = np.load(next(tmp_path.glob("*.npy")), mmap_mode="r")
    np.testing.assert_array_equal(arr[3], resize_image(split.image(3), prep.train_cache()))


def test_inception_memory_equals_original_and_is_cut_from_the_original(split):
    ref = take(TrainBatches(split, INCEPTION, seed=2, batch_size=8, workers=0, source="original"), 3)
    with TrainBatches(split, INCEPTION, seed=2, batch_size=8, workers=2, source="memory") as tb:  # forked RAM copy
        same(ref, take(tb, 3))
    # a crop of the squashed 16x16 square (what the old cache held) is not what the loader delivers
    step, x, _ = ref[0]
    idx = np.sort(next(batch_stream(len(split), 8, torch.Generator().manual_seed(2))))
    differs = 0
    for p, i in enumerate(idx):
        square = resize_image(split.image(int(i)), INCEPTION.train_cache())
        rng = crops.example_rng(2, step, p)
        top, left, h, w = crops.distorted_box(16, 16, rng, INCEPTION.train_crop_scale, INCEPTION.train_crop_ratio)
        old = tf_bilinear_resize(square[top : top + h, left : left + w], 16, 16)
        differs += not np.array_equal(old, x[p].numpy()) and not np.array_equal(old[:, ::-1], x[p].numpy())
    assert differs == len(idx)


def test_auto_source(split, tmp_path):
    assert choose_source(split, RESIZE_CROP)[0] == "cache"
    assert choose_source(split, NONE)[0] == "cache"
    assert choose_source(split, INCEPTION)[0] == "memory"
    tb = TrainBatches(split, INCEPTION, seed=0, batch_size=4, workers=0)
    assert tb.info["source"] == "memory" and tb.info["source_requested"] == "auto"
    big = ImageSplit(labels=np.zeros(30_000, np.int64), fingerprint="big", provenance={}, load_image=None, describe=str)
    assert choose_source(big, INCEPTION)[0] == "original"  # decided from the count, without decoding
    huge = Preprocessing(size=384, train_crop="resize_crop")  # 30,000 x 448 x 448 x 3 = 18 GB of cache
    assert choose_source(big, huge)[0] == "original"


def test_errors_are_one_line(split):
    with pytest.raises(VitbenchError, match="not divisible by the 3 processes"):
        TrainBatches(split, INCEPTION, seed=0, batch_size=8, world=3)
    with pytest.raises(VitbenchError, match="inception crop is cut from the original"):
        TrainBatches(split, INCEPTION, seed=0, batch_size=8, source="cache")
    with pytest.raises(VitbenchError, match="unknown training image source"):
        TrainBatches(split, INCEPTION, seed=0, batch_size=8, source="disk")
    with pytest.raises(VitbenchError, match="rank 2 is not in"):
        TrainBatches(split, INCEPTION, seed=0, batch_size=8, rank=2, world=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_is_one_vitbench_error_line_from_a_worker(workers):
    bad = make_split([_image(20, 20, i) for i in range(10)], list(range(10)), bad={6}, name="broken")
    tb = TrainBatches(bad, NONE, seed=0, batch_size=10, workers=workers, source="original")
    with pytest.raises(VitbenchError) as info:
        take(tb, 1)
    msg = str(info.value)
    assert type(info.value) is VitbenchError and "\n" not in msg
    assert "broken/img_006.png" in msg and "index 6" in msg and "DataLoader" not in msg
    tb.close()


def test_a_killed_worker_is_one_vitbench_error_line(split):
    tb = TrainBatches(split, NONE, seed=0, batch_size=8, workers=1, source="original")
    it = iter(tb)
    next(it)
    os.kill(tb._iters[0]._workers[0].pid, signal.SIGKILL)  # as the out-of-memory killer would
    with pytest.raises(VitbenchError, match="loader process died") as info:
        for _ in range(20):
            next(it)
    assert "\n" not in str(info.value)
    tb.close()
