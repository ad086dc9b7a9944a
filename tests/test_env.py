"""Folders, environment variables and offline switches (vitbench.env); hashes (vitbench.hashing)."""

import hashlib
import os
from pathlib import Path

import pytest

from vitbench import env
from vitbench.hashing import canonical_json, file_sha256, json_sha256


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(env.CACHE_ENV, raising=False)
    assert env.cache_dir() == Path.home() / ".cache" / "vitbench"
    monkeypatch.setenv(env.CACHE_ENV, str(tmp_path / "from-env"))
    assert env.cache_dir() == tmp_path / "from-env"
    with env.cache_dir_scope(tmp_path / "run"):
        assert env.cache_dir() == tmp_path / "run"  # a run's --cache-dir beats the environment
        assert env.cache_dir(tmp_path / "flag") == tmp_path / "flag"  # an explicit folder beats both
        with env.cache_dir_scope(None):
            assert env.cache_dir() == tmp_path / "run"
    assert env.cache_dir() == tmp_path / "from-env"
    assert os.environ[env.CACHE_ENV] == str(tmp_path / "from-env")  # the process environment is not edited


def test_cache_dir_scope_is_left_on_error(tmp_path, monkeypatch):
    monkeypatch.setenv(env.CACHE_ENV, str(tmp_path / "env"))
    with pytest.raises(RuntimeError):
        with env.cache_dir_scope(tmp_path / "run"):
            raise RuntimeError
    assert env.cache_dir() == tmp_path / "env"


def test_data_root_and_real_json(monkeypatch, tmp_path):
    monkeypatch.delenv(env.DATA_ROOT_ENV, raising=False)
    monkeypatch.delenv(env.REAL_JSON_ENV, raising=False)
    assert env.data_root() == Path.home() / ".cache" / "vitbench" / "data"
    monkeypatch.setenv(env.DATA_ROOT_ENV, str(tmp_path / "data"))
    assert env.data_root() == tmp_path / "data" and env.data_root(tmp_path / "x") == tmp_path / "x"
    assert env.real_json() == tmp_path / "data" / "real.json"
    assert env.real_json(tmp_path / "other") == tmp_path / "other" / "real.json"
    monkeypatch.setenv(env.REAL_JSON_ENV, str(tmp_path / "labels.json"))
    assert env.real_json(tmp_path / "other") == tmp_path / "labels.json"


@pytest.mark.parametrize("hub, datasets, hub_offline, datasets_offline", [
    ("", "", False, False), ("1", "", True, True), ("", "1", False, True), ("true", "", True, True),
    ("0", "", False, False),
])
def test_offline_switches(monkeypatch, hub, datasets, hub_offline, datasets_offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", hub)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", datasets)
    assert env.hub_offline() is hub_offline
    assert env.datasets_offline() is datasets_offline


def test_json_hash_is_canonical():
    a = {"b": [1, 2.5, "x"], "a": {"z": None, "y": True}}
    b = {"a": {"y": True, "z": None}, "b": [1, 2.5, "x"]}
    assert canonical_json(a) == canonical_json(b) == '{"a":{"y":true,"z":null},"b":[1,2.5,"x"]}'
    assert json_sha256(a) == hashlib.sha256(canonical_json(a).encode()).hexdigest()
    assert json_sha256(a, 20) == json_sha256(b)[:20] and json_sha256({**a, "c": 1}) != json_sha256(a)


def test_file_sha256_memo_and_integrity_reads(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert file_sha256(path) == digest
    stat = path.stat()
    path.write_bytes(b"abd")  # same size, and the mtime put back: only a re-read can notice
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == digest  # memoised per (path, size, mtime)
    assert file_sha256(path, memo=False) == hashlib.sha256(b"abd").hexdigest()
