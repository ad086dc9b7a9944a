"""Label transforms on hand-computed cases, boundaries included (docs/vtab.md#label-maps)."""

import numpy as np
import pytest

from vitbench.data.labels import LABEL_TRANSFORMS, apply_label_transform
from vitbench.errors import VitbenchError


def test_clevr_count():
    assert LABEL_TRANSFORMS["clevr_count"]([3, 4, 10]).tolist() == [0, 1, 7]
    objects = {"pixel_coords": [[1, 2, 9.0]] * 5, "color": ["red"] * 5}
    assert LABEL_TRANSFORMS["clevr_count"]([objects, [0] * 6]).tolist() == [2, 3]
    with pytest.raises(VitbenchError):
        LABEL_TRANSFORMS["clevr_count"]([2])


def test_clevr_distance_boundaries():
    f = LABEL_TRANSFORMS["clevr_closest_distance"]
    # (0,8]->0, (8,8.5]->1, (8.5,9]->2, (9,9.5]->3, (9.5,10]->4, (10,100]->5
    assert f([7.9, 8.0, 8.01, 8.5, 8.9, 9.0, 9.4, 9.5, 10.0, 10.01, 50.0]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5, 5]
    # the closest object decides: min depth over pixel_coords[:, 2]
    scene = {"pixel_coords": [[10, 20, 12.0], [30, 40, 8.0], [1, 1, 9.7]]}
    assert f([scene, [[0, 0, 9.2], [0, 0, 11.0]]]).tolist() == [0, 3]


def test_kitti_closest_vehicle():
    f = LABEL_TRANSFORMS["kitti_closest_vehicle"]
    assert f([5.0, 8.0, 8.1, 20.0, 25.0, 999.0, None]).tolist() == [0, 0, 1, 1, 2, 2, 3]
    # types: 0 Car, 1 Van, 2 Truck, 3 Pedestrian; a near pedestrian does not count
    frame = {"type": [3, 0, 2], "location": [[0, 0, 2.0], [0, 0, 30.0], [0, 0, 15.0]]}
    nobody = {"type": [3], "location": [[0, 0, 4.0]]}
    assert f([frame, nobody]).tolist() == [1, 3]


def test_dsprites():
    assert LABEL_TRANSFORMS["dsprites_x_position"]([0, 1, 2, 3, 30, 31]).tolist() == [0, 0, 1, 1, 15, 15]
    ori = LABEL_TRANSFORMS["dsprites_orientation"]
    # floor(x / 2.5): {0,1,2}->0, {3,4}->1, {5,6,7}->2, ... 39 -> 15
    assert ori([0, 1, 2, 3, 4, 5, 7, 8, 39]).tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 15]
    assert np.bincount(ori(list(range(40)))).tolist() == [3, 2] * 8
    with pytest.raises(VitbenchError, match="out of range"):
        ori([40])


def test_smallnorb():
    assert LABEL_TRANSFORMS["smallnorb_azimuth"]([0, 2, 34]).tolist() == [0, 1, 17]
    with pytest.raises(VitbenchError, match="already"):
        LABEL_TRANSFORMS["smallnorb_azimuth"]([1])
    assert LABEL_TRANSFORMS["smallnorb_elevation"]([0, 8]).tolist() == [0, 8]


def test_identity_and_unknown():
    assert apply_label_transform("", [1, 2]).dtype == np.int64
    with pytest.raises(VitbenchError, match="Did you mean"):
        apply_label_transform("clevr_cont", [1])
