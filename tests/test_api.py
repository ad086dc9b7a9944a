"""`vitbench.evaluate`: the README's Python API example runs as written, and a second call resumes."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no python block under '### Python API'"
    return match.group(1)


@pytest.mark.slow
def test_readme_example_runs_and_resumes(tmp_path, monkeypatch, capsys):
    from vitbench import features

    monkeypatch.chdir(tmp_path)
    code = readme_example()
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the documented example, verbatim
    frame = scope["frame"]
    assert set(frame["method"]) == {"fewshot", "finetune"}
    assert set(frame["model"]) == {"tiny-convnet"}
    assert sorted(frame.loc[frame["method"] == "fewshot", "shots"].unique()) == [5, 10]
    assert len(frame) == 2 * 3 + 1  # shots x the smoke suite's seeds, plus one fine-tuning cell
    assert frame["weights_id"].str.startswith("module:").all()
    assert Path(frame.attrs["report"]["html"]).is_file()
    html = Path(frame.attrs["report"]["html"]).read_text(encoding="utf-8")
    assert "tiny-convnet" in html
    records = sorted((tmp_path / "results" / "smoke").rglob("*.json"))
    assert len(records) == len(frame)
    stamps = {p: p.stat().st_mtime_ns for p in records}

    again = scope["vitbench"].evaluate(
        scope["TinyConvNet"](), name="tiny-convnet", suite="smoke", methods=["fewshot"],
        preprocess=scope["vitbench"].Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        overrides={"fewshot": {"shots": [5, 10]}}, out="results", report=False,
    )
    # a new random init is another model: new cells; the same module again resumes (below)
    assert set(again["weights_id"]) != set(frame["weights_id"])
    import torch

    torch.manual_seed(0)
    passes = features.forward_pass_count()
    scope["vitbench"].evaluate(
        scope["TinyConvNet"](), name="tiny-convnet", suite="smoke", methods=["fewshot"],
        preprocess=scope["vitbench"].Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        overrides={"fewshot": {"shots": [5, 10]}}, out="results", report=False,
    )
    assert all(p.stat().st_mtime_ns == stamps[p] for p in records)  # resumed: nothing rewritten
    assert features.forward_pass_count() == passes  # cached features of the same weights were reused
