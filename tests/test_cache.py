"""TrialSet disk cache: content-addressed keys, memory-mapped hits, corrupt entries rebuilt."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest

from bcikit.data import TrialSet
from bcikit.data import cache as cache_mod
from bcikit.data.cache import TrialSetCache, canonical_json, default_cache_dir, file_hash
from bcikit.utils import BcikitWarning


@pytest.fixture
def source(tmp_path) -> Path:
    p = tmp_path / "src" / "rec.bin"
    p.parent.mkdir()
    p.write_bytes(b"recording-1" * 100)
    return p


def make_ts(rng, n=6, subject="S1") -> TrialSet:
    info = mne.create_info(["C3", "Cz", "C4"], 100.0, "eeg")
    meta = pd.DataFrame({"subject": subject, "session": "0", "run": "1",
                         "onset": np.arange(n) * 2.0})
    return TrialSet(rng.standard_normal((n, 3, 50)), rng.integers(0, 2, n), meta, info,
                    ["left", "right"], tmin=0.5)


class Builder:
    """Counts how often the cache asks for a build."""

    def __init__(self, result):
        self.result, self.calls = result, 0

    def __call__(self):
        self.calls += 1
        return self.result


def test_file_hash_is_sha256_memoised_and_follows_changes(tmp_path, source, monkeypatch):
    index = tmp_path / "idx.json"
    assert file_hash(source, index=index) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert str(source.resolve()) in json.loads(index.read_text())
    reads = []
    real = cache_mod._sha256_file
    monkeypatch.setattr(cache_mod, "_sha256_file", lambda p: reads.append(p) or real(p))
    file_hash(source, index=index)
    assert reads == []  # memo hit: the file was not read again
    source.write_bytes(b"recording-2" * 101)
    assert file_hash(source, index=index) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert len(reads) == 1
    # a folder hashes its files' names and contents
    d = tmp_path / "rec.mefd"
    (d / "a").mkdir(parents=True)
    (d / "a" / "x.dat").write_bytes(b"1")
    h1 = file_hash(d, index=index)
    (d / "a" / "x.dat").write_bytes(b"2")
    assert file_hash(d, index=index) != h1
    with pytest.raises(FileNotFoundError, match=r"source file .*missing.edf"):
        file_hash(tmp_path / "missing.edf", index=index)


def test_key_canonicalises_params_and_tracks_sources(tmp_path, source):
    c = TrialSetCache(tmp_path / "cache")
    k = c.key([source], {"band": [8, 32], "tmax": 4.0, "picks": ("C3", "C4")})
    assert len(k) == 32 and all(ch in "0123456789abcdef" for ch in k)
    assert k == c.key([str(source)], {"picks": ["C3", "C4"], "tmax": 4, "band": (8.0, 32.0)})
    assert k == c.key([source], {"band": np.array([8, 32]), "tmax": np.float64(4.0),
                                 "picks": ["C3", "C4"]})
    assert k != c.key([source], {"band": [8, 30], "tmax": 4.0, "picks": ["C3", "C4"]})
    assert canonical_json({"b": {1.5, 0.5}, "a": Path("x/y")}) == '{"a":"x/y","b":[0.5,1.5]}'
    source.write_bytes(b"another recording")
    assert k != c.key([source], {"band": [8, 32], "tmax": 4.0, "picks": ["C3", "C4"]})
    with pytest.raises(TypeError, match=r"params\['fn'\] is a function"):
        c.key([source], {"fn": lambda: 0})
    with pytest.raises(FileNotFoundError, match=r"nope.edf"):
        c.key([tmp_path / "nope.edf"], {})


def test_get_or_build_saves_once_and_loads_memory_mapped(tmp_path, source, rng):
    ts = make_ts(rng)
    build = Builder(ts)
    c = TrialSetCache(tmp_path / "cache")
    first = c.get_or_build([source], {"tmin": 0.5}, build)
    second = c.get_or_build([source], {"tmin": 0.5}, build)
    assert build.calls == 1
    for out in (first, second):
        assert isinstance(out.X, np.memmap)
        np.testing.assert_array_equal(out.X, ts.X)
        np.testing.assert_array_equal(out.y, ts.y)
        assert out.classes == ["left", "right"] and out.tmin == 0.5
        assert out.ch_names == ["C3", "Cz", "C4"] and out.sfreq == 100.0
        pd.testing.assert_frame_equal(out.meta, ts.meta, check_dtype=False)
    assert c.key([source], {"tmin": 0.5}) in c
    # other params or a changed source build again
    c.get_or_build([source], {"tmin": 1.0}, build)
    assert build.calls == 2
    source.write_bytes(b"edited")
    c.get_or_build([source], {"tmin": 0.5}, build)
    assert build.calls == 3


def test_get_or_build_handles_dicts_of_trialsets(tmp_path, source, rng):
    sets = {"S1": make_ts(rng, 4, "S1"), "sub 2/β": make_ts(rng, 5, "sub 2/β")}
    build = Builder(sets)
    c = TrialSetCache(tmp_path / "cache")
    for _ in range(2):
        out = c.get_or_build([source], {}, build)
        assert list(out) == ["S1", "sub 2/β"]
        for name in sets:
            np.testing.assert_array_equal(out[name].X, sets[name].X)
    assert build.calls == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "remove"])
def test_corrupt_entry_is_rebuilt_with_a_warning(tmp_path, source, rng, damage):
    ts = make_ts(rng)
    build = Builder(ts)
    c = TrialSetCache(tmp_path / "cache")
    c.get_or_build([source], {}, build)
    entry = c.path(c.key([source], {}))
    xfile = entry / "sets" / "0" / "X.npy"
    if damage == "truncate":
        xfile.write_bytes(xfile.read_bytes()[:-40])
    elif damage == "flip":
        raw = bytearray(xfile.read_bytes())
        raw[-5] ^= 0xFF  # same size, different content
        xfile.write_bytes(bytes(raw))
    elif damage == "header":
        (entry / "entry.json").write_text("{not json")
    else:
        (entry / "sets" / "0" / "meta.csv").unlink()
    with pytest.warns(BcikitWarning, match=r"cache entry .* is corrupt .*rebuilding"):
        out = c.get_or_build([source], {}, build)
    assert build.calls == 2
    np.testing.assert_array_equal(out.X, ts.X)
    c.get_or_build([source], {}, build)  # the rebuilt entry is good again
    assert build.calls == 2


def test_failed_build_leaves_nothing_and_bad_results_are_refused(tmp_path, source):
    c = TrialSetCache(tmp_path / "cache")

    def boom():
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError, match="reader failed"):
        c.get_or_build([source], {}, boom)
    with pytest.raises(TypeError, match=r"must return a TrialSet or a dict .* got ndarray"):
        c.get_or_build([source], {}, lambda: np.zeros(3))
    assert not c.path(c.key([source], {})).exists()
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()] if (tmp_path / "cache").exists() else []
    assert [n for n in leftovers if n.startswith(".tmp-")] == []


def test_default_directory_and_clear(tmp_path, source, rng, monkeypatch):
    monkeypatch.setenv("BCIKIT_CACHE", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    c = TrialSetCache()
    assert c.directory == tmp_path / "envcache"
    c.get_or_build([source], {"a": 1}, Builder(make_ts(rng)))
    c.get_or_build([source], {"a": 2}, Builder(make_ts(rng)))
    (c.directory / ".tmp-leftover").mkdir()
    (c.directory / "README.txt").write_text("not ours")
    assert (c.directory / "file_hashes.json").is_file()
    assert c.clear() == 2
    assert sorted(os.listdir(c.directory)) == ["README.txt"]
    monkeypatch.delenv("BCIKIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "bcikit"
