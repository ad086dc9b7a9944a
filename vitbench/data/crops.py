"""Training crops as the reference pipelines compute them, on one image at a time, with keyed randomness.

Owns the protocol math of the fine-tuning augmentation (pure numpy functions, tested directly in
tests/test_train_pipeline.py; the streaming loader that applies them is `vitbench.data.train_pipeline`,
exercised by `vitbench finetune` / `vitbench run --method finetune`):

- `distorted_box`: TensorFlow's `tf.image.sample_distorted_bounding_box` as vit_jax (`vit_jax/input_pipeline.py`)
  and big_vision (`big_vision/pp/ops_image.py`, `inception_crop`) call it: no bounding boxes,
  `use_image_if_no_bounding_boxes=True`, `min_object_covered=0`, `area_range=(0.05, 1.0)`, the op's default
  `aspect_ratio_range=[0.75, 1.33]` and `max_attempts=100`. It follows the C++ kernel
  (tensorflow `tensorflow/core/kernels/image/sample_distorted_bounding_box_op.cc`, `GenerateRandomCrop`)
  step by step in float32.
- `random_crop_offsets`: `tf.image.random_crop`'s uniform offsets (the last offset included).
- `augment_original`: the whole training transform of one decoded image ("inception", "resize_crop", "none",
  then the optional flip), docs/preprocessing.md "Training crops".
- `example_rng`: the random stream of one example, keyed by (cell seed, step, position in the step's global
  batch), so the batches do not depend on the number of loader workers, processes or micro-batches.

TensorFlow draws from its own Philox stream seeded per op; that stream cannot be reproduced here, so the
draws come from a numpy Generator: the distribution of crops is TF's, the individual crops are not.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from PIL import Image

from vitbench.data.resize import Preprocessing, resize_image, tf_bilinear_resize
from vitbench.errors import VitbenchError

TF_AREA_RANGE = (0.05, 1.0)  # vit_jax passes area_range=(0.05, 1.0); big_vision area_min=5, area_max=100
TF_ASPECT_RANGE = (0.75, 1.33)  # the op's attribute default, which vit_jax and big_vision's inception_crop keep
TF_MAX_ATTEMPTS = 100  # the op's attribute default
_F32 = np.float32
_KEPS = float(_F32(1e-7))  # `const float kEps = 0.0000001`, promoted to double where the kernel uses it
RNG_RULE = ("numpy Philox keyed by blake2b-128(b'vitbench-train-aug', int64 seed, step, global batch position); "
            "crop draws: one block of max_attempts x 4 uint32 (inception) or 2 uint32 (resize_crop), then one "
            "uint32 for the flip")


def example_rng(seed: int, step: int, slot: int) -> np.random.Generator:
    """The random stream of the example at position `slot` (0-based, in the step's sorted global batch) of
    training step `step` (1-based) of a cell with seed `seed`. Independent of workers, ranks and micro-batches."""
    digest = hashlib.blake2b(b"vitbench-train-aug" + struct.pack("<qqq", int(seed), int(step), int(slot)),
                             digest_size=16).digest()
    return np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))


def _uint32(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(0, 1 << 32, size=shape, dtype=np.uint64)


def _rand_float(bits: int) -> np.float32:
    """TF's `SimplePhilox::RandFloat` (`Uint32ToFloat`): the low 23 bits as the mantissa of a float in [1, 2),
    minus 1: a float32 in [0, 1 - 2^-23]."""
    return _F32((int(bits) & 0x7FFFFF) * 2.0**-23)


def _uniform(bits: int, n: int) -> int:
    """An integer in [0, n) from one 32-bit draw. TF's `SimplePhilox::Uniform` also returns `bits % n` but first
    rejects the (2^32 mod n) lowest values to remove the bias; the bias kept here is below n / 2^32."""
    return int(bits) % n


def _lrintf(x) -> int:
    """C `lrintf` in the default rounding mode: round a float32 to the nearest integer, ties to even."""
    return int(np.rint(_F32(x)))


def _generate_random_crop(width: int, height: int, min_rel: np.float32, max_rel: np.float32,
                          aspect: np.float32, uniform) -> tuple[int, int, int, int] | None:
    """`GenerateRandomCrop` of the TF kernel: (top, left, h, w), or None when the constraints cannot be met.
    `uniform(n, k)` is an integer in [0, n) for the kernel's k-th draw of the attempt (1: crop height,
    2: y offset, 3: x offset), each requested only where the kernel draws."""
    if max_rel <= 0 or aspect <= 0 or width <= 0 or height <= 0 or min_rel > max_rel:
        return None
    min_area = _F32(_F32(min_rel * _F32(width)) * _F32(height))  # float * int * int, left to right, in float
    max_area = _F32(_F32(max_rel * _F32(width)) * _F32(height))
    h = _lrintf(np.sqrt(_F32(min_area / aspect)))
    max_h = _lrintf(np.sqrt(_F32(max_area / aspect)))
    if _lrintf(_F32(max_h) * aspect) > width:
        # the kernel's fix-up is computed in double: (original_width + 0.5 - kEps) / aspect_ratio, truncated
        max_h = int((width + 0.5 - _KEPS) / float(aspect))
        if _lrintf(_F32(max_h) * aspect) > width:
            max_h -= 1
    max_h = min(max_h, height)
    h = min(h, max_h)
    if h < max_h:
        h += uniform(max_h - h + 1, 1)  # closed range [h, max_h]
    w = _lrintf(_F32(h) * aspect)
    area = _F32(w * h)
    if area < min_area:  # rounding put the area below the range: one row more
        h += 1
        w = _lrintf(_F32(h) * aspect)
        area = _F32(w * h)
    if area > max_area:  # above the range: one row less
        h -= 1
        w = _lrintf(_F32(h) * aspect)
        area = _F32(w * h)
    if area < min_area or area > max_area or w > width or h > height or w <= 0 or h <= 0:
        return None
    top = uniform(height - h, 2) if h < height else 0  # [0, height - h): the kernel's half-open range
    left = uniform(width - w, 3) if w < width else 0
    return top, left, h, w


def sample_box(height: int, width: int, rand_float, uniform, area_range=TF_AREA_RANGE, aspect_range=TF_ASPECT_RANGE,
               max_attempts: int = TF_MAX_ATTEMPTS) -> tuple[int, int, int, int]:
    """The kernel's attempt loop (`SampleDistortedBoundingBoxBaseOp::DoCompute` with no boxes and
    `min_object_covered=0`) over any source of draws: `rand_float(attempt)` -> float32 in [0, 1) for the aspect
    ratio, `uniform(n, k)` as in `_generate_random_crop`. `distorted_box` is this with keyed numpy draws; the
    tests drive it with TF's own Philox stream and compare with TensorFlow's op."""
    lo, hi = _F32(aspect_range[0]), _F32(aspect_range[1])
    min_rel, max_rel = _F32(area_range[0]), _F32(area_range[1])
    for attempt in range(max_attempts):
        aspect = _F32(_F32(rand_float(attempt) * _F32(hi - lo)) + lo)
        # a generated crop has area >= 1 and covers >= 0 % of the implicit whole-image box: it is accepted
        box = _generate_random_crop(int(width), int(height), min_rel, max_rel, aspect, uniform)
        if box is not None:
            return box
    return 0, 0, int(height), int(width)


def distorted_box(height: int, width: int, rng: np.random.Generator, area_range=TF_AREA_RANGE,
                  aspect_range=TF_ASPECT_RANGE, max_attempts: int = TF_MAX_ATTEMPTS) -> tuple[int, int, int, int]:
    """(top, left, h, w) of `tf.image.sample_distorted_bounding_box` on a `height` x `width` image with no boxes,
    `min_object_covered=0` and `use_image_if_no_bounding_boxes=True` (vit_jax / big_vision's inception crop).

    Per attempt, as the kernel: aspect = RandFloat * (max - min) + min (uniform, float32); crop height uniform
    in [lrintf(sqrt(min_area / aspect)), max_height] where max_height = lrintf(sqrt(max_area / aspect)), capped
    so that lrintf(max_height * aspect) <= width and max_height <= height; width = lrintf(height * aspect); one
    row more (less) when rounding put the area below (above) the range; offsets uniform in
    [0, size - crop) (so a crop smaller than the image never touches its bottom/right edge, as in TF). The
    first valid attempt wins; after `max_attempts` invalid ones the whole image is returned. One block of
    max_attempts x 4 uint32 is drawn from `rng` whatever happens (column 0: the aspect's RandFloat, 1-3: the
    kernel's Uniform draws of that attempt), so the draws after it do not depend on the attempts."""
    bits = _uint32(rng, (max_attempts, 4))
    state = {"attempt": 0}

    def rand_float(attempt: int) -> np.float32:
        state["attempt"] = attempt
        return _rand_float(bits[attempt, 0])

    def uniform(n: int, k: int) -> int:
        return _uniform(bits[state["attempt"], k], n)

    return sample_box(height, width, rand_float, uniform, area_range, aspect_range, max_attempts)


def random_crop_offsets(height: int, width: int, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """(top, left) of a `size` square inside [height, width] as `tf.image.random_crop`: each offset is a random
    integer modulo (side - size + 1), so every offset including the last is possible. Draws 2 uint32."""
    if height < size or width < size:
        raise VitbenchError(f"random crop of {size} px from a {height}x{width} image; train_resize must be >= the crop size")
    bits = _uint32(rng, 2)
    return _uniform(bits[0], height - size + 1), _uniform(bits[1], width - size + 1)


def flip_draw(rng: np.random.Generator) -> bool:
    """True with probability 1/2 (`tf.image.random_flip_left_right`); draws 1 uint32."""
    return bool(_uint32(rng, 1)[0] >> 31)


def _as_array(img) -> np.ndarray:
    if isinstance(img, Image.Image):
        img = img if img.mode == "RGB" else img.convert("RGB")
        return np.asarray(img, dtype=np.uint8)
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 image [H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


def _squash(img, side_prep: Preprocessing) -> np.ndarray:
    """`img` squashed to `side_prep.size` square with the prep's resize (exactly what the decoded cache holds)."""
    if not isinstance(img, Image.Image):
        arr = _as_array(img)
        if side_prep.resize_impl == "tf" and side_prep.interpolation == "bilinear":  # resize_image's own path, minus 2 copies
            return tf_bilinear_resize(arr, side_prep.size, side_prep.size)
        img = Image.fromarray(arr)
    return resize_image(img, side_prep)


def train_source(img, prep_train: Preprocessing) -> np.ndarray:
    """For "resize_crop" / "none": the square the crop starts from, uint8 [T, T, 3] with T =
    `prep_train.train_source_size()`; bit for bit the decoded cache `prep_train.train_cache()` holds."""
    if prep_train.train_crop == "inception":
        raise ValueError("the inception crop starts from the original image, not from a resized square")
    return _squash(img, prep_train.train_cache())


def augment_source(src: np.ndarray, prep_train: Preprocessing, rng: np.random.Generator) -> np.ndarray:
    """The random part of "resize_crop" / "none" on `train_source(...)`: a uniform `size` crop (resize_crop),
    then the flip. Same draws, same result as `augment_original` on the image `src` came from."""
    s = prep_train.size
    if prep_train.train_crop == "resize_crop":
        top, left = random_crop_offsets(src.shape[0], src.shape[1], s, rng)
        out = src[top : top + s, left : left + s]
    elif prep_train.train_crop == "none":
        out = src
    else:
        raise ValueError("the inception crop starts from the original image: use augment_original")
    return _flip(out, prep_train, rng)


def _flip(out: np.ndarray, prep_train: Preprocessing, rng: np.random.Generator) -> np.ndarray:
    flip = flip_draw(rng)  # drawn whether or not flips are on: the stream does not depend on `hflip`
    if prep_train.hflip and flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.uint8)


def augment_original(img_uint8_hwc, prep_train: Preprocessing, rng: np.random.Generator) -> np.ndarray:
    """The training transform of one ORIGINAL decoded image (uint8 [H, W, 3] or an RGB PIL image) -> uint8 [S, S, 3].

    "inception": `distorted_box` in original pixels with `prep_train.train_crop_scale` / `train_crop_ratio`,
    slice, squash the crop to S with the prep's resize (`resize_impl = "tf"`: big_vision's `resize`, TF bilinear
    with half-pixel centres, no antialiasing, truncated to uint8; vit_jax keeps the resized crop in float, a
    difference below 1/255 per pixel). "resize_crop": squash the whole image to `train_source_size()` with the
    prep's resize, then a uniform S crop (`tf.image.random_crop`). "none": squash to S. Then a horizontal flip
    with probability 1/2 when `prep_train.hflip`. For a given crop kind the same number of values is drawn from
    `rng` in the same order, whatever the image."""
    if prep_train.train_crop != "inception":
        return augment_source(train_source(img_uint8_hwc, prep_train), prep_train, rng)
    arr = _as_array(img_uint8_hwc)
    top, left, h, w = distorted_box(arr.shape[0], arr.shape[1], rng, area_range=prep_train.train_crop_scale,
                                    aspect_range=prep_train.train_crop_ratio)
    crop = np.ascontiguousarray(arr[top : top + h, left : left + w])
    return _flip(_squash(crop, prep_train.train_cache()), prep_train, rng)


def describe(prep_train: Preprocessing) -> str:
    """One line for the record: what the training crop computes."""
    s, t = prep_train.size, prep_train.train_source_size()
    flip = ", then a horizontal flip with p=1/2" if prep_train.hflip else ""
    resize = f"resize_impl={prep_train.resize_impl!r} {prep_train.interpolation}"
    if prep_train.train_crop == "inception":
        lo, hi = prep_train.train_crop_ratio
        a0, a1 = prep_train.train_crop_scale
        return (f"inception crop on the original image (TF sample_distorted_bounding_box: area {a0:g}-{a1:g}, "
                f"aspect {lo:g}-{hi:g}, {TF_MAX_ATTEMPTS} attempts, whole image as fallback), squashed to {s} px ({resize}){flip}")
    if prep_train.train_crop == "resize_crop":
        return f"original squashed to {t} px ({resize}), uniform {s} px crop (tf.image.random_crop){flip}"
    return f"original squashed to {s} px ({resize}){flip}"
