"""Label transforms: map a source's raw labels to the task's class ids (VTAB's label maps).

Each transform takes a sequence of raw label values (one per example; a scalar, a list of per-object
values, or a dict of per-object fields as HF datasets store TFDS `objects`) and returns int64 class ids.
They are pure functions, applied by `vitbench.data.load_split` only where the source carries raw labels
(a source can turn the task's transform off with `label_transform = ""`). Facts: docs/vtab.md#label-maps.
Exercised by every `vitbench run` on the structured VTAB tasks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vitbench.errors import VitbenchError

# task_adaptation data/clevr.py: thresholds [0, 8, 8.5, 9, 9.5, 10, 100]; label = largest i with t[i] < d.
CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
# task_adaptation data/kitti.py: thresholds [-100, 8, 20, 999], sentinel 1000 when no vehicle.
KITTI_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)
KITTI_NO_VEHICLE_DEPTH = 1000.0
KITTI_VEHICLE_TYPES = (0, 1, 2)  # Car, Van, Truck in TFDS kitti's type order


def _bin_largest_below(value: float, thresholds: Sequence[float]) -> int:
    """Largest index i with thresholds[i] < value (task_adaptation's `tf.reduce_max(tf.where(t < d))`)."""
    below = [i for i, t in enumerate(thresholds) if t < value]
    if not below:
        raise VitbenchError(f"label value {value} is below the first threshold {thresholds[0]}; the source's raw labels are not what this task expects")
    return below[-1]


def _objects_field(raw: Any, field: str) -> Any:
    if isinstance(raw, dict):
        if field not in raw:
            raise VitbenchError(f"raw label has fields {sorted(raw)} but not {field!r}; point label_key at the right column")
        return raw[field]
    return raw


def clevr_count(raw: Sequence[Any]) -> np.ndarray:
    """CLEVR count_all: number of objects - 3 (counts 3..10 -> 0..7). Accepts counts or object lists."""
    out = []
    for r in raw:
        if isinstance(r, dict):
            r = len(next(iter(r.values()))) if r else 0
        elif isinstance(r, (list, tuple, np.ndarray)):
            r = len(r)
        out.append(int(r) - 3)
    return _check_range(np.asarray(out, dtype=np.int64), 8, "clevr_count")


def _min_depth(r: Any) -> float:
    """Smallest depth: a precomputed scalar, a list of [x, y, z] pixel coords, or a dict with pixel_coords."""
    arr = np.asarray(_objects_field(r, "pixel_coords"), dtype=np.float64)
    if arr.ndim == 0:
        return float(arr)
    return float(arr.reshape(-1, 3)[:, 2].min())


def clevr_closest_distance(raw: Sequence[Any]) -> np.ndarray:
    """CLEVR closest_object_distance: bin the smallest object depth (pixel_coords[:, 2]) into 6 classes."""
    return np.asarray([_bin_largest_below(_min_depth(r), CLEVR_DISTANCE_THRESHOLDS) for r in raw], dtype=np.int64)


def _kitti_min_vehicle_depth(r: Any) -> float:
    if isinstance(r, dict):
        types = np.asarray(_objects_field(r, "type")).reshape(-1)
        if types.size and types.dtype.kind in "USO":  # e.g. "Car": np.isin with the ids would match nothing
            raise VitbenchError(
                f"KITTI object types are strings (e.g. {str(types[0])!r}), but this label map needs TFDS kitti's "
                "integer type ids (Car=0, Van=1, Truck=2, ...); use a source with TFDS's encoding or map the types to those ids first"
            )
        loc = np.asarray(_objects_field(r, "location"), dtype=np.float64).reshape(-1, 3)
        depths = loc[np.isin(types, KITTI_VEHICLE_TYPES), 2]
        return float(min(depths.min(), KITTI_NO_VEHICLE_DEPTH)) if depths.size else KITTI_NO_VEHICLE_DEPTH
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return KITTI_NO_VEHICLE_DEPTH
    return float(r)


def kitti_closest_vehicle(raw: Sequence[Any]) -> np.ndarray:
    """KITTI closest_vehicle_distance: z of the nearest Car/Van/Truck binned <=8, <=20, <=999 m, none -> 3."""
    return np.asarray([_bin_largest_below(_kitti_min_vehicle_depth(r), KITTI_DISTANCE_THRESHOLDS) for r in raw], dtype=np.int64)


def dsprites_x_position(raw: Sequence[Any]) -> np.ndarray:
    """dSprites label_x_position with num_classes=16: raw 0..31 // 2."""
    values = _ints(raw, 32, "dsprites_x_position")
    return values // 2


def dsprites_orientation(raw: Sequence[Any]) -> np.ndarray:
    """dSprites label_orientation with num_classes=16: floor(raw / 2.5) over 40 raw orientations."""
    values = _ints(raw, 40, "dsprites_orientation")
    return np.floor(values / 2.5).astype(np.int64)


def smallnorb_azimuth(raw: Sequence[Any]) -> np.ndarray:
    """smallNORB azimuth from the original dataset's values 0, 2, ..., 34 -> 0..17 (what TFDS stores)."""
    values = _ints(raw, 35, "smallnorb_azimuth")
    if np.any(values % 2):
        raise VitbenchError("smallnorb_azimuth expects the raw smallNORB azimuths 0,2,...,34; this source's labels are already 0..17, so set label_transform = \"\" on it")
    return values // 2


def smallnorb_elevation(raw: Sequence[Any]) -> np.ndarray:
    """smallNORB elevation 0..8, used as is (TFDS `label_elevation`); checked for range."""
    return _ints(raw, 9, "smallnorb_elevation")


def one_based(raw: Sequence[Any]) -> np.ndarray:
    """Labels stored 1-based (e.g. old Flowers-102 copies) -> 0-based."""
    return np.asarray([int(r) for r in raw], dtype=np.int64) - 1


def _ints(raw: Sequence[Any], limit: int, name: str) -> np.ndarray:
    values = np.asarray([int(r) for r in raw], dtype=np.int64)
    return _check_range(values, limit, name, raw_label=True)


def _check_range(values: np.ndarray, limit: int, name: str, raw_label: bool = False) -> np.ndarray:
    if values.size and (values.min() < 0 or values.max() >= limit):
        what = "raw labels" if raw_label else "labels"
        raise VitbenchError(
            f"label transform {name!r}: {what} out of range [0, {limit}) (min {values.min()}, max {values.max()}); this source does not carry the raw labels the transform expects"
        )
    return values


LABEL_TRANSFORMS: dict[str, Callable[[Sequence[Any]], np.ndarray]] = {
    "clevr_count": clevr_count,
    "clevr_closest_distance": clevr_closest_distance,
    "kitti_closest_vehicle": kitti_closest_vehicle,
    "dsprites_x_position": dsprites_x_position,
    "dsprites_orientation": dsprites_orientation,
    "smallnorb_azimuth": smallnorb_azimuth,
    "smallnorb_elevation": smallnorb_elevation,
    "one_based": one_based,
}


def apply_label_transform(name: str, raw: Sequence[Any]) -> np.ndarray:
    """Apply transform `name` ('' = labels as int64 unchanged)."""
    if not name:
        return np.asarray([int(r) for r in raw], dtype=np.int64)
    if name not in LABEL_TRANSFORMS:
        from vitbench.errors import unknown_name

        raise unknown_name("label transform", name, LABEL_TRANSFORMS)
    return LABEL_TRANSFORMS[name](raw)
