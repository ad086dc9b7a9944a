"""big_vision's resize (TF bilinear, no antialias, half-pixel centres, truncation to uint8) against the formula
computed by hand, and the PIL option kept beside it."""

import math

import numpy as np
import pytest
from PIL import Image

from vitbench.data.image_cache import cache_file
from vitbench.data.transforms import Preprocessing, resize_image, tf_bilinear_resize
from vitbench.errors import VitbenchError


def formula(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear with half-pixel centres, pixel by pixel in float64, then floor (what tf.cast to uint8 does)."""
    in_h, in_w = arr.shape[:2]
    a = arr.astype(np.float64)
    out = np.zeros((out_h, out_w, arr.shape[2]))
    for i in range(out_h):
        sy = (i + 0.5) * in_h / out_h - 0.5
        y0, y1, fy = max(math.floor(sy), 0), min(math.ceil(sy), in_h - 1), sy - math.floor(sy)
        for j in range(out_w):
            sx = (j + 0.5) * in_w / out_w - 0.5
            x0, x1, fx = max(math.floor(sx), 0), min(math.ceil(sx), in_w - 1), sx - math.floor(sx)
            top = a[y0, x0] * (1 - fx) + a[y0, x1] * fx
            bottom = a[y1, x0] * (1 - fx) + a[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


def test_exact_values_by_hand():
    # 1x4 -> 1x2: source x = 2j + 0.5, so each output is the mean of two neighbours, truncated (not rounded)
    arr = np.array([[[10], [13], [200], [255]]], dtype=np.uint8).repeat(3, axis=2)
    out = tf_bilinear_resize(arr, 1, 2)
    assert out[0, :, 0].tolist() == [11, 227]  # 11.5 -> 11, 227.5 -> 227 (PIL would round and antialias)
    # 1x2 -> 1x4: source x = j/2 - 0.25; the first is clamped to pixel 0, then weights 0.75/0.25
    up = tf_bilinear_resize(np.array([[[0], [101]]], dtype=np.uint8).repeat(3, axis=2), 1, 4)
    assert up[0, :, 0].tolist() == [0, 25, 75, 101]  # 25.25, 75.75 truncated


@pytest.mark.parametrize("shape,out", [((37, 53), (24, 24)), ((20, 20), (56, 56)), ((64, 48), (32, 40)), ((256, 256), (224, 224))])
def test_matches_formula(shape, out):
    rng = np.random.default_rng(sum(shape))
    arr = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    got = tf_bilinear_resize(arr, *out).astype(np.int64)
    ref = formula(arr, *out)
    exact = np.floor(ref).astype(np.int64)
    # float32 (TF, ours) vs float64 (reference) can only differ where the value is within rounding of an integer
    near_int = np.abs(ref - np.rint(ref)) < 1e-3
    assert np.array_equal(got[~near_int], exact[~near_int])
    assert np.abs(got - exact).max() <= 1


def test_default_is_tf_and_pil_is_kept():
    arr = np.random.default_rng(0).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    prep = Preprocessing(size=224, resize="squash_crop", crop_pct=0.875)
    assert prep.resize_impl == "tf" and prep.to_dict()["resize_impl"] == "tf"
    assert np.array_equal(resize_image(img, prep), tf_bilinear_resize(arr, 256, 256)[16:240, 16:240])
    small = Preprocessing(size=100)
    tf_out, pil_out = resize_image(img, small), resize_image(img, Preprocessing(size=100, resize_impl="pil"))
    assert np.array_equal(pil_out, np.asarray(img.resize((100, 100), Image.Resampling.BILINEAR)))
    assert not np.array_equal(tf_out, pil_out)  # PIL antialiases when shrinking


def test_cache_key_and_validation():
    class Split:
        fingerprint = "f"

        def __len__(self):
            return 3

    assert cache_file(Split(), Preprocessing(size=8), "/tmp/c") != cache_file(Split(), Preprocessing(size=8, resize_impl="pil"), "/tmp/c")
    with pytest.raises(VitbenchError, match="resize_impl"):
        Preprocessing(size=8, resize_impl="cv2")
    with pytest.raises(VitbenchError, match="bilinear"):
        resize_image(Image.new("RGB", (10, 10)), Preprocessing(size=8, interpolation="bicubic"))


def test_feature_cache_key_has_resize_impl_and_feature_layer():
    from vitbench.features import FeatureKey

    def key(prep, layer="cls"):
        return FeatureKey("sha", prep.to_dict(), "fp", "train", feature_layer=layer).digest

    assert key(Preprocessing(size=8)) != key(Preprocessing(size=8, resize_impl="pil"))
    assert key(Preprocessing(size=8)) != key(Preprocessing(size=8), "representation")
