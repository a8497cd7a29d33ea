"""The demo's models: loaded on first use, kept, one at a time per backend.

The cache is the only state shared between requests. Each backend has its lock, held while a
request loads and runs that backend's model, so a model is never swapped out under a running
request and a CPU laptop never holds two OneFormers at once.
"""

from __future__ import annotations

import gc
import threading
import time

from ..registry import get_spec


def model_paths(pairs, flag: str) -> dict[str, str]:
    """``NAME=PATH`` pairs as {model name: path}; a backend name means its default model."""
    paths = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {pair!r}: use NAME=PATH, e.g. {flag} oneformer-ade20k-swin-l=/models/ade")
        try:
            paths[get_spec(name.strip()).name] = path.strip()
        except KeyError as exc:
            raise ValueError(f"{flag} {pair!r}: {exc.args[0]}") from None
    return paths


class ModelCache:
    """Segmenters by backend, loaded through ``segkit.load`` with the served local weights."""

    def __init__(self, *, weights=None, configs=None, device="auto", dtype=None):
        self.weights = dict(weights or {})
        self.configs = dict(configs or {})
        self.device = device
        self.dtype = dtype
        self._loaded: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, backend: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(backend, threading.Lock())

    def loaded(self, name: str):
        """The segmenter for model ``name`` if it is the one loaded now, else None."""
        segmenter = self._loaded.get(get_spec(name).backend)
        return segmenter if segmenter is not None and segmenter.name == name else None

    def get(self, name: str):
        """The segmenter for model ``name``, loading it (and dropping its backend's previous model)
        when needed. Call it holding ``lock(backend)``. Returns (segmenter, seconds spent loading)."""
        segmenter = self.loaded(name)
        if segmenter is not None:
            return segmenter, 0.0
        import segkit

        backend = get_spec(name).backend
        if self._loaded.pop(backend, None) is not None:
            _free_memory()
        start = time.perf_counter()
        segmenter = segkit.load(name, weights=self.weights.get(name), config=self.configs.get(name),
                                device=self.device, dtype=self.dtype)
        self._loaded[backend] = segmenter
        return segmenter, time.perf_counter() - start

    def preferred(self, backend: str) -> str | None:
        """The backend's model served from local weights, if any (the page starts on it)."""
        return next((name for name in self.weights if get_spec(name).backend == backend), None)


def _free_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
