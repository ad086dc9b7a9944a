"""Executors: automatic sharding from launcher variables, job chunks that keep dependencies together, local
worker processes sharing one plan, and the SLURM route through submitit's local executor."""

import json
from pathlib import Path

import pytest

from suite_builder import fewshot_digits_suite
from vitbench import executors, planner
from vitbench.cli import main
from vitbench.suites import load_suite

REPO = Path(__file__).resolve().parent.parent
SUITE = fewshot_digits_suite("ex")
BROKEN = """
[[tasks]]
name = "broken"
num_classes = 10
source = { kind = "imagefolder", id = "/nonexistent/vitbench-broken" }
splits = { train = "train", test = "val" }
"""


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, (4, 4)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (3, 4)),
    ({"RANK": "0", "WORLD_SIZE": "8"}, (1, 8)),
    ({"PMI_RANK": "5", "PMI_SIZE": "6"}, (6, 6)),
    ({"RANK": "0", "WORLD_SIZE": "1"}, None),
    ({}, None),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2", "VITBENCH_IN_JOB": "1"}, None),
])
def test_shard_from_launcher_variables(env, expected):
    got = executors.env_shard(env)
    assert (got[0] if got else None) == expected


def test_job_chunks_keep_a_final_cell_with_its_selection_cells(tmp_path):
    text = (REPO / "vitbench" / "suite_files" / "smoke.toml").read_text().replace(
        'splits = { train = "all[:1200]", test = "all[1200:]" }',
        'splits = { train = "all[:1200]", minitrain = "all[:1000]", val = "all[1000:1200]", test = "all[1200:]" }')
    text = text.replace("lr = 0.05", 'lr = [0.001, 0.01, 0.05]\nlr_select = "dev"\nselect_train_split = "minitrain"\nselect_eval_split = "val"')
    (tmp_path / "dev.toml").write_text(text)
    suite = load_suite(str(tmp_path / "dev.toml"))
    cells = planner.expand(suite, ["vit_ti16"], ["finetune", "fewshot"], weights="none")
    chunks = executors.job_chunks(cells, None)
    finals = [c for c in cells if c.params.get("stage") == "final"]
    assert len(chunks) == len(cells) - 3 * len(finals) and sum(map(len, chunks)) == len(planner.ordered(cells)[0])
    for chunk in chunks:
        keys = [c.key for c in chunk]
        for c in chunk:  # every dependency is in the same chunk, before its dependant
            for dep in planner.dependencies(c):
                assert dep.key in keys and keys.index(dep.key) < keys.index(c.key)
    assert len(executors.job_chunks(cells, 2)) == 2


def _run(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr()


@pytest.mark.slow
def test_local_executor_with_worker_processes_runs_each_cell_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ex.toml").write_text(SUITE + BROKEN)
    code, cap = _run(capsys, "fewshot", "--suite", "ex.toml", "--shots", "1,2,3", "--out", "res", "--workers", "2", "--no-report",
                     "--tasks", "digits,broken")
    assert code == 1, cap.err
    assert "2 workers: cpu, cpu" in cap.out and "records: 3 written" in cap.out
    assert "failed: 3 cell(s)" in cap.out  # each failure listed once, whichever worker saw it
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    assert sorted(r["status"] for r in recs) == ["failed"] * 3 + ["ok"] * 3
    logs = list((tmp_path / "res" / "logs").glob("worker*.log"))
    assert len(logs) == 2
    done = [line for p in logs for line in p.read_text().splitlines() if line.split()[1:2] == ["done"] and "->" in line]
    assert len(done) == 3


@pytest.mark.slow
def test_slurm_executor_through_submitit_local(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITBENCH_SUBMITIT_CLUSTER", "local")  # the same job array, run on this machine
    (tmp_path / "ex.toml").write_text(SUITE)
    code, cap = _run(capsys, "fewshot", "--suite", "ex.toml", "--shots", "1,2", "--out", "res", "--executor", "slurm",
                     "--partition", "gpu", "--time", "30", "--account", "proj", "--wait")
    assert code == 0, cap.err
    assert "submitted 2 array task(s)" in cap.out and "records: 2 written" in cap.out
    assert (tmp_path / "res" / "report" / "index.html").is_file()
    assert list((tmp_path / "res" / "logs" / "slurm").rglob("*_log.out"))  # submitit's per-task logs
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    assert sorted(r["params"]["shots"] for r in recs) == [1, 2] and all(r["status"] == "ok" for r in recs)
    # resubmitting after the array finished runs nothing
    code, cap = _run(capsys, "fewshot", "--suite", "ex.toml", "--shots", "1,2", "--out", "res", "--executor", "slurm")
    assert code == 0 and "0 to run, 2 already done" in cap.out and "submitted" not in cap.out


def test_requeue_resubmits_the_same_cells():
    pytest.importorskip("submitit")
    cells = planner.expand(load_suite("smoke"), ["vit_ti16"], ["fewshot"], weights="none")[:2]
    job = executors.StudyJob(cells, executors.Settings(out_dir=Path("x")))
    again = job.checkpoint()
    assert isinstance(again.function, executors.StudyJob) and [c.key for c in again.function.cells] == [c.key for c in cells]


def test_slurm_without_sbatch_is_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    import shutil

    if shutil.which("sbatch"):
        pytest.skip("a SLURM cluster is reachable here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VITBENCH_SUBMITIT_CLUSTER", raising=False)
    (tmp_path / "ex.toml").write_text(SUITE)
    code, cap = _run(capsys, "fewshot", "--suite", "ex.toml", "--shots", "1", "--out", "res", "--executor", "slurm")
    assert code == 2 and "no SLURM here" in cap.err
