"""Weights resolution: local paths, URL cache with checksum, fast clear failures."""

import hashlib
import socket
from dataclasses import replace

import pytest

from segkit import registry, weights
from segkit.errors import WeightsUnavailableError


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "cache"


def _url_spec(source, sha=None):
    spec = registry.get_spec("cutler-cascade")
    return replace(spec, weights={"url": source.as_uri(), "file": "w.pth", "sha256": sha})


def test_registry():
    names = registry.list_models()
    assert registry.get_spec("clipseg").name == "clipseg-rd64-refined"
    assert registry.get_spec("cutler").name == "cutler-cascade"
    assert registry.get_spec("oneformer").name == "oneformer-coco-dinat-l"
    assert len([n for n in names if n.startswith("oneformer-")]) == 6
    assert set(registry.list_models("clipseg")) == {"clipseg-rd64-refined", "clipseg-rd64", "clipseg-rd16"}
    with pytest.raises(KeyError, match="unknown model"):
        registry.get_spec("nope")


def test_url_download_checksum_and_atomic(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    source = tmp_path / "src.pth"
    source.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(WeightsUnavailableError, match="checksum mismatch"):
        weights.url_file(_url_spec(source, sha="0" * 64))
    assert not any(isolated_cache.iterdir())  # no partial file left behind
    path = weights.url_file(_url_spec(source, sha=good))
    assert path.read_bytes() == source.read_bytes() and path.parent == isolated_cache
    assert weights.is_cached(_url_spec(source))


def test_offline_fails_fast_without_touching_the_network(isolated_cache, monkeypatch):
    lookups = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: lookups.append(args) or [])
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: lookups.append(address))
    for spec in (registry.get_spec("clipseg"), registry.get_spec("cutler")):
        with pytest.raises(WeightsUnavailableError) as err:
            weights.resolve(spec)
        message = str(err.value)
        assert spec.name in message and "segkit models download" in message and "weights=" in message
        assert spec.source in message and "offline" in message and str(weights.cache_location(spec)) in message
        assert err.value.for_cli() == message.replace("weights= a local copy", "--weights PATH")
        assert not weights.is_cached(spec)
    assert lookups == []  # no connection to wait for or retry


def test_local_weights(tmp_path):
    assert weights.resolve(registry.get_spec("clipseg"), tmp_path) == tmp_path
    with pytest.raises(WeightsUnavailableError, match="no such weights"):
        weights.resolve(registry.get_spec("clipseg"), tmp_path / "missing")
