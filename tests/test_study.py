"""A whole study unattended: failing cells are recorded and the run goes on, optional tasks without data are
skipped with a note, --fail-fast stops, progress lines and a run log off a terminal, reports beside the results
(rebuilt, whole folder, several folders merged)."""

import json
from pathlib import Path

import pytest

from suite_builder import fewshot_digits_suite
from vitbench.cli import main

STUDY = fewshot_digits_suite("study", shots=[1, 2]) + """
[[tasks]]
name = "absent"
description = "only when present"
optional = true
num_classes = 10
source = { kind = "imagefolder", id = "/nonexistent/vitbench-absent" }
splits = { train = "train", test = "val" }

[[tasks]]
name = "broken"
num_classes = 10
source = { kind = "imagefolder", id = "/nonexistent/vitbench-broken" }
splits = { train = "train", test = "val" }
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.toml").write_text(STUDY)
    (tmp_path / "data").mkdir()
    return tmp_path


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(root: Path):
    return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]


def test_failures_are_recorded_the_run_goes_on_and_optional_tasks_are_skipped(workdir, capsys):
    code, out, err = run_cli(capsys, "fewshot", "--suite", "study.toml", "--shots", "1,2", "--out", "res", "--data-root", "data")
    assert code == 1, err  # a cell failed: non-zero at the end, after the table and the report
    recs = records(workdir / "res")
    ok = [r for r in recs if r["status"] == "ok"]
    failed = [r for r in recs if r["status"] == "failed"]
    assert sorted(r["params"]["shots"] for r in ok) == [1, 2] and {r["task"] for r in ok} == {"digits"}
    assert len(failed) == 2 and {r["task"] for r in failed} == {"broken"}  # the optional task leaves no record
    error = failed[0]["error"]
    assert error["type"] == "DataMissing" and "no data found" in error["message"] and "\n" not in error["message"]
    assert error["where"]["cell"].startswith("study/broken") and error["where"]["host"] and error["when"]
    assert failed[0]["metrics"] == {} and failed[0]["host"] and failed[0]["argv"][:2] == ["vitbench", "fewshot"]
    assert "note: skipped 2 cell(s) of optional task 'absent': its data is not present" in " ".join(out.split())
    assert "failed: 2 cell(s)" in out and "study/broken" in out and "no data found" in out
    assert "digits" in out and "report:" in out
    html = (workdir / "res" / "report" / "index.html").read_text()
    assert "Failed cells" in html and "no data found" in html  # listed apart, not counted as results
    log = next((workdir / "res" / "logs").glob("run-*.log")).read_text()
    assert "failed study/broken" in log and "skipped study/absent" in log and "Traceback" in log

    # resume: failure records are not done; the failed cells are retried, the results are reused
    code, out, _ = run_cli(capsys, "fewshot", "--suite", "study.toml", "--shots", "1,2", "--out", "res", "--data-root", "data", "--tasks", "digits,broken", "--dry-run")
    assert code == 0 and "2 to run, 2 already done" in out


def test_fail_fast_stops_at_the_first_failure_with_its_line(workdir, capsys):
    code, out, err = run_cli(capsys, "fewshot", "--suite", "study.toml", "--shots", "1,2", "--out", "res", "--data-root", "data",
                             "--tasks", "broken,digits", "--fail-fast")
    assert code == 2 and "no data found" in err and "Traceback" not in err
    recs = records(workdir / "res")
    assert sorted(r["status"] for r in recs) == ["failed", "ok", "ok"]  # suite order: digits, then the first broken cell
    assert "failed: " not in out  # no end-of-run summary: it stopped there


def test_any_exception_in_a_cell_becomes_a_failure_record(workdir, capsys, monkeypatch):
    from vitbench import planner
    from vitbench.runners import fewshot as fewshot_runner

    def nan_on_two_shots(cell, ctx, deps):
        if cell.params["shots"] == 2:
            raise FloatingPointError("loss is NaN at step 3\nsecond line")
        return fewshot_runner.run_cell(cell, ctx)

    monkeypatch.setattr(planner, "runner_for", lambda method: nan_on_two_shots)
    code, out, err = run_cli(capsys, "fewshot", "--suite", "study.toml", "--shots", "1,2", "--out", "res", "--tasks", "digits", "--no-report")
    assert code == 1
    failed = [r for r in records(workdir / "res") if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["error"]["message"] == "FloatingPointError: loss is NaN at step 3"
    assert failed[0]["error"]["type"] == "FloatingPointError"
    # the summary table counts the result only; the failure is listed with its reason
    assert "FloatingPointError: loss is NaN at step 3" in out
    from vitbench import results

    assert len(results.ok_records(results.load_records(workdir / "res"))) == 1


def test_progress_lines_off_a_terminal(workdir, capsys, monkeypatch):
    monkeypatch.setenv("VITBENCH_CACHE_DIR", str(workdir / "fresh-cache"))  # features are extracted: batch lines
    code, out, err = run_cli(capsys, "fewshot", "--suite", "study.toml", "--shots", "1,2", "--out", "res", "--tasks", "digits",
                             "--progress-every", "0.001", "--no-report")
    assert code == 0
    assert "cell 1/2 study/digits vit_ti16 fewshot shots=1 seed=0: started" in out  # on stdout: stderr is for errors
    assert "cell 2/2" in out and "ETA" in out and "ok in" in out
    assert any("features" in line and "/" in line for line in out.splitlines())  # batches inside a cell


def test_report_beside_results_covers_the_folder_is_rebuilt_and_merges_folders(workdir, capsys):
    args = ["fewshot", "--suite", "study.toml", "--tasks", "digits"]
    assert run_cli(capsys, *args, "--shots", "1", "--out", "a")[0] == 0
    stale = workdir / "a" / "report" / "old_plot.png"
    stale.write_bytes(b"stale")
    assert run_cli(capsys, *args, "--shots", "2", "--out", "a")[0] == 0
    assert not stale.exists()  # rebuilt, not mixed with stale files
    summary = (workdir / "a" / "report" / "results.csv").read_text()
    assert summary.count("digits") == 2  # both runs' cells: the report covers the whole folder
    assert run_cli(capsys, *args, "--shots", "1", "--out", "b")[0] == 0
    code, out, err = run_cli(capsys, "report", "a", "b", "-o", "merged")
    assert code == 0, err
    assert (workdir / "merged" / "results.csv").read_text().count("digits") == 2  # same key counted once
    assert "2 results from 2 folder(s)" in out

    (workdir / "mine").mkdir()
    (workdir / "mine" / "notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "report", "a", "-o", "mine")
    assert code == 2 and "is not a vitbench report" in err and (workdir / "mine" / "notes.txt").exists()


def test_optional_field_is_not_part_of_the_key():
    from vitbench.suites import parse_suite

    import tomllib

    raw = tomllib.loads(STUDY)
    plain = parse_suite(raw, "x").task("absent")
    raw["tasks"][1]["optional"] = False
    assert plain.optional and plain.to_dict() == parse_suite(raw, "x").task("absent").to_dict()


def test_fewshot_suite_marks_imagenet_optional():
    from vitbench.suites import load_suite

    suite = load_suite("fewshot")
    assert [t.name for t in suite.tasks if t.optional] == ["imagenet"]


def test_reports_swapped_in_by_workers_finishing_at_once_stay_whole(tmp_path):
    import threading

    from vitbench.commands.study import _swap_in

    target = tmp_path / "report"
    built = []
    for i in range(8):
        d = tmp_path / f".built{i}"
        d.mkdir()
        (d / "index.html").write_text(f"report {i}")
        (d / f"plot{i}.png").write_text("x")
        built.append(d)
    threads = [threading.Thread(target=_swap_in, args=(d, target)) for d in built]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for p in target.iterdir())
    assert len(names) == 2 and names[0] == "index.html"  # one complete report, no plots of the others
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # nothing left aside


def test_progress_lines_are_throttled_and_logged(tmp_path):
    import io

    from vitbench.runlog import ProgressLines, RunLog, eta_text

    assert [eta_text(s) for s in (None, 5, 75, 3725)] == ["?", "5s", "1m15s", "1h02m"]
    stream = io.StringIO()
    log = RunLog(tmp_path, tag="t")
    lines = ProgressLines(3, every_s=3600, stream=stream, log=log)
    lines.cell_started(0, "a")
    for i in range(100):
        lines.step("batches", i + 1, 100)  # within the interval: not printed
    lines.cell_ended("ok")
    printed = stream.getvalue().splitlines()
    assert len(printed) == 1 and printed[0].startswith("cell 1/3 a: started")  # the rest within the interval
    lines.cell_started(1, "b")
    lines.cell_ended("failed", "boom")  # a failure is always shown
    log.close()
    printed = stream.getvalue().splitlines()
    assert len(printed) == 2 and printed[1].startswith("cell 2/3 b: failed in") and "boom" in printed[1]
    assert "run ETA" in printed[1] and log.path.name.startswith("t-") and len(log.path.read_text().splitlines()) == 2


def _dev_cells(tmp_path):
    from vitbench import planner
    from vitbench.suites import load_suite

    text = (Path(__file__).resolve().parent.parent / "vitbench" / "suite_files" / "smoke.toml").read_text().replace(
        'splits = { train = "all[:1200]", test = "all[1200:]" }',
        'splits = { train = "all[:1200]", minitrain = "all[:1000]", val = "all[1000:1200]", test = "all[1200:]" }')
    text = text.replace("lr = 0.05", 'lr = [0.001, 0.05]\nlr_select = "dev"\nselect_train_split = "minitrain"\nselect_eval_split = "val"')
    (tmp_path / "dev.toml").write_text(text)
    cells = planner.expand(load_suite(str(tmp_path / "dev.toml")), ["vit_ti16"], ["finetune"], weights="none")
    return planner.plan(cells, tmp_path / "res").todo


def test_a_failed_dependency_fails_its_dependant_and_a_stop_ends_the_loop(tmp_path, monkeypatch):
    import threading

    from vitbench import planner, results, worker
    from vitbench.cells import CellResult, RunContext

    todo = _dev_cells(tmp_path)
    ran = []

    def fake(cell, ctx, deps):
        ran.append(cell.params.get("stage"))
        if cell.params.get("lr") == 0.05:
            raise MemoryError("CUDA out of memory")
        return CellResult(metrics={"top1": 0.5})

    monkeypatch.setattr(planner, "runner_for", lambda method: fake)
    monkeypatch.setattr("vitbench.data.fingerprint.cell_data_fingerprint", lambda cell, root: "fp")
    outcome = worker.run_cells(todo, tmp_path / "res", RunContext())
    assert ran == ["select", "select"]  # the final cell never ran: one of its selection runs failed
    reasons = {c.params.get("stage") or "final": r["error"]["message"] for c, r in outcome.failed}
    assert reasons["select"] == "MemoryError: CUDA out of memory"
    assert reasons["final"].startswith("not run: the cell it depends on, ") and "CUDA out of memory" in reasons["final"]
    assert len(outcome.written) == 1 and not list((tmp_path / "res").rglob("*.lock"))
    assert sum(results.is_failed(r) for r in results.load_records(tmp_path / "res")) == 2

    stop = threading.Event()
    stop.set()
    stopped = worker.run_cells(todo, tmp_path / "res2", RunContext(), stop=stop)
    assert len(stopped.stopped) == len(todo) and not stopped.written


def test_run_eta_counts_the_running_cell():
    """The run's ETA inside a cell is that cell's ETA plus the cells after it: never below the cell's own."""
    import io

    from vitbench.runlog import ProgressLines

    lines = ProgressLines(3, every_s=3600, stream=io.StringIO())
    lines.cells_s, lines.finished = 10.0, 1  # one cell done in 10 s, the second running, one after it
    assert lines.run_eta(cell_eta=4.0) == 14.0
    assert lines.run_eta() == 20.0
    lines.finished = 2  # the last cell running: its own ETA only
    assert lines.run_eta(cell_eta=3.0) == 3.0


def test_optional_task_without_data_is_skipped_even_when_the_model_fails_first(workdir, capsys, monkeypatch):
    """Offline without weights, every cell fails on the model; an optional task whose data is absent is still a
    skip with its note (not a failure), while a required task keeps its failure record."""
    from vitbench import planner
    from vitbench.errors import VitbenchError

    def no_weights(cell, ctx, deps):
        raise VitbenchError("weights of 'vit_ti16' are not in the cache (offline)")

    monkeypatch.setattr(planner, "runner_for", lambda method: no_weights)
    code, out, _ = run_cli(capsys, "fewshot", "--suite", "study.toml", "--shots", "1", "--out", "res", "--data-root", "data",
                           "--tasks", "digits,absent")
    assert code == 1
    recs = records(workdir / "res")
    assert [(r["task"], r["status"]) for r in recs] == [("digits", "failed")]
    assert "skipped 1 cell(s) of optional task 'absent'" in " ".join(out.split())
