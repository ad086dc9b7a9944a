"""Report tables: seed aggregation, VTAB group means (both overall numbers), paper comparison, l2 choice."""

import pandas as pd
import pytest

from vitbench.report import build_report
from vitbench.report.tables import aggregate, paper_comparison, summary_table, tidy, vtab_means


def rec(task, group, value, *, seed=0, model="vit_l16", method="finetune", pretrain="ImageNet-21k", params=None, details=None, metric="top1"):
    params = params or {"steps": 2500, "lr": 0.01, "batch_size": 512}
    return {
        "suite": "vtab", "task": task, "group": group, "model": model, "weights_id": "timm/x", "random_init": False,
        "method": method, "params": params, "seed": seed, "key": f"{task}-{seed}-{params.get('shots')}",
        "metrics": {metric: value}, "details": details or {}, "cell": {"task": {"metric": metric}},
        "provenance": {"weights": {"pretrained_data": pretrain, "random_init": False}},
    }


def test_mean_and_std_over_seeds():
    agg = aggregate(tidy([rec("dtd", "natural", 0.70, seed=0), rec("dtd", "natural", 0.74, seed=1)]))
    row = agg.iloc[0]
    assert row["mean"] == pytest.approx(72.0) and row["std"] == pytest.approx(pd.Series([70.0, 74.0]).std()) and row["n"] == 2


def test_records_of_different_definitions_are_never_pooled():
    a, b = rec("dtd", "natural", 0.70, seed=0), rec("dtd", "natural", 0.50, seed=0)
    b["cell"] = {"task": {"metric": "top1"}, "params": {"resize": "squash"}}  # e.g. written by older code
    agg = aggregate(tidy([a, b, rec("dtd", "natural", 0.74, seed=1)]))
    assert sorted(agg["n"]) == [1, 2] and len(agg) == 2
    assert "config" in summary_table([a, b]).columns


def test_vtab_means_task_weighted_and_mean_of_group_means():
    # 2 natural tasks at 80, 1 specialized at 60, 1 structured at 40
    records = [rec("a", "natural", 0.8), rec("b", "natural", 0.8), rec("c", "specialized", 0.6), rec("d", "structured", 0.4)]
    means = vtab_means(aggregate(tidy(records)))
    row = means.iloc[0]
    assert row["mean over tasks"] == pytest.approx((80 + 80 + 60 + 40) / 4)
    assert row["mean of group means"] == pytest.approx((80 + 60 + 40) / 3)
    assert row["natural (2)"] == pytest.approx(80) and row["tasks"] == 4
    assert row["paper (mean over 19 tasks)"] == pytest.approx(72.72)  # Table 2, ViT-L/16 ImageNet-21k


def test_paper_comparison_matches_model_pretrain_task_and_metric():
    agg = aggregate(tidy([rec("dtd", "natural", 0.75), rec("dtd", "natural", 0.75, pretrain="JFT-300M", model="vit_h14"),
                          rec("dtd", "natural", 0.75, pretrain="random-init")]))
    cmp = paper_comparison(agg)
    got = {(m, p): (paper, delta) for m, p, paper, delta in zip(cmp["model"], cmp["pretrain"], cmp["paper (%)"], cmp["delta"])}
    assert got[("vit_l16", "ImageNet-21k")] == ("74.10", "+0.90")  # Table 9, ViT-L/16 (I21k), DTD
    assert got[("vit_h14", "JFT-300M")] == ("75.20", "-0.20")
    assert len(cmp) == 2  # random-init never lines up with a paper number


def test_cross_task_l2_choice_reads_the_per_l2_row():
    details = lambda a, b: {"acc_per_l2": {repr(1.0): a, repr(1024.0): b}, "l2_select": "mean-rank"}  # noqa: E731
    params = {"shots": 5, "l2": 1024.0, "l2_select": "mean-rank"}
    records = [rec("t1", "natural", 0.5, method="fewshot", params=params, details=details(0.9, 0.5)),
               rec("t2", "natural", 0.5, method="fewshot", params=params, details=details(0.8, 0.4))]
    long = tidy(records)  # mean rank over t1 and t2 picks l2 = 1.0 for both
    assert sorted(long["value"]) == pytest.approx([80.0, 90.0]) and set(long["chosen_l2"]) == {1.0}


def test_build_report_writes_tables_plots_and_html(tmp_path):
    records = [rec("a", "natural", v, seed=s, method="fewshot", params={"shots": k, "l2": 1024.0, "l2_select": "fixed"})
               for k, v in ((1, 0.3), (5, 0.6), (10, 0.7)) for s in (0, 1)]
    records.append(rec("a", "natural", 0.9, details={"loss_curve": [{"step": 1, "lr": 0.1, "loss": 2.0}, {"step": 2, "lr": 0.0, "loss": 1.0}]}))
    paths = build_report(records, tmp_path / "r", title="t")
    assert set(paths) >= {"csv", "html", "data_requirement_png", "loss_png"}
    summary = pd.read_csv(paths["csv"])
    assert list(summary["setting"])[:3] == ["1-shot, l2=1024", "5-shot, l2=1024", "10-shot, l2=1024"]
    assert "data:image/png;base64," in paths["html"].read_text()
    assert len(summary_table(records)) == 4
