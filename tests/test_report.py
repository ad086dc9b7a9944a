"""Report tables on hand-made records: seeds, definitions, dedup, VTAB means, deviations, deltas, l2 choice."""

import json

import pandas as pd
import pytest

from vitbench.report import analyse, build_report
from vitbench.report.tables import aggregate, tidy

PAPER_FT = {"steps": 2500, "lr": 0.01, "batch_size": 512, "train_crop": "inception", "hflip": True, "momentum": 0.9,
            "weight_decay": 0.0, "grad_clip": 1.0}


def rec(task, group, value, *, seed=0, model="vit_l16", method="finetune", pretrain="ImageNet-21k", params=None,
        details=None, metric="top1", weights="timm/vit_large_patch16_224.orig_in21k", img_size=384, suite="vtab", prov=None, cell=None):
    params = dict(PAPER_FT) if params is None else params
    cell = cell if cell is not None else {"task": {"name": task, "metric": metric}, "model": model, "weights_id": weights,
                                          "method": method, "params": params, "seed": seed, "img_size": img_size}
    return {
        "suite": suite, "task": task, "group": group, "model": model, "weights_id": weights, "random_init": False,
        "method": method, "params": params, "seed": seed, "key": f"{suite}-{task}-{seed}-{json.dumps(params, sort_keys=True)}-{model}-{weights}-{pretrain}-{img_size}",
        "metrics": {metric: value}, "details": details or {}, "cell": cell, "versions": {"vitbench": "0.1.0"},
        "provenance": {"weights": {"pretrained_data": pretrain, "random_init": False}, **(prov or {})},
        "timestamp": f"2026-01-0{seed + 1}T00:00:00+00:00",
    }


def test_mean_and_std_over_seeds():
    agg = aggregate(tidy([rec("dtd", "natural", 0.70, seed=0), rec("dtd", "natural", 0.74, seed=1)]))
    row = agg.iloc[0]
    assert row["mean"] == pytest.approx(72.0) and row["std"] == pytest.approx(2.8284271) and row["n"] == 2


def test_same_key_counts_once_and_failed_and_null_params_are_not_results():
    recs = [rec("dtd", "natural", v, seed=s) for s, v in ((0, 0.50), (1, 0.60), (2, 0.64))]
    failed = {**rec("dtd", "natural", 0.0, seed=3), "status": "failed", "error": "diverged"}
    broken = {**rec("dtd", "natural", 0.99, seed=4), "params": None}
    a = analyse(recs + [dict(r) for r in recs] + [failed, broken])  # the folder copied twice
    row = a.summary.iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(58.0) and row["std"] == pytest.approx(pd.Series([50, 60, 64.0]).std())
    assert len(a.failed) == 1
    assert any("counted once" in w for w in a.warnings) and any("without a params" in w for w in a.warnings)


def test_different_definitions_are_never_pooled_and_say_how_they_differ():
    p64 = {"shots": 5, "l2": 1024.0, "l2_select": "fixed", "precision": "float64"}
    p32 = {**p64, "precision": "float32"}
    recs = [rec("dtd", "natural", 0.70, method="fewshot", params=p64), rec("dtd", "natural", 0.50, method="fewshot", params=p32),
            rec("dtd", "natural", 0.74, seed=1, method="fewshot", params=p64)]
    other_version = rec("dtd", "natural", 0.10, seed=2, method="fewshot", params=p64)
    other_version["versions"] = {"vitbench": "9.9"}
    a = analyse(recs + [other_version])
    assert sorted(a.summary["n"]) == [1, 1, 2]
    labels = set(a.summary["definition"])
    assert any("params.precision=float32" in x for x in labels) and any("vitbench=9.9" in x for x in labels)
    assert len(a.fewshot[a.fewshot["task"] == "dtd"]) == 3  # three rows, never one pooled row
    assert a.agg["line_id"].nunique() == 3  # three separate curves in the accuracy-vs-shots figure


