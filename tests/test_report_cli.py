"""`vitbench report --json`, `vitbench compare` (expected file, paper, two folders) and `vitbench --version`."""

import json

from test_report import rec  # noqa: E402 - tests/ is on sys.path under pytest's rootdir import mode

from vitbench import __version__
from vitbench.cli import main
from vitbench.results import atomic_write_json


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(folder, records):
    for i, r in enumerate(records):
        atomic_write_json(folder / r["suite"] / r["task"] / r["method"] / f"{i}-{r['seed']}.json", {"schema_version": 1, **r})
    return folder


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"vitbench {__version__}"


def test_report_json_and_null_params(tmp_path, capsys):
    recs = [rec("dtd", "natural", 0.70, seed=0), rec("dtd", "natural", 0.74, seed=1), {**rec("svhn", "natural", 0.5), "params": None}]
    write(tmp_path / "res", recs)
    code, out, err = run_cli(capsys, "report", tmp_path / "res", "-o", tmp_path / "rep", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["records"] == 2 and any("without a params" in w for w in payload["warnings"])
    row = payload["summary"][0]
    assert row["mean"] == 72.0 and row["n"] == 2
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "index.html").exists()


def test_compare_expected_file_tolerance_and_missing(tmp_path, capsys):
    write(tmp_path / "res", [rec("dtd", "natural", 0.70, seed=0), rec("dtd", "natural", 0.74, seed=1)])
    good = tmp_path / "good.csv"
    good.write_text("task,model,method,metric,value\ndtd,vit_l16,finetune,top1,72.3\n")
    code, out, err = run_cli(capsys, "compare", tmp_path / "res", "--expected", good)
    assert code == 0, err
    assert "1 within tolerance" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("task,model,method,metric,value,tol\ndtd,vit_l16,finetune,top1,72.3,0.1\nsvhn,vit_l16,finetune,top1,50,\n")
    code, out, _ = run_cli(capsys, "compare", tmp_path / "res", "--expected", bad)
    assert code == 1 and "outside" in out and "missing" in out
    code, _, err = run_cli(capsys, "compare", tmp_path / "res", "--expected", tmp_path / "nope.csv")
    assert code == 2 and "no such file" in err


def test_compare_against_the_paper(tmp_path, capsys):
    write(tmp_path / "res", [rec("dtd", "natural", 0.745, seed=0)])
    code, out, _ = run_cli(capsys, "compare", tmp_path / "res", "--expected", "paper", "--tol", "0.5")
    assert code == 0 and "74.1" in out and "yes" in out  # Table 9 ViT-L/16 I21k DTD 74.1; delta +0.40
    code, out, _ = run_cli(capsys, "compare", tmp_path / "res", "--expected", "paper", "--tol", "0.3")
    assert code == 1


def test_compare_two_folders_flags_differences_beyond_the_seed_spread(tmp_path, capsys):
    a = write(tmp_path / "a", [rec("dtd", "natural", 0.70, seed=0), rec("dtd", "natural", 0.74, seed=1)])
    b = write(tmp_path / "b", [rec("dtd", "natural", 0.71, seed=0), rec("dtd", "natural", 0.75, seed=1)])
    code, out, _ = run_cli(capsys, "compare", a, b)
    assert code == 0 and "0 differ" in out  # +1.00 within the 2.83 std
    c = write(tmp_path / "c", [rec("dtd", "natural", 0.80, seed=0), rec("dtd", "natural", 0.84, seed=1)])
    code, out, _ = run_cli(capsys, "compare", a, c)
    assert code == 1 and "differs" in out
    code, _, err = run_cli(capsys, "compare", a)
    assert code == 2 and "either a second results folder" in err


def test_compare_on_an_empty_folder_is_one_line(tmp_path, capsys):
    from vitbench.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--expected", "paper"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no result records" in err
