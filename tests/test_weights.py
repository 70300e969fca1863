"""Pinned weight files: cached copies are verified, offline misses say what to download."""

from __future__ import annotations

import hashlib

import pytest

from benchmark import weights
from benchmark.datasets.download import HostUnreachable
from benchmark.models import ConfigError
from benchmark.weights import WeightFile, fetch_weights, weights_cache

CONTENT = b"released tensors"
FILE = WeightFile(name="net.pkl", url="https://example.org/v1/net.pkl",
                  sha256=hashlib.sha256(CONTENT).hexdigest(), what="a test network")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "weights"


def test_cached_file_is_verified_and_returned(cache):
    cache.mkdir()
    (cache / FILE.cached_name).write_bytes(CONTENT)
    assert FILE.cached_name == f"net-{FILE.sha256[:8]}.pkl"
    assert fetch_weights(FILE) == cache / FILE.cached_name == weights_cache() / FILE.cached_name


def test_a_cached_file_with_another_hash_is_removed(cache):
    cache.mkdir()
    (cache / FILE.cached_name).write_bytes(b"tampered")
    with pytest.raises(ConfigError, match="sha256 mismatch") as error:
        fetch_weights(FILE)
    assert FILE.url in str(error.value) and not (cache / FILE.cached_name).exists()


def test_offline_miss_names_the_url_and_the_destination(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights, "download", lambda *a, **k: pytest.fail("downloaded offline"))
    with pytest.raises(ConfigError) as error:
        fetch_weights(FILE)
    message = str(error.value)
    assert "\n" not in message and FILE.url in message
    assert str(cache / FILE.cached_name) in message and FILE.sha256 in message
    assert not cache.exists()


def test_first_use_downloads_with_the_pinned_hash(cache, monkeypatch):
    calls = []

    def fake_download(url, dest, sha256, progress):
        calls.append((url, dest, sha256))
        dest.parent.mkdir(parents=True)
        dest.write_bytes(CONTENT)
        return dest

    monkeypatch.setattr(weights, "download", fake_download)
    assert fetch_weights(FILE).read_bytes() == CONTENT
    assert calls == [(FILE.url, cache / FILE.cached_name, FILE.sha256)]


def test_unreachable_host_is_one_line_naming_where_to_put_the_file(cache, monkeypatch):
    def unreachable(url, *args, **kwargs):
        raise HostUnreachable(f"cannot reach {url} (no route)")

    monkeypatch.setattr(weights, "download", unreachable)
    with pytest.raises(ConfigError, match="could not fetch a test network") as error:
        fetch_weights(FILE)
    assert str(cache / FILE.cached_name) in str(error.value)


def test_a_file_without_a_pinned_hash_is_never_downloaded(cache, monkeypatch):
    unpinned = WeightFile(name="net.npz", url="https://example.org/net.npz", sha256="",
                          what="an unpinned network")
    monkeypatch.setattr(weights, "download", lambda *a, **k: pytest.fail("downloaded unpinned"))
    with pytest.raises(ConfigError, match="no pinned sha256") as error:
        fetch_weights(unpinned)
    assert str(cache / "net.npz") in str(error.value)
    cache.mkdir()
    (cache / "net.npz").write_bytes(b"placed by the user")
    assert fetch_weights(unpinned) == cache / "net.npz"
