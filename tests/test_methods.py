"""Every registered method through the one interface: defaults, validation errors, cells, a tiny run, summaries.

Also pins the cell keys of known smoke cells (computed before methods moved behind the interface): a change
here changes which records resume, so it must come with a PROTOCOL_VERSION bump on purpose.
"""

import dataclasses

import pytest

from vitbench import planner, results
from vitbench.cells import RunContext
from vitbench.errors import VitbenchError
from vitbench.methods import get_method, method_names
from vitbench.suites import parse_suite

# the tiny task is VTAB-shaped but 10x smaller, which the data layer rightly flags as an incomplete copy
pytestmark = pytest.mark.filterwarnings("ignore:.*VTAB-1k defines")
METHODS = method_names()
# Shrunk settings per method so each runs in seconds; a method without an entry runs with its defaults.
TINY = {
    "fewshot": {"shots": [2], "seeds": [0]},
    "finetune": {"steps": 3, "warmup_steps": 1, "batch_size": 16, "lr": 0.05, "train_crop": "none", "hflip": False},
}


def tiny_suite(tables: dict | None = None, task_tables: dict | None = None):
    """Digits shaped like a VTAB-1k task, scaled down 10x: train800 = 80, val200 = 20, test = 100 images."""
    task = {
        "name": "digits_vtab", "num_classes": 10, "group": "natural", "source": {"kind": "digits"},
        "train_split": "train800val200", "val_split": "val200",
        "splits": {"train800": "all[:80]", "val200": "all[80:100]", "train800val200": "all[:100]", "test": "all[1200:1300]"},
        **(task_tables or {}),
    }
    raw = {"name": "tiny", "defaults": {"img_size": 32}, **(tables or {}), "tasks": [task]}
    return parse_suite(raw, "tiny.toml")


def test_registry_lists_the_methods():
    assert METHODS[:2] == ["fewshot", "finetune"] and len(set(METHODS)) == len(METHODS)
    with pytest.raises(VitbenchError, match=r"unknown method 'nope'; known methods: fewshot, finetune.* \(or 'all'\)"):
        get_method("nope")


@pytest.mark.parametrize("name", METHODS)
def test_defaults_validate_and_expand_into_cells(name):
    method = get_method(name)
    params = method.defaults()
    params.check("defaults")  # the defaults themselves are valid
    assert dataclasses.is_dataclass(params) and method.describe() and method.summary
    suite = tiny_suite()
    cells = planner.expand(suite, ["vit_ti16"], [name], weights="none")
    assert cells and all(c.method == name for c in cells) and len({c.key for c in cells}) == len(cells)
    for c in cells:
        assert set(c.params) >= set(params.key_params()) - {"lr"}  # every number-changing parameter is keyed


@pytest.mark.parametrize("name", METHODS)
def test_unknown_field_names_file_task_and_field(name):
    with pytest.raises(VitbenchError, match=rf"tiny.toml: \[{name}\]: unknown field\(s\) \['bogus'\]") as info:
        planner.method_params(tiny_suite({name: {"bogus": 1}}), name)
    assert "\n" not in str(info.value)
    suite = tiny_suite(task_tables={name: {"bogus": 1}})
    with pytest.raises(VitbenchError, match=rf"tiny.toml: task 'digits_vtab' field '{name}': unknown field\(s\) \['bogus'\]"):
        planner.method_params(suite, name, task=suite.tasks[0])
    with pytest.raises(VitbenchError, match=r"command-line options: unknown field\(s\) \['bogus'\]"):
        planner.method_params(tiny_suite(), name, {"bogus": 1})


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_run_cell_on_a_tiny_vtab_shaped_task(name, tmp_path):
    suite = tiny_suite({name: TINY.get(name, {})})
    cells = planner.expand(suite, ["vit_ti16"], [name], weights="none")
    the_plan = planner.plan(cells, tmp_path)
    written = planner.execute(the_plan.todo, tmp_path, RunContext(cache_dir=tmp_path / "cache", eval_batch_size=64))
    assert len(written) == len(the_plan.todo) >= 1
    for cell, record, path in written:
        assert path.is_file() and record["key"] == cell.key and 0.0 <= record["metrics"]["top1"] <= 1.0
    records = results.load_records(tmp_path)
    method = get_method(name)
    values = method.values(records)
    assert set(values) == {r["key"] for r in records} and all(v["value"] is not None for v in values.values())
    assert all(isinstance(method.setting(r), str) for r in records)
    table = method.summary_table(records)
    assert table is None or len(table) >= 1
    assert planner.plan(cells, tmp_path).todo == []  # resume: every cell is done


# Keys of smoke cells, pinned so that a refactor cannot change them unnoticed. They changed on purpose: with
# protocol version 2 (big_vision's resize, optax step offset, dropout placement; parameters resize_impl,
# feature_layer, train_resize; before that, fine-tuning batches from a repeated shuffled stream). Beside each,
# the same cell's key now that prose stays out of the key (`vitbench.spec.DOC_FIELDS`, `DOC_SOURCE_OPTIONS`).
PINNED_SMOKE_KEYS = {  # (method, shots, seed): (key with the description, key now)
    ("fewshot", 1, 0): ("fa358948ca7102477ba2", "ca1dc487d0181e823f3c"),
    ("fewshot", 25, 2): ("5962f621d7f7bec26cc4", "501b121523c27ea10123"),
    ("finetune", None, 0): ("889d14f31ef490f7ffb7", "173e1b1813052354afa5"),
}


def test_smoke_cell_keys_are_pinned_and_differ_from_before_only_by_the_prose():
    from vitbench.hashing import json_sha256
    from vitbench.suites import load_suite

    cells = planner.expand(load_suite("smoke"), ["vit_ti16"], ["fewshot", "finetune"], weights="none")
    by_ident = {(c.method, c.params.get("shots"), c.seed): c for c in cells}
    for ident, (before, now) in PINNED_SMOKE_KEYS.items():
        c = by_ident[ident]
        assert c.key == now, ident
        with_prose = {**c.key_payload(), "task": {**c.task.to_dict(), "description": c.task.description}}
        if c.method == "finetune":  # the training pipeline's version joined the key on purpose (crops on the original image)
            assert c.params["pipeline"] == 2
            with_prose["params"] = {k: v for k, v in c.params.items() if k != "pipeline"}
        assert json_sha256(with_prose, 20) == before, ident  # the payload is otherwise exactly the old one


def test_route_overrides_gives_each_method_its_own_fields():
    routed = planner.route_overrides(["fewshot", "finetune"], {"shots": [5], "steps": 10, "seeds": [1], "lr": None})
    assert routed == {"fewshot": {"shots": [5], "seeds": [1]}, "finetune": {"steps": 10, "seeds": [1]}}
    with pytest.raises(VitbenchError, match="--steps: not a parameter of the selected method"):
        planner.route_overrides(["fewshot"], {"steps": 10})
