"""Weighted k-nearest-neighbour classification on cached frozen features (DINO's k-NN evaluation).

Follows DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", §4.1;
facebookresearch/dino `eval_knn.py`, `knn_classifier`): train and test features are L2-normalised, each
test image takes the k training images of highest cosine similarity, neighbour i votes for its class with
weight exp(sim_i / T), and the class with the largest summed vote wins. Defaults k = 20, T = 0.07 as
DINO's (its `--nb_knn` default also evaluates 10, 100 and 200: give `k` as a list, one cell per k). Train
on the task's training split (VTAB-1k: train800val200), score its test split. Features come from the
few-shot feature cache (`vitbench/features.py`), shared when the preprocessing agrees. Deterministic: no
seeds. Exercised by `vitbench run --method knn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitbench.errors import VitbenchError
from vitbench.methods.base import (
    FeatureParams, Method, as_list, differing_fields, is_int, is_positive_number, register, table_row_key,
)


@dataclass(frozen=True)
class KnnParams(FeatureParams):  # few-shot's eval preprocessing, so both share one feature cache
    k: Any = 20  # one value or a list (one cell each)
    temperature: float = 0.07

    def check(self, where: str) -> None:
        super().check(where)
        ks = as_list(self.k)
        if not ks or any(not is_int(v) or v < 1 for v in ks):
            raise VitbenchError(f"{where}: knn k must be a positive integer or a list of them (e.g. [10, 20, 100, 200]), got {self.k!r}")
        if not is_positive_number(self.temperature):
            raise VitbenchError(f"{where}: knn temperature must be a positive number, got {self.temperature!r}")


def knn_predict(train_x, train_y, test_x, *, k: int, temperature: float, num_classes: int, chunk: int = 1024) -> np.ndarray:
    """Class ids of `test_x` by temperature-weighted votes of the k most cosine-similar training rows.

    Ties in the summed votes go to the smaller class id (argmax takes the first maximum).
    """
    import torch

    train = torch.nn.functional.normalize(torch.from_numpy(np.array(train_x, dtype=np.float32)), dim=1)  # copy: memmaps
    labels = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    k = min(int(k), len(train))
    out = []
    for start in range(0, len(test_x), chunk):
        test = torch.nn.functional.normalize(torch.from_numpy(np.array(test_x[start:start + chunk], dtype=np.float32)), dim=1)
        sim, idx = (test @ train.T).topk(k, dim=1, largest=True, sorted=True)
        votes = torch.zeros(len(test), num_classes, dtype=torch.float32)
        votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
        out.append(votes.argmax(dim=1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


class Knn(Method):
    name = "knn"
    summary = "weighted k-NN on frozen features: cosine similarity, top-k votes weighted exp(sim/T) (DINO eval_knn)"
    Params = KnnParams
    label_params = ("k",)
    table_title = "k-NN accuracy (%)"

    def expand(self, params: KnnParams) -> list[dict[str, Any]]:
        return [{**params.key_params(), "k": k} for k in as_list(params.k)]

    def run_cell(self, cell, ctx, deps):
        import time

        from vitbench.cells import CellResult
        from vitbench.data.order import check_class_coverage
        from vitbench.features import cell_features, classification_metrics

        p, task = cell.params, cell.task
        t0 = time.perf_counter()
        feats = cell_features(cell, ctx, [task.train_split, task.test_split])
        (train, f_train), (test, f_test) = feats.splits[task.train_split], feats.splits[task.test_split]
        coverage = check_class_coverage(task, task.train_split, train.labels, task.test_split, test.labels)
        t1 = time.perf_counter()
        preds = knn_predict(f_train.array, train.labels, f_test.array, k=p["k"], temperature=p["temperature"],
                            num_classes=task.num_classes)
        details = {"k": p["k"], "k_used": min(p["k"], len(train)), "temperature": p["temperature"],
                   "n_train": len(train), "n_test": len(test), "feature_dim": int(f_train.array.shape[1]),
                   "train_split": task.train_split, "test_split": task.test_split, "class_coverage": coverage,
                   "timings": {"features_s": round(t1 - t0, 4), "knn_s": round(time.perf_counter() - t1, 4)}}
        return CellResult(metrics=classification_metrics(preds, test, task.metric), details=details,
                          provenance=feats.provenance({"train": task.train_split, "test": task.test_split}))

    def setting(self, rec) -> str:
        p = rec.get("params") or {}
        return f"k={p.get('k')}, T={p.get('temperature'):g}" if p.get("temperature") is not None else f"k={p.get('k')}"

    def summary_table(self, records):
        import pandas as pd

        # One row per (setup, task): records that differ in anything but k and the seed never share a row.
        rows: dict[tuple, dict[str, Any]] = {}
        for rec in records:
            p, metric = rec.get("params") or {}, ((rec.get("cell") or {}).get("task") or {}).get("metric", "top1")
            value = (rec.get("metrics") or {}).get(metric)
            setup = table_row_key(rec, ("k",))
            row = rows.setdefault((setup, rec.get("task")), {"model": rec.get("model"), "task": rec.get("task"), "_setup": setup})
            if value is not None:
                row.setdefault(f"k={p.get('k')}", []).append(100 * value)
        for row in rows.values():  # mean over seeds
            for col, vals in list(row.items()):
                if col.startswith("k="):
                    row[col] = f"{sum(vals) / len(vals):.2f}" + (f" (n={len(vals)})" if len(vals) > 1 else "")
        frame = pd.DataFrame(list(rows.values())).fillna("")
        ks = sorted((c for c in frame.columns if c.startswith("k=")), key=lambda c: int(c[2:]))
        setups = list(dict.fromkeys(frame["_setup"]))
        labels = differing_fields(setups)
        frame["setup"] = frame["_setup"].map(labels)
        cols = ["model", "task"] + (["setup"] if len(setups) > 1 else []) + ks
        frame = frame[cols]
        return frame.drop(columns="model") if frame["model"].nunique() == 1 else frame


register(Knn())
