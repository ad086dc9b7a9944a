"""The `vitbench` command end to end: the smoke pipeline, resume, and every bad input (one line, exit 2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitbench.cli import main

from suite_builder import DEV_SPLITS, fast_smoke_doc, write_suite


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_suite(tmp_path / "fast_smoke.toml", fast_smoke_doc())
    return tmp_path


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def record_files(root: Path):
    return sorted(p for p in root.rglob("*.json"))


@pytest.mark.slow
def test_smoke_pipeline_end_to_end_then_resume(workdir, capsys):
    code, out, err = run_cli(capsys, "run", "--suite", "fast_smoke.toml", "--out", "res")
    assert code == 0, err
    files = record_files(workdir / "res")
    assert len(files) == 3  # fewshot 1- and 5-shot + one fine-tune
    assert "digits" in out and "random-init" in out and "report:" in out
    assert (workdir / "res" / "report" / "index.html").is_file()  # beside the results
    recs = [json.loads(p.read_text()) for p in files]
    for rec in recs:
        assert rec["schema_version"] == 2 and rec["data_fingerprint"] and rec["random_init"] is True and rec["weights_sha256"]
        assert rec["status"] == "ok" and rec["host"] and rec["argv"][1:4] == ["run", "--suite", "fast_smoke.toml"]
        assert rec["provenance"]["test"]["n"] == 597 and rec["versions"]["timm"]
        assert 0.0 <= rec["metrics"]["top1"] <= 1.0
    finetuned = next(r for r in recs if r["method"] == "finetune")
    assert finetuned["metrics"]["top1"] > 0.3  # 40 steps already learn well above chance (0.1)
    html = (workdir / "res" / "report" / "index.html").read_text()
    assert "random-init" in html and "<table" in html

    # resume: delete one record; only that cell is recomputed, the others are untouched
    victim = files[0]
    stamps = {p: p.stat().st_mtime_ns for p in files[1:]}
    victim.unlink()
    code, out, err = run_cli(capsys, "run", "--suite", "fast_smoke.toml", "--out", "res")
    assert code == 0, err
    assert "1 to run, 2 already done" in out
    assert victim.exists() and {p: p.stat().st_mtime_ns for p in files[1:]} == stamps

    # --force recomputes everything; `vitbench report` rebuilds the report from the folder
    code, out, err = run_cli(capsys, "run", "--suite", "fast_smoke.toml", "--out", "res", "--method", "fewshot", "--force", "--dry-run")
    assert code == 0, err
    assert "2 to run, 0 already done" in out
    code, out, err = run_cli(capsys, "report", "res", "-o", "reports/again")
    assert code == 0, err
    assert (workdir / "reports" / "again" / "summary.csv").is_file()


BAD_INPUTS = [
    (["run", "--suite", "smok"], "unknown suite 'smok'. Did you mean 'smoke'"),
    (["run", "--suite", "smoke", "--tasks", "digitz"], "unknown task 'digitz' in suite 'smoke'. Did you mean 'digits'"),
    (["run", "--suite", "smoke", "--model", "vit_b61"], "unknown model 'vit_b61'"),
    (["fewshot", "--suite", "smoke", "--shots", "0"], "--shots values must be >= 1"),
    (["fewshot", "--suite", "smoke", "--shots", "five"], "--shots must be integers"),
    (["run", "--suite", "smoke", "--method", "linearr"], "unknown method 'linearr'; known methods: fewshot, finetune"),
    (["run", "--suite", "smoke", "--method", "finetune", "--shots", "5"], "--shots: not a parameter of the selected method(s) finetune"),
    (["report", "empty"], "no result records in"),
    (["report", "missing"], "does not exist"),
    (["finetune", "--suite", "smoke", "--steps", "10", "--warmup-steps", "10"], "warmup_steps must be in [0, steps)"),
    (["ls", "things"], "choose suites, tasks, models or methods"),
    (["run", "--suite", "smoke", "--bogus"], "No such option"),
    (["fewshot", "--suite", "smoke", "--device", "tpu"], "--device 'tpu' is not a torch device"),
    (["fewshot", "--suite", "smoke", "--l2-select", "foo"], "command-line options: l2_select must be one of"),
    (["validate", "[red]x[/red].toml"], "suite file '[red]x[/red].toml' does not exist"),  # printed verbatim
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(workdir, capsys, args, message):
    (workdir / "empty").mkdir()
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert message in " ".join(err.split())
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err


def test_malformed_suite_names_file_task_field(workdir, capsys):
    write_suite(workdir / "bad.toml", fast_smoke_doc(task={"num_classes": 1}))
    code, _, err = run_cli(capsys, "validate", "bad.toml")
    assert code == 2
    assert "bad.toml: task 'digits': field 'num_classes' must be >= 2" in " ".join(err.split())


def test_unwritable_output_keeps_existing_results(workdir, capsys):
    (workdir / "blocker").write_text("not a folder")
    code, _, err = run_cli(capsys, "fewshot", "--suite", "fast_smoke.toml", "--shots", "1", "--out", "blocker/res")
    assert code == 2
    assert "is not writable" in err
    assert (workdir / "blocker").read_text() == "not a folder"


def test_validate_and_ls(workdir, capsys):
    code, out, err = run_cli(capsys, "validate", "smoke")
    assert code == 0, err
    assert "ok" in out and "digits" in out
    code, out, err = run_cli(capsys, "ls", "suites")
    assert code == 0, err
    assert all(name in out for name in ("smoke", "vtab", "paper", "fewshot", "imagenet"))
    code, out, err = run_cli(capsys, "ls", "tasks", "--suite", "smoke")
    assert code == 0, err
    assert "all[:1200]" in out
    code, out, err = run_cli(capsys, "ls", "tasks", "--suite", "fewshot")
    assert code == 0, err
    assert "imagenet (optional)" in out and "cars (optional)" not in out
    code, out, err = run_cli(capsys, "ls", "models")
    assert code == 0, err
    assert "vit_b16" in out
    code, out, err = run_cli(capsys, "ls", "methods")
    assert code == 0, err
    assert all(m in out for m in ("fewshot", "finetune", "knn", "linear")) and "temperature = 0.07" in out


def test_method_lists_and_grouped_dry_run(workdir, capsys):
    code, out, err = run_cli(capsys, "run", "--suite", "smoke", "--method", "knn,linear", "--dry-run", "--out", "res")
    assert code == 0, err
    assert "smoke: 3 cells (3 to run, 0 already done)" in out  # k = 10, 20 and one linear probe
    assert "plan (cells per task and method)" in out and "--verbose lists every cell" in out
    code, out, err = run_cli(capsys, "run", "--suite", "smoke", "--dry-run", "--verbose", "--out", "res")
    assert code == 0, err
    assert "smoke: 16 cells" in out  # every method of defaults.methods
    assert "ca1dc487d0181e823f3c" in out and "shots=1" in out  # --verbose: every cell with its key


def test_console_script_bad_input_has_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "vitbench.cli", "fewshot", "--shots", "abc"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--shots must be integers" in proc.stderr


def test_interrupt_exits_130_and_keeps_finished_records(workdir, capsys, monkeypatch):
    from vitbench import planner
    from vitbench.runners import fewshot as fewshot_runner

    calls = []

    def interrupted_after_one(cell, ctx, deps):
        calls.append(cell.key)
        if len(calls) > 1:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the second cell
        return fewshot_runner.run_cell(cell, ctx)

    monkeypatch.setattr(planner, "runner_for", lambda method: interrupted_after_one)
    code, out, err = run_cli(capsys, "fewshot", "--suite", "fast_smoke.toml", "--shots", "1,5", "--out", "res")
    assert code == 130, err
    assert "interrupted; records already written are kept" in err and "Traceback" not in err
    files = record_files(workdir / "res")
    assert len(files) == 1
    assert json.loads(files[0].read_text())["key"] == calls[0]
    assert not list((workdir / "res").rglob("*.tmp-*"))


@pytest.mark.slow
def test_finetune_lr_chosen_on_the_dev_split_then_retrained(workdir, capsys):
    write_suite(workdir / "dev.toml", fast_smoke_doc(
        task={"splits": DEV_SPLITS},
        finetune={"steps": 8, "lr": [0.001, 0.05], "lr_select": "dev", "select_train_split": "minitrain", "select_eval_split": "val"},
    ))
    code, out, err = run_cli(capsys, "finetune", "--suite", "dev.toml", "--out", "res", "--no-report")
    assert code == 0, err
    recs = {(r["params"].get("stage"), r["params"]["lr"]): r for r in map(lambda p: json.loads(p.read_text()), record_files(workdir / "res"))}
    assert set(recs) == {("select", 0.001), ("select", 0.05), ("final", None)}
    assert recs[("select", 0.05)]["details"]["eval_split"] == "val"
    assert recs[("select", 0.05)]["provenance"]["test"]["n"] == 200
    sel = recs[("final", None)]["details"]["lr_selection"]
    dev = {lr: recs[("select", lr)]["metrics"]["top1"] for lr in (0.001, 0.05)}
    assert sel["chosen_lr"] == max(dev, key=dev.get)
    assert recs[("final", None)]["provenance"]["test"]["n"] == 597
    assert "chosen on dev from [0.001, 0.05]" in out
