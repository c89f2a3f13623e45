"""cache (bounded LRU), repository (layout and config files) and the thread default."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from kubeinfer_onnx import cache, repository


def test_cache_key_is_exact() -> None:
    a = {"x": np.array([1, 2], np.float32)}
    assert cache.cache_key(a) == cache.cache_key({"x": np.array([1, 2], np.float32)})
    assert cache.cache_key(a) != cache.cache_key({"x": np.array([1, 3], np.float32)})
    assert cache.cache_key(a) != cache.cache_key({"x": np.array([1, 2], np.float64)})
    assert cache.cache_key(a) != cache.cache_key({"x": np.array([[1, 2]], np.float32)})
    assert cache.cache_key(a) != cache.cache_key({"y": np.array([1, 2], np.float32)})


def test_cache_evicts_least_recently_used_by_entries_and_bytes() -> None:
    lru = cache.ResponseCache(max_entries=2, max_bytes=1000)
    for key in (b"a", b"b"):
        lru.put(key, {"y": np.zeros(10, np.float32)})
    assert lru.get(b"a") is not None  # Touch a: b is now the oldest.
    lru.put(b"c", {"y": np.zeros(10, np.float32)})
    assert lru.get(b"b") is None and lru.get(b"a") is not None and len(lru) == 2
    lru.put(b"big", {"y": np.zeros(200, np.float32)})  # 800 bytes: evicts down to fit.
    assert lru.bytes <= 1000 and lru.get(b"big") is not None
    lru.put(b"huge", {"y": np.zeros(1000, np.float32)})  # Over the whole budget: not stored.
    assert lru.get(b"huge") is None and lru.get(b"big") is not None


def test_cache_stores_copies() -> None:
    lru = cache.ResponseCache(max_entries=4, max_bytes=1000)
    batch = np.arange(4, dtype=np.float32)
    lru.put(b"k", {"y": batch[:2]})
    batch[:] = -1
    np.testing.assert_array_equal(lru.get(b"k")["y"], [0, 1])  # type: ignore[index]


def make_repo(root: pathlib.Path) -> pathlib.Path:
    for model, version in (("a", "1"), ("a", "3"), ("b", "2")):
        (root / model / version).mkdir(parents=True)
        (root / model / version / "model.onnx").write_bytes(b"onnx")
    (root / "a" / "config.yaml").write_text(
        "max_batch_size: 32\nmax_queue_delay_microseconds: 100\npreferred_batch_sizes: [16, 8]\n"
        "cache: true\n"
    )
    (root / "b" / "config.json").write_text(json.dumps({"instance_count": 2, "quantize": True}))
    (root / "docs").mkdir()
    (root / "a" / "notes").mkdir()
    return root


def test_scan_reads_layout_and_configs(tmp_path: pathlib.Path) -> None:
    models = repository.scan(make_repo(tmp_path))
    assert sorted(models) == ["a", "b"]
    assert sorted(models["a"].versions) == [1, 3] and models["a"].latest_version == 3
    assert models["a"].config == repository.ModelConfig(
        max_batch_size=32,
        max_queue_delay_microseconds=100,
        preferred_batch_sizes=(8, 16),
        cache=True,
    )
    assert models["b"].config.instance_count == 2 and models["b"].config.quantize


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_batch": 4}, "unknown config keys \\['max_batch'\\]"),
        ({"max_batch_size": -1}, "max_batch_size must be an integer >= 0"),
        ({"instance_count": 0}, "instance_count must be an integer >= 1"),
        ({"cache": "yes"}, "cache must be true or false"),
        ({"preferred_batch_sizes": [0]}, "list of positive integers"),
        ({"max_batch_size": 4, "preferred_batch_sizes": [8]}, "exceed max_batch_size 4"),
    ],
)
def test_bad_config_is_an_error(raw: dict[str, object], message: str) -> None:
    with pytest.raises(repository.RepositoryError, match=message):
        repository.parse_config(raw, where="m/config.json")


def test_empty_or_missing_repository(tmp_path: pathlib.Path) -> None:
    with pytest.raises(repository.RepositoryError, match="holds no"):
        repository.scan(tmp_path)
    with pytest.raises(repository.RepositoryError, match="not a directory"):
        repository.scan(tmp_path / "missing")
