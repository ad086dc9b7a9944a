"""k-NN on frozen features (DINO eval_knn): the weighted vote, directly against a plain loop."""

import numpy as np
import pytest

from vitbench.methods.knn import knn_predict


def reference_knn(train_x, train_y, test_x, k, t, num_classes):
    """DINO's knn_classifier written plainly: cosine top-k, votes exp(sim / T) summed per class."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    out = []
    for row in test_x:
        sim = a @ (row / np.linalg.norm(row))
        top = np.argsort(-sim, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for i in top:
            votes[train_y[i]] += np.exp(sim[i] / t)
        out.append(int(np.argmax(votes)))
    return np.array(out)


@pytest.mark.parametrize("k, t", [(1, 0.07), (5, 0.07), (20, 0.5), (200, 0.07)])
def test_matches_the_plain_loop(k, t):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    train_y = rng.integers(0, 4, size=120)
    train_x = centers[train_y] + 0.8 * rng.normal(size=(120, 16))
    test_y = rng.integers(0, 4, size=50)
    test_x = centers[test_y] + 0.8 * rng.normal(size=(50, 16))
    got = knn_predict(train_x, train_y, test_x, k=k, temperature=t, num_classes=4, chunk=7)
    assert got.tolist() == reference_knn(train_x, train_y, test_x, min(k, 120), t, 4).tolist()
    assert (got == test_y).mean() > 0.8


def test_similarity_weights_decide_between_classes():
    # two neighbours of class 0 at moderate similarity, one of class 1 almost identical: with a small T the
    # near-identical one outvotes the pair; with a large T (near-uniform weights) the pair wins.
    train_x = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    train_y = np.array([1, 0, 0])
    test_x = np.array([[1.0, 0.01]])
    assert knn_predict(train_x, train_y, test_x, k=3, temperature=0.07, num_classes=2).tolist() == [1]
    assert knn_predict(train_x, train_y, test_x, k=3, temperature=100.0, num_classes=2).tolist() == [0]
    assert knn_predict(train_x * 5.0, train_y, test_x, k=3, temperature=0.07, num_classes=2).tolist() == [1]  # scale-free


def _record(img_size, k, value, seed=0):
    return {"model": "vit_ti16", "task": "digits", "suite": "smoke", "method": "knn", "weights_id": "none", "key": f"{img_size}-{k}-{seed}",
            "params": {"k": k, "temperature": 0.07, "img_size": img_size}, "metrics": {"top1": value},
            "cell": {"seed": seed, "task": {"metric": "top1"}, "img_size": img_size, "params": {"k": k}},
            "versions": {"vitbench": "0.1.0"}}


def test_table_keeps_setups_apart():
    """Records of two setups (here two resolutions) never share a row: each value stays beside its own setup."""
    from vitbench.methods import get_method

    recs = [_record(32, 10, 0.8174), _record(32, 20, 0.8057), _record(48, 10, 0.5628), _record(48, 20, 0.5611)]
    table = get_method("knn").summary_table(recs)
    assert len(table) == 2 and list(table.columns) == ["task", "setup", "k=10", "k=20"]
    by_setup = {row["setup"]: (row["k=10"], row["k=20"]) for _, row in table.iterrows()}
    assert by_setup == {"img_size=32": ("81.74", "80.57"), "img_size=48": ("56.28", "56.11")}


def test_table_averages_seeds_of_one_setup():
    from vitbench.methods import get_method

    table = get_method("knn").summary_table([_record(32, 10, 0.80, seed=0), _record(32, 10, 0.90, seed=1)])
    assert len(table) == 1 and table.iloc[0]["k=10"] == "85.00 (n=2)" and "setup" not in table.columns
