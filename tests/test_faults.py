"""Faults that must never give a plausible wrong number, and must end in one line with nothing left behind.

Each test reproduces one attack on tiny data: a corrupted decoded-image cache, data swapped under a results
folder, diverged or degenerate fine-tuning settings, full disks (a real 1-2 MB tmpfs when root), SIGTERM and
kill -9 leftovers, a corrupt prepared shard, read-only caches, records of an unknown schema, and names that
would escape the output folder. README.md "Guarantees under faults" states what these tests check.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitbench import fsutil, results
from vitbench.cli import main
from vitbench.data.base import ImageSplit
from vitbench.data.fingerprint import files_stat, tree_stat
from vitbench.data.image_cache import cache_file, cached_resized_images
from vitbench.data.transforms import Preprocessing
from vitbench.finetune import batch_stream

REPO = Path(__file__).resolve().parent.parent
COLORS = {"blue": (20, 20, 200), "red": (200, 20, 20)}  # class 0 = blue, 1 = red (sorted folder names)


def color_image(color, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color)[None, None] + rng.integers(-15, 16, (16, 16, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def make_folder(root: Path, per_class: int = 6) -> Path:
    """imagefolder `root/{train,test}/{blue,red}/NN.bmp`; BMPs of one size are byte-for-byte the same length."""
    for split, offset in (("train", 0), ("test", 100)):
        for name, color in COLORS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                color_image(color, offset + i).save(root / split / name / f"{i:02d}.bmp")
    return root


def suite_text(data: Path, name: str = "faults", task: str = "colors", methods=("fewshot",)) -> str:
    return f"""
