"""Results store: atomic writes, validity of records, keys that change with every number-changing input."""

import json
import os

import pytest

from vitbench import results
from vitbench.cells import Cell, CellResult
from vitbench.errors import VitbenchError
from vitbench.suites import SourceSpec, TaskSpec

TASK = TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:1200]", "test": "all[1200:]"})


def make_cell(**kw):
    base = dict(suite="smoke", task=TASK, model="vit_ti16", weights="none", method="fewshot",
                params={"shots": 5, "l2": 1024.0}, seed=0, img_size=32, weights_id="random-init:vit_ti16")
    base.update(kw)
    return Cell(**base)


def test_key_changes_with_everything_that_changes_the_number():
    c = make_cell()
    assert c.key == make_cell().key  # deterministic
    variants = [
        make_cell(seed=1), make_cell(params={"shots": 10, "l2": 1024.0}), make_cell(params={"shots": 5, "l2": 1.0}),
        make_cell(model="vit_s16"), make_cell(weights_id="file:abc"), make_cell(img_size=64), make_cell(method="finetune"),
        make_cell(task=TaskSpec(name="digits", num_classes=10, sources=(SourceSpec("digits"),), splits={"train": "all[:1000]", "test": "all[1200:]"})),
    ]
    keys = {v.key for v in variants}
    assert c.key not in keys and len(keys) == len(variants)


def test_write_and_read_record_roundtrip(tmp_path):
    cell = make_cell()
    rec = results.make_record(cell, CellResult(metrics={"top1": 0.5}, provenance={"weights": {"weights_id": "w", "weights_sha256": "h", "random_init": True}}), 1.25, "cpu")
    path = results.write_record(tmp_path, cell, rec)
    assert path.name == f"{cell.key}.json" and results.is_done(tmp_path, cell)
    back = results.read_record(path)
    assert back["metrics"] == {"top1": 0.5} and back["schema_version"] == results.SCHEMA_VERSION
    assert back["weights_sha256"] == "h" and back["random_init"] is True
    assert back["versions"]["torch"] and back["cell"]["params"] == {"shots": 5, "l2": 1024.0}
    assert [r["key"] for r in results.load_records(tmp_path)] == [cell.key]


def test_half_written_record_is_never_valid(tmp_path):
    cell = make_cell()
    path = results.record_path(tmp_path, cell)
    path.parent.mkdir(parents=True)
    full = json.dumps({"schema_version": 1, "key": cell.key, "metrics": {"top1": 0.9}, "cell": {}})
    path.write_text(full[: len(full) // 2])  # killed mid-write without the atomic protocol
    assert results.read_record(path) is None and not results.is_done(tmp_path, cell)
    # a temp file left by a kill during atomic_write_json is not a record either
    (path.parent / (path.name + ".tmp-xyz")).write_text(full)
    assert results.load_records(tmp_path) == []


def test_atomic_write_leaves_old_record_intact_when_serialisation_fails(tmp_path):
    target = tmp_path / "r.json"
    results.atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        results.atomic_write_json(target, {"bad": object.__new__(type("X", (), {"__str__": None}))})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp debris


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(VitbenchError, match="not writable"):
        results.ensure_writable(ro / "sub")


def test_output_dir_under_a_file_is_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VitbenchError, match="not writable"):
        results.ensure_writable(blocker / "results")


def test_load_records_on_missing_folder(tmp_path):
    with pytest.raises(VitbenchError, match="does not exist"):
        results.load_records(tmp_path / "nope")


def test_resume_check_by_listing_counts_only_valid_records_also_with_its_index(tmp_path):
    cells = [make_cell(seed=s) for s in range(4)]
    for cell in cells[:3]:
        rec = results.make_record(cell, CellResult(metrics={"top1": 0.5}), 0.1, "cpu")
        path = results.write_record(tmp_path, cell, rec)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns - 10**10))  # settled: indexed
    assert results.done_keys(tmp_path, cells) == {c.key for c in cells[:3]}
    folder = results.record_dir(tmp_path, cells[0])
    assert (folder / results.RESUME_INDEX).is_file()
    assert [r["key"] for r in results.load_records(tmp_path)].count(cells[0].key) == 1  # the index is not a record
    victim = results.record_path(tmp_path, cells[1])
    victim.write_text(victim.read_text()[:100])  # truncated after it was indexed: rewritten, so read again
    other = results.record_path(tmp_path, cells[2])
    other.write_text(other.read_text().replace(cells[2].key, cells[3].key))  # same size, wrong key
    assert results.done_keys(tmp_path, cells) == {cells[0].key}
    (folder / results.RESUME_INDEX).write_text("{not json")  # a broken index is ignored
    assert results.done_keys(tmp_path, cells) == {cells[0].key}
    assert results.done_keys(tmp_path / "nowhere", cells) == set()


def test_recorded_command_line_reruns_as_typed():
    """The record's `command` is a shell line: `vitbench` for the console script and `python -m vitbench.cli`, quoted."""
    from vitbench.results import _command_line

    assert _command_line(["/usr/local/bin/vitbench", "run", "--suite", "my suite.toml"]) == "vitbench run --suite 'my suite.toml'"
    assert _command_line(["/repo/vitbench/cli.py", "fewshot", "--shots", "5"]) == "vitbench fewshot --shots 5"
    assert _command_line([]) is None
