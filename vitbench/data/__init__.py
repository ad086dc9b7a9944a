"""The data layer: task splits from TF-free sources with task_adaptation's exact slices and label maps.

Public API: `load_split(task, split, *, data_root=None, skip_corrupt=False) -> ImageSplit`;
`vitbench.data.transforms` (Preprocessing, preprocessing_for, resized_images, normalize, train_augment);
`vitbench.data.splits.parse_split`; `vitbench.data.labels.LABEL_TRANSFORMS`; `vitbench.data.real`
(ReaL metric); `vitbench.data.prepare` (prepare / verify / info, behind `vitbench data ...`).
"""

from vitbench.data.base import ImageSplit
from vitbench.data.loader import default_cache_dir, default_data_root, load_split

__all__ = ["ImageSplit", "load_split", "default_cache_dir", "default_data_root"]