def test_vtab_table_means_by_hand():
    recs = []
    for task, group, v0, v1 in (("caltech101", "natural", .80, .84), ("dtd", "natural", .70, .74),
                                ("eurosat", "specialized", .90, .92), ("dmlab", "structured", .40, .44)):
        recs += [rec(task, group, v0, seed=0), rec(task, group, v1, seed=1)]
    a = analyse(recs)
    num = a.vtab_numeric.iloc[0]
    assert num["caltech101"] == pytest.approx(82) and num["natural_mean"] == pytest.approx(77)
    assert num["specialized_mean"] == pytest.approx(91) and num["structured_mean"] == pytest.approx(42)
    assert num["mean_over_tasks"] == pytest.approx(71.75) and num["mean_of_group_means"] == pytest.approx(70.0)
    assert num["mean_over_tasks_std"] == pytest.approx(3.5 / 2 ** 0.5)  # per-seed means 70.0 and 73.5
    shown = a.vtab.iloc[0]
    assert list(a.vtab.columns[5:12]) == ["caltech101", "cifar100", "dtd", "flowers102", "pets", "sun397", "svhn"]
    assert shown["cifar100"] == "missing" and shown["caltech101"] == "82.00 ± 2.83"
    assert shown["mean over 19 tasks"] == "71.75 ± 2.47 (over 4/19 tasks)"
    assert shown["natural mean (7 tasks)"] == "77.00 ± 2.83 (over 2/7 tasks)"
    t2 = a.table2[a.table2["pretrain"] == "ImageNet-21k"].set_index("weights")
    assert t2.loc["timm/vit_large_patch16_224.orig_in21k", "VTAB (19 tasks)"] == "71.75 ± 2.47 (over 4/19 tasks)"
    assert t2.loc["paper Table 2", "VTAB (19 tasks)"] == "72.72" and t2.loc["paper Table 2", "CIFAR-10"] == "99.15"


def test_paper_comparison_deltas_and_deviations_by_hand():
    ok = rec("dtd", "natural", 0.75)
    off = rec("dtd", "natural", 0.75, params={**PAPER_FT, "steps": 500}, img_size=224, suite="mine",
              weights="timm/vit_large_patch16_224.augreg_in21k", prov={"train": {"lossy": True, "substitutions": []}})
    rand = rec("dtd", "natural", 0.75, pretrain="random-init", suite="r")
    cmp = analyse([ok, off, rand]).comparison.set_index("setting")
    assert len(cmp) == 2  # random-init never lines up with a paper number (no such pre-training data)
    good = cmp.loc["2500 steps, batch 512, lr 0.01"]
    assert good["paper (%)"] == "74.10" and good["delta"] == "+0.90" and good["comparable"] == "yes"  # Table 9 I21k DTD
    assert good["deviations"] == "none recorded"
    bad = cmp.loc["500 steps, batch 512, lr 0.01"]
    assert bad["delta"] == "+0.90 (not comparable)" and bad["comparable"] == "no"
    for text in ("not the paper's released checkpoint", "resolution 224 px (paper 384)", "steps 500 (paper 2500)", "lossy (JPEG) copy of the train"):
        assert text in bad["deviations"]


def test_table5_lr_selection_is_a_deviation_unless_chosen_on_dev_from_the_grid():
    fixed = rec("pets_full", "paper", 0.95, params={**PAPER_FT, "steps": 500})
    chosen = rec("pets_full", "paper", 0.95, suite="p2", params={**PAPER_FT, "steps": 500, "lr": None, "stage": "final",
                                                                 "lr_grid": [0.001, 0.003, 0.01, 0.03]},
                 details={"lr_selection": {"chosen_lr": 0.003}})
    cmp = analyse([fixed, chosen]).comparison
    t5 = cmp[cmp["source"].str.startswith("Table 5")].set_index("comparable")
    assert "lr 0.01 (paper: chosen on a dev split" in t5.loc["no", "deviations"]
    assert t5.loc["yes", "paper (%)"] == "94.73" and t5.loc["yes", "delta"] == "+0.27"


