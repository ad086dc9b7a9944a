"""Suite files: loading, validation errors that name file / task / field, name lookup with suggestions."""

import pytest

from vitbench import planner
from vitbench.errors import VitbenchError
from vitbench.suites import available_suites, load_suite

GOOD = """
name = "mine"
[fewshot]
shots = [1, 5]
[[tasks]]
name = "digits"
num_classes = 10
source = { kind = "digits" }
splits = { train = "all[:1200]", test = "all[1200:]" }
"""


def write(tmp_path, text, name="suite.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_smoke_suite_loads_with_defaults():
    s = load_suite("smoke")
    assert s.name == "smoke" and [t.name for t in s.tasks] == ["digits"]
    t = s.tasks[0]
    assert t.num_classes == 10 and t.train_split == "train" and t.test_split == "test" and t.sources[0].kind == "digits"
    assert s.defaults["weights"] == "none" and s.defaults["img_size"] == 32
    assert "smoke" in available_suites()


def test_user_suite_file_and_parameter_layers(tmp_path):
    s = load_suite(str(write(tmp_path, GOOD)))
    p = planner.method_params(s, "fewshot", {"seeds": [4]})
    assert p.shots == [1, 5] and p.seeds == [4] and p.l2 == 1024.0  # default < suite < override


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda t: t.replace('num_classes = 10', 'num_classes = "ten"'), r"task 'digits': field 'num_classes' must be an integer"),
        (lambda t: t.replace('num_classes = 10\n', ''), r"task 'digits': missing required field 'num_classes'"),
        (lambda t: t.replace('kind = "digits"', 'kind = "digitz"'), r"task 'digits' field 'source'.*unknown source kind 'digitz'.*Did you mean 'digits'"),
        (lambda t: t.replace('all[:1200]', 'all[:12OO]'), r"task 'digits' field 'splits.train'"),
        (lambda t: t.replace('name = "digits"', 'name = "digits"\nmetrik = "top1"'), r"task 'digits': unknown field\(s\) \['metrik'\]"),
        (lambda t: t + 'label_transform = "nope"\n', r"field 'label_transform'.*unknown label transform 'nope'"),
        (lambda t: t.replace('shots = [1, 5]', 'shots = [0]'), r"shots must be positive integers"),
        (lambda t: t.replace('[[tasks]]', 'x = 1\n[[tasks]]'), r"\[fewshot\]: unknown field\(s\) \['x'\]"),
        (lambda t: t.replace('splits = {', 'splits = {train = '), r"not valid TOML"),
    ],
)
def test_malformed_suite_names_file_task_and_field(tmp_path, edit, expected):
    path = write(tmp_path, edit(GOOD))
    with pytest.raises(VitbenchError, match=expected) as info:
        s = load_suite(str(path))
        planner.method_params(s, "fewshot")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_suite_suggests_closest():
    with pytest.raises(VitbenchError, match=r"unknown suite 'smok'.*Did you mean 'smoke'"):
        load_suite("smok")


def test_missing_suite_file():
    with pytest.raises(VitbenchError, match="does not exist"):
        load_suite("nowhere/suite.toml")
