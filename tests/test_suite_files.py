"""Shipped suites as package data, `include` with overrides, and commands that must not import torch."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vitbench.cli import main
from vitbench.env import BUNDLED_SUITES, available_suites
from vitbench.errors import VitbenchError
from vitbench.suites import load_suite

from suite_builder import shipped_doc, smoke_doc, write_suite

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in BUNDLED_SUITES.glob("*.toml"))
BEFORE = json.loads((Path(__file__).parent / "fixtures" / "suite_keys_before.json").read_text(encoding="utf-8"))


def test_every_shipped_suite_is_listed():
    assert set(SHIPPED) == {"smoke", "vtab", "paper", "fewshot", "imagenet"}
    assert all(available_suites()[name] == BUNDLED_SUITES / f"{name}.toml" for name in SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_suite_validates(name, capsys):
    assert main(["validate", name]) == 0, capsys.readouterr().err
    assert f"suite {name!r}" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_shipped_task_definitions_match_the_recorded_ones(name):
    """The record-key part of every task is what it was before suites moved and `paper` started including
    `vtab` (fixture recorded from the previous loader), so existing cells keep their meaning. The VTAB tasks'
    `finetune` (per-task training pre-processing) and `options` (class-coverage declaration, test sizes)
    were then added on purpose (docs/preprocessing.md, docs/slices.md) and are recorded in the fixture."""
    suite, before = load_suite(name), BEFORE[name]
    got = {t.name: json.loads(json.dumps(t.key_dict())) for t in suite.tasks}
    want = {t["name"]: t for t in before["tasks"]}
    assert sorted(got) == sorted(want)
    for task in want:
        assert got[task] == want[task], task
    for method in ("fewshot", "finetune"):  # `defaults.methods` and the knn / linear tables came later
        assert suite.method_table(method) == before[method], method


def test_paper_includes_the_vtab_tasks_unchanged():
    paper, vtab = load_suite("paper"), load_suite("vtab")
    assert shipped_doc("paper")["include"] == ["vtab"]
    assert not {t["name"] for t in shipped_doc("paper")["tasks"]} & {t.name for t in vtab.tasks}
    assert [t for t in paper.tasks if t.group in ("natural", "specialized", "structured")] == list(vtab.tasks)
    assert paper.name == "paper" and paper.description != vtab.description


def test_a_user_suite_includes_a_shipped_one_and_overrides_a_field(tmp_path):
    path = write_suite(tmp_path / "mine.toml", {
        "name": "mine", "include": ["vtab"], "finetune": {"steps": 100, "warmup_steps": 10},
        "tasks": [{"name": "dtd", "override": True, "finetune": {"steps": 50}, "splits": {"val200": "validation[:100]"}}],
    })
    mine, vtab = load_suite(str(path)), load_suite("vtab")
    assert mine.name == "mine" and mine.description == "" and mine.method_table("finetune") == {"steps": 100, "warmup_steps": 10}
    dtd, orig = mine.task("dtd"), vtab.task("dtd")
    assert dtd.method_table("finetune") == {**orig.method_table("finetune"), "steps": 50}  # merged key-wise
    assert dtd.splits == {**orig.splits, "val200": "validation[:100]"}  # tables merge key-wise
    assert (dtd.sources, dtd.num_classes, dtd.train_split) == (orig.sources, orig.num_classes, orig.train_split)
    assert [t for t in mine.tasks if t.name != "dtd"] == [t for t in vtab.tasks if t.name != "dtd"]
    assert mine.method_table("linear") == vtab.method_table("linear")  # tables not named here are inherited
    assert [t.name for t in mine.tasks] == [t.name for t in vtab.tasks]


def test_include_tables_merge_and_new_tasks_follow(tmp_path):
    write_suite(tmp_path / "base.toml", smoke_doc("base", fewshot={"shots": [1], "seeds": [0]}))
    path = write_suite(tmp_path / "top.toml", {
        "include": ["base.toml"], "fewshot": {"seeds": [3]},
        "tasks": [{"name": "more", "num_classes": 10, "source": {"kind": "digits"}, "splits": {"train": "all[:10]", "test": "all[10:20]"}}],
    })
    top = load_suite(str(path))
    assert top.name == "top" and top.method_table("fewshot") == {"shots": [1], "seeds": [3], "l2": 1024.0}
    assert top.defaults == load_suite(str(tmp_path / "base.toml")).defaults
    assert [t.name for t in top.tasks] == ["digits", "more"]


def _error(path) -> str:
    with pytest.raises(VitbenchError) as info:
        load_suite(str(path))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_include_errors_are_one_line_and_name_the_file(tmp_path):
    write_suite(tmp_path / "base.toml", smoke_doc("base"))
    redefine = write_suite(tmp_path / "redefine.toml", {"include": ["base"], "tasks": [smoke_doc()["tasks"][0]]})
    message = _error(redefine)
    assert "redefine.toml: task 'digits' is already defined by" in message and "override = true" in message
    ghost = write_suite(tmp_path / "ghost.toml", {"include": ["base"], "tasks": [{"name": "nope", "override": True}]})
    assert "ghost.toml: task 'nope' has override = true but no included suite defines it" in _error(ghost)
    missing = write_suite(tmp_path / "missing.toml", {"include": ["nowhere.toml"]})
    assert "missing.toml: field 'include'" in _error(missing)
    unknown = write_suite(tmp_path / "unknown.toml", {"include": ["vtabb"]})
    assert "unknown suite 'vtabb'" in _error(unknown) and "Did you mean 'vtab'" in _error(unknown)
    write_suite(tmp_path / "twice.toml", smoke_doc("twice"))
    both = write_suite(tmp_path / "both.toml", {"include": ["base", "twice"]})
    assert "task 'digits' comes from two included suites" in _error(both)


def test_an_error_inside_an_included_task_names_the_included_file(tmp_path):
    write_suite(tmp_path / "broken.toml", smoke_doc("broken", task={"num_classes": 1}))
    path = write_suite(tmp_path / "top.toml", {"include": ["broken"]})
    assert "broken.toml: task 'digits': field 'num_classes' must be >= 2" in _error(path)


def test_include_cycles_are_refused(tmp_path):
    write_suite(tmp_path / "a.toml", {"include": ["b"], "tasks": smoke_doc()["tasks"]})
    write_suite(tmp_path / "b.toml", {"include": ["a.toml"]})
    message = _error(tmp_path / "a.toml")
    assert message.startswith("suite include cycle:") and "a.toml -> " in message and "b.toml -> " in message
    write_suite(tmp_path / "self.toml", {"include": ["self"]})
    assert "suite include cycle" in _error(tmp_path / "self.toml")


def test_suites_in_the_working_folder_shadow_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites").mkdir()
    write_suite(tmp_path / "suites" / "smoke.toml", smoke_doc("my_smoke"))
    assert load_suite("smoke").name == "my_smoke"
    assert load_suite("vtab").path == str(BUNDLED_SUITES / "vtab.toml")


TORCH_FREE = [["--help"], ["ls", "suites"], ["ls", "tasks", "--suite", "vtab"], ["ls", "models"],
              ["validate", "smoke"], ["validate", "paper"]]
PROBE = ("import sys; from vitbench.cli import main; rc = main(sys.argv[1:]); "
         "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr); sys.exit(rc)")


@pytest.mark.parametrize("args", TORCH_FREE, ids=" ".join)
def test_listing_and_validating_do_not_import_torch(args, tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "NO-TORCH"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline (the installed setuptools, no build isolation) from a copy of what the project's
    build reads, so no stale `build/` folder of the checkout leaks into it and the checkout stays clean."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "vitbench", src / "vitbench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (path,) = out.glob("vitbench-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_carries_the_suites_and_the_paper_numbers(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"vitbench/suite_files/{name}.toml" for name in SHIPPED} <= names
    csvs = {p.relative_to(REPO).as_posix() for p in (REPO / "vitbench" / "report" / "reference").glob("*.csv")}
    assert csvs and csvs <= names


@pytest.mark.slow
def test_a_non_editable_install_finds_its_suites_from_any_folder(wheel, tmp_path):
    venv = tmp_path / "venv"  # reuses the installed torch & co. (--system-site-packages); vitbench from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import vitbench, sys; print(vitbench.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, env=env, timeout=120)
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the installed copy, not the checkout
    for args in (["validate", "paper"], ["run", "--suite", "smoke", "--dry-run"]):
        proc = subprocess.run([str(venv / "bin" / "vitbench"), *args], cwd=elsewhere, capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
    assert "smoke" in proc.stdout and "cells" in proc.stdout


def test_the_suite_decides_what_a_run_uses_when_the_command_line_does_not():
    smoke, vtab, fewshot = load_suite("smoke"), load_suite("vtab"), load_suite("fewshot")
    assert smoke.run_models(None) == ["vit_ti16"] and smoke.run_models(["vit_b16"]) == ["vit_b16"]
    assert vtab.run_models(None) == ["vit_b16"]  # vitbench's default model, when the suite names none
    assert smoke.run_weights(None) == "none" and smoke.run_weights("default") == "default"
    assert vtab.run_weights(None) == "default" and vtab.run_pos_interp(None) == "bilinear"
    assert fewshot.methods == ["fewshot"]  # what `run --method all` runs there
