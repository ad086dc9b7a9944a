"""`data prepare / verify / info`: manifests, offline reuse of prepared copies, detection of a modified shard."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vitbench.commands.data import app
from vitbench.data import load_split
from vitbench.data.prepare import prepare_task, split_info, verify_task
from vitbench.errors import VitbenchError
from vitbench.suites import SourceSpec, load_suite

SUITE = """
name = "tiny"
[[tasks]]
name = "digits_tiny"
num_classes = 10
train_split = "train"
test_split = "test"
val_split = "val"
splits = { train = "all[:60]", val = "all[60:80]", test = "all[1790:]" }
source = { kind = "digits" }
"""


@pytest.fixture()
def suite_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    return path


def test_prepare_manifest_and_offline_reuse(tmp_path, suite_file):
    task = load_suite(str(suite_file)).task("digits_tiny")
    direct = load_split(task, "test", data_root=tmp_path / "nothing")
    manifest = prepare_task(task, tmp_path / "root")
    assert set(manifest["splits"]) == {"train", "val", "test"}
    entry = manifest["splits"]["test"]
    assert entry["n"] == 7 and sum(entry["counts_per_class"]) == 7
    assert entry["classes_present"] == int(np.unique(direct.labels).size)
    assert entry["missing_classes"] and 0 < entry["class_coverage"] < 1  # never assume every class is present
    assert entry["provenance"]["source"]["kind"] == "digits" and entry["provenance"]["ranges"][0]["start"] == 1790
    assert len(entry["shards"][0]["sha256"]) == 64 and entry["encodings"]["png"] == 7
    on_disk = json.loads((tmp_path / "root" / "digits_tiny" / "manifest.json").read_text())
    assert on_disk["splits"]["test"]["shards"] == entry["shards"]

    prepared = load_split(task, "test", data_root=tmp_path / "root")
    assert "prepared" in prepared.provenance
    assert prepared.fingerprint == direct.fingerprint  # same data, same cache keys
    assert prepared.labels.tolist() == direct.labels.tolist()
    for i in range(len(direct)):
        assert np.array_equal(np.asarray(prepared.image(i)), np.asarray(direct.image(i)))  # lossless
    assert verify_task(tmp_path / "root", "digits_tiny") == []


def test_verify_detects_modified_shard(tmp_path, suite_file):
    task = load_suite(str(suite_file)).task("digits_tiny")
    prepare_task(task, tmp_path, ["test"])
    shard = next((tmp_path / "digits_tiny" / "test").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_task(tmp_path, "digits_tiny")
    assert len(problems) == 1 and problems[0].split == "test" and shard.name in str(problems[0])
    result = CliRunner().invoke(app, ["verify", "--root", str(tmp_path)])
    assert isinstance(result.exception, VitbenchError) and shard.name in str(result.exception)


def test_cli_prepare_info_and_unknown_task(tmp_path, suite_file):
    runner = CliRunner()
    result = runner.invoke(app, ["prepare", str(suite_file), "--tasks", "digits_tiny", "--root", str(tmp_path), "--splits", "train,test"])
    assert result.exit_code == 0, result.output
    assert "digits_tiny/train: 60 images" in result.output
    assert runner.invoke(app, ["verify", "--root", str(tmp_path)]).exit_code == 0
    info = split_info(load_suite(str(suite_file)).task("digits_tiny"), tmp_path, "train")
    assert info["where"] == "prepared" and info["n"] == 60 and info["classes_present"] == 10
    bad = runner.invoke(app, ["prepare", str(suite_file), "--tasks", "digits_tny", "--root", str(tmp_path)])
    assert isinstance(bad.exception, VitbenchError) and "digits_tiny" in str(bad.exception)
    shown = runner.invoke(app, ["info", "digits_tiny", "--suite", str(suite_file), "--root", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "prepared" in shown.output


def test_stale_prepared_copy_is_not_used(tmp_path, suite_file):
    import dataclasses

    task = load_suite(str(suite_file)).task("digits_tiny")
    prepare_task(task, tmp_path, ["test"])
    changed = dataclasses.replace(task, splits={**task.splits, "test": "all[1780:]"})
    fresh = load_split(changed, "test", data_root=tmp_path)
    assert len(fresh) == 17 and "prepared" not in fresh.provenance
    offline_only = dataclasses.replace(changed, sources=(SourceSpec("imagefolder", str(tmp_path / "none")),))
    with pytest.raises(VitbenchError, match="stale"):
        load_split(offline_only, "test", data_root=tmp_path)