name = {json.dumps(name)}
[defaults]
model = "vit_ti16"
weights = "none"
img_size = 32
methods = {json.dumps(list(methods))}
[fewshot]
shots = [2]
seeds = [0]
[finetune]
steps = 3
lr = 0.01
batch_size = 8
warmup_steps = 1
train_crop = "none"
hflip = false
[[tasks]]
name = {json.dumps(task)}
num_classes = 2
source = {{ kind = "imagefolder", id = {json.dumps(str(data))} }}
splits = {{ train = "train", test = "test" }}
"""


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A working folder with a colour-folder task, its suite file and a private cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VITBENCH_CACHE_DIR", str(tmp_path / "cache"))
    data = make_folder(tmp_path / "data")
    (tmp_path / "faults.toml").write_text(suite_text(data))
    return tmp_path


def cli(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))]


def temps(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*.tmp*")]


def one_line(err: str) -> bool:
    return err.strip().count("\n") == 0 and "Traceback" not in err and err.startswith("error:")


# --------------------------------------------------------------------------- 1. decoded-image cache integrity
def tiny_split(n=10) -> ImageSplit:
    imgs = [color_image(COLORS["red" if i % 2 else "blue"], i) for i in range(n)]
    return ImageSplit(labels=np.arange(n) % 2, fingerprint=f"tiny-{n}", provenance={"task": "t", "split": "s"},
                      load_image=lambda i: imgs[i], describe=lambda i: f"img {i}")


@pytest.mark.parametrize("damage", ["zero_middle", "truncate", "random_bytes", "no_sidecar"])
def test_damaged_image_cache_is_detected_and_rebuilt(tmp_path, damage):
    split, prep = tiny_split(), Preprocessing(size=24)
    clean = np.array(cached_resized_images(split, prep, cache_dir=tmp_path))
    path = cache_file(split, prep, tmp_path)
    raw = bytearray(path.read_bytes())
    if damage == "zero_middle":
        mid = len(raw) // 2
        raw[mid - len(raw) // 4: mid + len(raw) // 4] = bytes(len(raw) // 2)
    elif damage == "truncate":
        raw = raw[: len(raw) // 3]
    elif damage == "random_bytes":
        raw = bytearray(np.random.default_rng(0).integers(0, 256, len(raw), dtype=np.uint8).tobytes())
    else:
        path.with_suffix(".json").unlink()
    path.write_bytes(bytes(raw))
    fsutil.forget_verified()  # as in a fresh process
    with pytest.warns(UserWarning, match="decoded-image cache .* is invalid"):
        again = cached_resized_images(split, prep, cache_dir=tmp_path)
    assert np.array_equal(np.asarray(again), clean)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == fsutil.file_sha256(path) and meta["bytes"] == path.stat().st_size
    assert temps(tmp_path) == []


@pytest.mark.slow
def test_zeroed_image_cache_does_not_reach_features_or_the_number(ws, capsys):
    args = ("run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--img-size", "112", "--no-report")
    assert cli(capsys, *args)[0] == 0
    clean_top1 = records(ws / "res")[0]["metrics"]["top1"]
    caches = sorted((ws / "cache" / "images").glob("*.npy"))
    clean_bytes = {p: p.read_bytes() for p in caches}
    for p in caches:  # zero 200 KB in the middle of every decoded-image cache (12 images of 112 px: 451 KB)
        raw = bytearray(p.read_bytes())
        lo = len(raw) // 2 - 100_000
        raw[lo: lo + 200_000] = bytes(200_000)
        p.write_bytes(bytes(raw))
    fsutil.forget_verified()
    assert cli(capsys, "cache", "clear", "--what", "features", "-y")[0] == 0  # features must come from images
    with pytest.warns(UserWarning, match="decoded-image cache"):
        code, _, err = cli(capsys, *args, "--force")
    assert code == 0, err
    assert records(ws / "res")[0]["metrics"]["top1"] == clean_top1
    assert {p: p.read_bytes() for p in caches} == clean_bytes  # rebuilt, not kept with its zeros


# --------------------------------------------------------------------------- 2. data identity
def test_fingerprints_see_same_size_replacements(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 100)
    before, tree_before = files_stat([a], tmp_path), tree_stat(tmp_path)
    os.utime(a, ns=(1, 1))
    a.write_bytes(b"y" * 100)  # same size, new content and mtime
    assert files_stat([a], tmp_path) != before and tree_stat(tmp_path) != tree_before
    assert tree_stat(tmp_path)["files"] == 1


def test_swapped_images_are_recomputed_not_resumed(ws, capsys):
    args = ("run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    before = records(ws / "res")[0]
    assert before["data_fingerprint"]
    test_dir = ws / "data" / "test"
    for i in range(6):  # swap the classes' images, file for file, same names and sizes
        blue, red = test_dir / "blue" / f"{i:02d}.bmp", test_dir / "red" / f"{i:02d}.bmp"
        size = blue.stat().st_size
        b, r = blue.read_bytes(), red.read_bytes()
        blue.write_bytes(r)
        red.write_bytes(b)
        assert blue.stat().st_size == size
    code, out, err = cli(capsys, *args)  # same --out, same cache
    assert code == 0, err
    assert "1 to run, 0 already done" in out
    after = records(ws / "res")[0]
    assert after["data_fingerprint"] != before["data_fingerprint"]
    # the number equals a fresh run on the swapped data, in a new folder with a new cache
    os.environ["VITBENCH_CACHE_DIR"] = str(ws / "cache2")
    assert cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "fresh", "--no-report")[0] == 0
    fresh = records(ws / "fresh")[0]
    assert after["metrics"]["top1"] == fresh["metrics"]["top1"] != before["metrics"]["top1"]
    assert after["provenance"]["feature_cache"]["test"]["hit"] is False


def test_dry_run_opens_no_data_and_says_so(ws, capsys):
    assert cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")[0] == 0
    (ws / "data" / "test" / "red" / "00.bmp").unlink()
    code, out, _ = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--dry-run")
    assert code == 0 and "0 to run, 1 already done" in out and "without opening the data" in out
    code, out, _ = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")
    assert code == 0 and "1 to run, 0 already done" in out


def test_torchvision_root_identity_sees_replaced_files(tmp_path):
    from vitbench.data import load_split
    from vitbench.data.fingerprint import forget
    from vitbench.suites import SourceSpec, TaskSpec

    folder = tmp_path / "torchvision" / "eurosat" / "2750"
    for c in ("AnnualCrop", "Forest"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / c / f"{c}_{i}.png")
    task = TaskSpec(name="eurosat_tv", num_classes=10, splits={"train": "all[:4]", "test": "all[4:]"},
                    sources=(SourceSpec("torchvision", "EuroSAT"),))
    before = load_split(task, "train", data_root=tmp_path).fingerprint
    victim = folder / "AnnualCrop" / "AnnualCrop_0.png"
    data = victim.read_bytes()
    victim.write_bytes(data)  # same bytes, new mtime: treated as a possibly different file
    os.utime(victim, ns=(10**18, 10**18))
    forget()
    assert load_split(task, "train", data_root=tmp_path).fingerprint != before


def test_records_are_kept_when_their_data_is_gone(ws, capsys):
    args = ("run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")
    assert cli(capsys, *args)[0] == 0
    (ws / "data").rename(ws / "elsewhere")
    with pytest.warns(UserWarning, match="its records are kept"):
        code, out, err = cli(capsys, *args)
    assert code == 0 and "0 to run, 1 already done" in out, err


# --------------------------------------------------------------------------- 4. diverged / degenerate runs
def test_infinite_lr_is_refused(ws, capsys):
    code, _, err = cli(capsys, "finetune", "--suite", "faults.toml", "--out", "res", "--lr", "inf")
    assert code == 2 and one_line(err) and "finite" in err
    assert not (ws / "res").exists()


def test_diverged_training_fails_the_cell_and_keeps_earlier_records(ws, capsys):
    assert cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")[0] == 0
    kept = sorted((ws / "res").rglob("*.json"))
    code, out, err = cli(capsys, "finetune", "--suite", "faults.toml", "--out", "res", "--lr", "1e38", "--no-report")
    assert code == 1 and "diverged" in out  # the run goes on; the end lists the failed cell with its reason
    failed = [json.loads(p.read_text()) for p in sorted((ws / "res").rglob("*.json")) if p not in kept]
    assert [r["status"] for r in failed] == ["failed"] and failed[0]["metrics"] == {}  # no number claimed
    assert "diverged" in failed[0]["error"]["message"] and failed[0]["error"]["type"] == "CellFailed"
    code, _, err = cli(capsys, "finetune", "--suite", "faults.toml", "--out", "res", "--lr", "1e38", "--no-report", "--fail-fast")
    assert code == 2 and one_line(err) and "diverged" in err


def test_batch_larger_than_the_split_repeats_examples():
    gen = torch.Generator().manual_seed(0)
    stream = batch_stream(5, 12, gen)
    batches = [next(stream) for _ in range(5)]
    assert all(len(b) == 12 for b in batches)  # every step trains on the batch size it claims
    counts = np.bincount(np.concatenate(batches), minlength=5)
    assert counts.sum() == 60 and counts.max() - counts.min() <= 1  # a stream of whole shuffled epochs
    first = next(batch_stream(10, 4, torch.Generator().manual_seed(1)))
    assert len(set(first.tolist())) == 4  # within an epoch no example repeats


def test_finetune_record_states_what_ran(ws, capsys):
    code, _, err = cli(capsys, "finetune", "--suite", "faults.toml", "--out", "res", "--batch-size", "30", "--no-report")
    assert code == 0, err
    rec = records(ws / "res")[0]
    assert rec["details"]["n_train"] == 12 and rec["details"]["recipe"]["batch_size"] == 30
    assert rec["details"]["examples_seen"] == 3 * 30 and "stream" in rec["details"]["sampling"]


def test_img_size_not_a_multiple_of_the_patch_is_refused(ws, capsys):
    code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--img-size", "33")
    assert code == 2 and one_line(err) and "multiple of vit_ti16's patch size 16" in err
    assert not (ws / "res").exists()


# --------------------------------------------------------------------------- 5. full disks
@contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def env_for(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.mark.slow
def test_full_cache_disk_is_one_line_not_a_bus_error(ws):
    with tmpfs(ws / "small", "1M") as small:
        proc = subprocess.run(
            [sys.executable, "-m", "vitbench.cli", "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res",
             "--img-size", "224", "--cache-dir", str(small), "--no-report"],
            capture_output=True, text=True, cwd=ws, env=env_for(ws), timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert one_line(proc.stderr) and "no space left in" in proc.stderr and str(small) in proc.stderr
        assert "MB" in proc.stderr  # the space needed
        assert temps(small) == [] and not list(small.rglob("*.npy"))


def test_disk_filling_during_a_cache_write_cleans_up(tmp_path, monkeypatch):
    def no_fallocate(fd, off, n):
        raise OSError(errno.EOPNOTSUPP, "not supported")  # as on filesystems without fallocate

    with tmpfs(tmp_path / "small", "64k") as small:
        monkeypatch.setattr(fsutil, "check_space", lambda *a, **k: None)  # the space check passes, then the disk fills
        monkeypatch.setattr(os, "posix_fallocate", no_fallocate)
        with pytest.raises(fsutil.DiskFull, match="no space left in"):
            cached_resized_images(tiny_split(40), Preprocessing(size=32), cache_dir=small)
        assert temps(small) == [] and list(small.iterdir()) == []


def test_full_disk_while_writing_a_record_or_report(ws, capsys):
    with tmpfs(ws / "small", "256k") as small:
        (small / "filler").write_bytes(b"\0" * (256 * 1024 - 4096))
        code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", small / "res", "--no-report")
        assert code == 2 and one_line(err) and "no space left in" in err and "result record" in err
        assert temps(small) == [] and not list((small / "res").rglob("*.json"))
    assert cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")[0] == 0
    with tmpfs(ws / "small2", "64k") as small:
        (small / "filler").write_bytes(b"\0" * (64 * 1024 - 4096))
        code, _, err = cli(capsys, "report", "res", "--output", small / "rep")
        assert code == 2 and one_line(err) and "no space left" in err.lower() and str(small / "rep") in err


def test_full_disk_while_preparing_data(ws, capsys):
    with tmpfs(ws / "small", "16k") as small:
        stale = small / "colors" / f"test.tmp-{fsutil.HOST}-{dead_pid()}-0badf00d"
        stale.mkdir(parents=True)
        (stale / "shard-00000.parquet").write_bytes(b"left by kill -9")
        code, _, err = cli(capsys, "data", "prepare", "faults.toml", "--root", small)
        assert code == 2 and one_line(err) and "no space left in" in err
        assert not stale.exists() and temps(small) == []


# --------------------------------------------------------------------------- 6. signals and stale temp files
@pytest.mark.slow
def test_sigterm_exits_143_and_removes_temp_files(ws):
    (ws / "faults.toml").write_text(suite_text(make_folder(ws / "big", per_class=150)))
    cache = ws / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitbench.cli", "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res",
         "--img-size", "96", "--no-report"],
        cwd=ws, env=env_for(ws, VITBENCH_CACHE_DIR=cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not temps(cache) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before any temp file appeared"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert temps(cache, ws / "res") == []


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temp_files_of_dead_processes_are_swept(ws, capsys):
    dead, live = dead_pid(), os.getpid()
    feats, imgs, out = ws / "cache" / "features", ws / "cache" / "images", ws / "res" / "x"
    stale, kept = [], []
    for folder in (feats, imgs, out):
        folder.mkdir(parents=True, exist_ok=True)
        stale.append(folder / f"a.npy.tmp-{fsutil.HOST}-{dead}-0badf00d")
        kept.append(folder / f"b.npy.tmp-{fsutil.HOST}-{live}-0badf00d")
        stale[-1].write_bytes(b"left by kill -9")
        kept[-1].write_bytes(b"a live writer's")
    assert cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")[0] == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


# --------------------------------------------------------------------------- 7. more one-liners
def test_corrupt_prepared_shard_stops_the_run_with_one_line(ws, capsys):
    code, _, err = cli(capsys, "data", "prepare", "faults.toml", "--root", "prep")
    assert code == 0, err
    shard = sorted((ws / "prep" / "colors" / "test").glob("*.parquet"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    fsutil.forget_verified()
    code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--data-root", "prep",
                       "--no-report", "--fail-fast")
    assert code == 2 and one_line(err) and "vitbench data verify" in err and "colors/test/shard-00000.parquet" in err
    assert all(json.loads(p.read_text())["status"] == "failed" for p in (ws / "res").rglob("*.json"))  # no number


def test_read_only_cache(ws, capsys):
    assert cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")[0] == 0
    with tmpfs(ws / "ro", "4M") as ro:
        (ro / "features").mkdir()
        for p in (ws / "cache" / "features").iterdir():
            (ro / "features" / p.name).write_bytes(p.read_bytes())
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res2", "--img-size", "48",
                           "--cache-dir", ro, "--no-report", "--fail-fast")
        assert code == 2 and one_line(err) and "cannot write the feature cache" in err and str(ro) in err
        code, _, err = cli(capsys, "finetune", "--suite", "faults.toml", "--out", "res2", "--cache-dir", ro, "--no-report", "--fail-fast")
        assert code == 2 and one_line(err) and "cannot write the decoded-image cache" in err and str(ro) in err
        code, _, err = cli(capsys, "cache", "clear", "--cache-dir", ro, "-y")
        assert code == 2 and one_line(err) and "read-only" in err
    with tmpfs(ws / "ro2", "4M") as ro:  # a corrupt entry that cannot be replaced
        (ro / "features").mkdir()
        for p in (ws / "cache" / "features").iterdir():
            raw = bytearray(p.read_bytes())
            if p.suffix == ".npy":
                raw[-1] ^= 0xFF
            (ro / "features" / p.name).write_bytes(bytes(raw))
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        fsutil.forget_verified()
        with pytest.warns(UserWarning, match="feature cache"):
            code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res3",
                               "--cache-dir", ro, "--no-report", "--fail-fast")
        assert code == 2 and one_line(err) and "cannot be removed" in err


def test_records_of_an_unknown_schema_are_never_silently_accepted(ws, capsys):
    assert cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")[0] == 0
    path = sorted((ws / "res").rglob("*.json"))[0]
    rec = json.loads(path.read_text())
    rec["schema_version"] = 99
    path.write_text(json.dumps(rec))
    code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", "faults.toml", "--out", "res", "--no-report")
    assert code == 2 and one_line(err) and "schema_version 99" in err
    assert json.loads(path.read_text())["schema_version"] == 99  # not overwritten
    with pytest.warns(UserWarning, match="unknown schema_version"):
        assert results.load_records(ws / "res") == []


# --------------------------------------------------------------------------- 8. names used as paths
@pytest.mark.parametrize("suite_name,task_name", [("..", "colors"), ("faults", ".."), ("a/b", "colors"), (".hidden", "colors"),
                                                  ("faults", "x\ny"), ("<b>x</b>", "colors")])
def test_unsafe_names_are_refused_and_nothing_is_written_outside(ws, capsys, suite_name, task_name):
    (ws / "box").mkdir()
    (ws / "box" / "s.toml").write_text(suite_text(ws / "data", name=suite_name, task=task_name))
    before = set(ws.rglob("*"))
    code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", ws / "box" / "s.toml", "--out", ws / "box" / "out")
    assert code == 2 and one_line(err) and "cannot be used as a folder name" in err
    assert set(ws.rglob("*")) == before


def test_markup_in_names_is_flattened_inside_the_chosen_folders(ws, capsys):
    (ws / "box").mkdir()
    (ws / "box" / "s.toml").write_text(suite_text(ws / "data", name="a <i>b", task="c&d"))
    outside = {p for p in ws.rglob("*") if "box" not in p.parts and "cache" not in p.parts}
    code, _, err = cli(capsys, "run", "--method", "fewshot", "--suite", ws / "box" / "s.toml", "--out", ws / "box" / "out")
    assert code == 0, err
    new = {p for p in ws.rglob("*") if "box" not in p.parts and "cache" not in p.parts} - outside
    assert not new  # the report goes beside the results
    assert (ws / "box" / "out" / "report" / "index.html").is_file()
    assert [p.relative_to(ws / "box" / "out").parts[:3] for p in (ws / "box" / "out").rglob("*.json")
            if "report" not in p.parts] == [("a__i_b", "c_d", "fewshot")]


def test_sweep_only_touches_dead_processes_of_this_host(tmp_path):
    dead = dead_pid()
    mine = tmp_path / f"r.json.tmp-{fsutil.HOST}-{dead}-0badf00d"
    other_host = tmp_path / f"r.json.tmp-{fsutil.HOST}x-{dead}-0badf00d"  # a shared folder: another machine's writer
    not_ours = tmp_path / "notes.tmp-keep"
    for p in (mine, other_host, not_ours):
        p.write_text("x")
    assert fsutil.sweep_stale_temps(tmp_path) == [mine]
    assert other_host.exists() and not_ours.exists()


def test_safe_name():
    assert fsutil.safe_name("vtab-1k_v2.0") == "vtab-1k_v2.0"
    assert fsutil.safe_name("a <i>b&c") == "a__i_b_c"
    for bad in ("", ".", "..", ".x", "a/b", "a\\b", "a\x00b", "tab\there"):
        with pytest.raises(Exception, match="cannot be used as a folder name"):
            fsutil.safe_name(bad)