def _fs(task, per_l2, mode, seed=0):
    params = {"shots": 5, "l2": 1024.0, "l2_select": mode, "l2_grid": [1.0, 32.0, 1024.0]}
    details = {"acc_per_l2": {repr(k): v for k, v in per_l2.items()}, "l2_select": mode}
    return rec(task, "natural", per_l2[1024.0], seed=seed, method="fewshot", params=params, details=details, suite="fs")


ACC = {"t1": {1.0: 0.9, 32.0: 0.8, 1024.0: 0.5}, "t2": {1.0: 0.2, 32.0: 0.8, 1024.0: 0.6}, "t3": {1.0: 0.7, 32.0: 0.4, 1024.0: 0.6}}


def test_each_l2_selection_is_shown_at_its_own_l2():
    # mean ranks over t1..t3: l2=1 -> 7/3, 32 -> 2, 1024 -> 5/3: mean-rank picks 1 for every task.
    # leave-self-out: t1 -> tie of all three over (t2, t3) -> 1024 (closest to the fixed l2); t2 -> 1; t3 -> 32.
    recs = [_fs(t, a, "mean-rank") for t, a in ACC.items()] + [_fs(t, a, "leave-self-out") for t, a in ACC.items()]
    long = tidy(recs).set_index(["setting", "task"])
    assert long.loc[("5-shot, l2 mean-rank", "t1"), "value"] == pytest.approx(90)
    assert [long.loc[("5-shot, l2 leave-self-out", t), "value"] for t in ("t1", "t2", "t3")] == pytest.approx([50, 20, 40])
    assert list(long.loc["5-shot, l2 leave-self-out", "chosen_l2"]) == [1024.0, 1.0, 32.0]


def test_mean_rank_over_one_task_uses_the_fixed_l2_and_says_so():
    a = analyse([_fs("t1", ACC["t1"], "mean-rank")])
    assert a.long.iloc[0]["value"] == pytest.approx(50) and "own test accuracy" in a.long.iloc[0]["note"]
    assert any("own test accuracy" in w for w in a.warnings)


def test_build_report_writes_everything_and_escapes_names(tmp_path):
    hostile = "<img src=x onerror=alert(1)>"
    recs = [rec(hostile, "natural", v, seed=s, method="fewshot", params={"shots": k, "l2": 1024.0, "l2_select": "fixed"}, model=hostile)
            for k, v in ((1, 0.3), (5, 0.6)) for s in (0, 1)]
    recs.append(rec("$\\badmacro{x}$", "natural", 0.9, details={"loss_curve": [{"step": 1, "lr": 0.1, "loss": 2.0}, {"step": 2, "lr": 0.0, "loss": 1.0}]}))
    paths = build_report(recs, tmp_path / "r", title="t")
    text = paths["html"].read_text()
    assert hostile not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert text.count("data:image/png;base64,") >= 3 and "id='provenance'" in text
    assert "too little data" in text  # e.g. Figure 5: no JFT weights here
    summary = pd.read_csv(paths["csv"])
    assert {"mean", "std", "n"} <= set(summary.columns) and summary["mean"].dtype == float
    assert paths["md"].read_text().startswith("# t")
    assert "<h2></h2>" not in text and "<section><h2>Table 2 style (%)</h2></section>" not in text


def test_large_record_sets_link_the_per_record_csv(tmp_path):
    recs = [rec("dtd", "natural", 0.5 + 0.0001 * s, seed=s) for s in range(600)]
    paths = build_report(recs, tmp_path / "r")
    text = paths["html"].read_text()
    assert "600 records: see results.csv" in text and len(pd.read_csv(paths["results_csv"])) == 600
