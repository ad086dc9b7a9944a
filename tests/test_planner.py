"""Planner: suite -> cells, parameter layering, resume split, --shard partitioning."""

import pytest

from vitbench import planner
from vitbench.cells import RunContext
from vitbench.errors import VitbenchError
from vitbench.suites import load_suite

from suite_builder import DEV_SPLITS, smoke_doc, write_suite


@pytest.fixture(scope="module")
def smoke():
    return load_suite("smoke")


def test_expand_cells_task_model_method_params_seed(smoke):
    cells = planner.expand(smoke, ["vit_ti16"], ["fewshot", "finetune"], weights="none")
    fewshot = [c for c in cells if c.method == "fewshot"]
    assert len(fewshot) == 4 * 3 and len(cells) == 13  # shots x seeds + one fine-tune seed
    assert {c.params["shots"] for c in fewshot} == {1, 5, 10, 25} and {c.seed for c in fewshot} == {0, 1, 2}
    assert all(c.params["l2_grid"] == [] and c.params["l2"] == 1024.0 for c in fewshot)  # fixed l2: only it is solved
    assert all("seeds" not in c.params and c.img_size == 32 for c in cells)
    assert len({c.key for c in cells}) == len(cells)
    ft = next(c for c in cells if c.method == "finetune")
    assert ft.params["train_crop"] == "none" and ft.params["grad_clip"] == 1.0 and ft.params["momentum"] == 0.9


def test_l2_grid_kept_when_selected_across_tasks(smoke):
    cells = planner.expand(smoke, ["vit_ti16"], ["fewshot"], weights="none", overrides={"fewshot": {"l2_select": "mean-rank", "shots": [5], "seeds": [0]}})
    assert len(cells) == 1 and len(cells[0].params["l2_grid"]) == 30 and cells[0].params["l2_grid"][0] == 2.0**-10


def test_pos_interp_is_part_of_the_key(smoke):
    a = planner.expand(smoke, ["vit_ti16"], ["fewshot"], weights="none")[0]
    b = planner.expand(smoke, ["vit_ti16"], ["fewshot"], weights="none", pos_interp="bicubic")[0]
    assert a.key != b.key
    with pytest.raises(VitbenchError, match="interpolation"):
        planner.expand(smoke, ["vit_ti16"], ["fewshot"], weights="none", pos_interp="nearest")


def test_shards_partition_the_plan(smoke, tmp_path):
    cells = planner.expand(smoke, ["vit_ti16"], ["fewshot", "finetune"], weights="none")
    parts = [planner.plan(cells, tmp_path, shard=(i, 3)).cells for i in (1, 2, 3)]
    keys = [c.key for part in parts for c in part]
    assert sorted(keys) == sorted(c.key for c in cells) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "1-2"])
def test_bad_shard(text):
    with pytest.raises(VitbenchError, match="shard"):
        planner.parse_shard(text)


def test_unknown_method_and_model(smoke):
    with pytest.raises(VitbenchError, match="unknown method 'linearr'; known methods: fewshot, finetune"):
        planner.expand(smoke, ["vit_ti16"], ["linearr"], weights="none")
    with pytest.raises(VitbenchError, match="unknown model 'vit_x16'"):
        planner.expand(smoke, ["vit_x16"], ["fewshot"], weights="none")


def test_lr_selection_on_the_dev_split_plans_select_then_final_cells(tmp_path):
    dev = {"lr": [0.01, 0.05], "lr_select": "dev", "select_train_split": "minitrain", "select_eval_split": "val"}
    write_suite(tmp_path / "s.toml", smoke_doc(task={"splits": DEV_SPLITS}, finetune=dev))
    suite = load_suite(str(tmp_path / "s.toml"))
    cells = planner.expand(suite, ["vit_ti16"], ["finetune"], weights="none")
    assert [c.params.get("stage") for c in cells] == ["select", "select", "final"]
    final = cells[-1]
    assert final.params["lr"] is None and final.params["lr_grid"] == [0.01, 0.05]
    assert [c.key for c in planner.dependencies(final)] == [c.key for c in cells[:2]]
    with pytest.raises(VitbenchError, match="it depends on is missing"):
        planner.execute([final], tmp_path, RunContext())  # selection runs must finish first
    write_suite(tmp_path / "bad.toml", smoke_doc(task={"splits": DEV_SPLITS}, finetune={**dev, "select_eval_split": "dev"}))
    with pytest.raises(VitbenchError, match="lr_select = 'dev' needs finetune.select_eval_split"):
        planner.expand(load_suite(str(tmp_path / "bad.toml")), ["vit_ti16"], ["finetune"], weights="none")


def dev_selection_suite(tmp_path):
    from vitbench.suites import parse_suite

    raw = {
        "name": "devsel", "defaults": {"img_size": 32},
        "finetune": {"steps": 2, "warmup_steps": 0, "batch_size": 8, "train_crop": "none", "hflip": False, "seeds": [0, 2],
                     "lr": [0.01, 0.05], "lr_select": "dev", "select_train_split": "minitrain", "select_eval_split": "val"},  # seeds 0 and 2 land in different shards of 2
        "tasks": [{"name": "digits", "num_classes": 10, "source": {"kind": "digits"},
                   "splits": {"train": "all[:60]", "minitrain": "all[:40]", "val": "all[40:60]", "test": "all[1200:1240]"}}],
    }
    return parse_suite(raw, str(tmp_path / "devsel.toml"))


def test_shard_keeps_a_final_cell_with_its_selection_cells(tmp_path):
    cells = planner.expand(dev_selection_suite(tmp_path), ["vit_ti16"], ["finetune"], weights="none")
    assert sorted(c.params.get("stage") for c in cells) == ["final"] * 2 + ["select"] * 4  # 2 seeds x (2 lrs + final)
    for n in (2, 3, 5):
        parts = [planner.plan(cells, tmp_path, shard=(i, n)).cells for i in range(1, n + 1)]
        assert sorted(c.key for p in parts for c in p) == sorted(c.key for c in cells)
        for part in parts:
            keys = [c.key for c in part]
            for c in part:  # dependencies in the same shard, before the cell
                assert all(d.key in keys[:keys.index(c.key)] for d in planner.dependencies(c))


@pytest.mark.slow
def test_two_shards_in_sequence_equal_the_unsharded_run(tmp_path):
    cells = planner.expand(dev_selection_suite(tmp_path), ["vit_ti16"], ["finetune"], weights="none")
    ctx = RunContext(cache_dir=tmp_path / "cache", eval_batch_size=64)

    def metrics(folder):
        from vitbench import results

        return {r["key"]: (r["metrics"], r["details"].get("lr_selection")) for r in results.load_records(folder)}

    planner.execute(planner.plan(cells, tmp_path / "whole").todo, tmp_path / "whole", ctx)
    # the smallest shard count that splits the two groups (which shard a group lands in depends on its key hash)
    n = next(n for n in range(2, 50) if sum(bool(planner.plan(cells, tmp_path / "sharded", shard=(i, n)).todo)
                                            for i in range(1, n + 1)) == 2)
    for i in range(1, n + 1):  # one final cell each, with its selections
        planner.execute(planner.plan(cells, tmp_path / "sharded", shard=(i, n)).todo, tmp_path / "sharded", ctx)
    whole, sharded = metrics(tmp_path / "whole"), metrics(tmp_path / "sharded")
    assert len(whole) == 6 and whole == sharded
