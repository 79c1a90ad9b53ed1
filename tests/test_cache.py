"""zoo.cache: the cache folder lookup and the atomic write that the data, permutation-set and
feature caches share."""
import os

import numpy as np
import pytest

from zoo import cache
from zoo.eval import features
from zoo.patches import permutation_path


def test_cache_dir_is_a_sub_folder_of_zoo_cache_dir_or_of_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "c"))
    assert cache.cache_dir("data") == str(tmp_path / "c" / "data")
    assert os.path.dirname(permutation_path(100)) == str(tmp_path / "c" / "permutations")
    monkeypatch.delenv("ZOO_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir("data") == str(tmp_path / "home" / ".cache" / "keras-ssl-zoo" / "data")


def test_write_atomically_creates_the_folder_and_replaces_the_file(tmp_path):
    path = tmp_path / "new" / "x.bin"
    cache.write_atomically(str(path), lambda f: f.write(b"first"))
    cache.write_atomically(str(path), lambda f: f.write(b"second"))
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["x.bin"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "x.npz"
    cache.write_atomically(str(path), lambda f: f.write(b"old"))

    def half_then_fail(f):
        f.write(b"half")
        raise KeyboardInterrupt  # an interrupted run, not only an OSError

    with pytest.raises(KeyboardInterrupt):
        cache.write_atomically(str(path), half_then_fail, suffix=".npz.tmp")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.npz"]


def test_feature_cache_round_trip_through_the_shared_writer(tmp_path):
    path = str(tmp_path / "f" / "feats.npz")
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    features._save_cache(path, values, "meta-1")
    np.testing.assert_array_equal(features._load_cache(path, "meta-1"), values)
    assert features._load_cache(path, "meta-2") is None  # another key is a miss
