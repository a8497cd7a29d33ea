"""Reads ``models.yaml``: the one place where every model is declared, as data."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources

BACKENDS = {
    "clipseg": "segkit.backends.clipseg",
    "cutler": "segkit.backends.cutler",
    "maskcut": "segkit.backends.maskcut",
    "oneformer": "segkit.backends.oneformer",
}


@dataclass(frozen=True)
class ModelSpec:
    """One declared model: where its weights live and how its backend should run it."""

    name: str
    backend: str
    tasks: tuple[str, ...]
    weights: dict
    options: dict = field(default_factory=dict)
    labels: str | None = None
    default: bool = False
    size_mb: float | None = None
    license: str = ""
    paper: str = ""
    description: str = ""

    @property
    def source(self) -> str:
        """Human-readable origin of the weights (hub repo or URL)."""
        if "hub" in self.weights:
            return f"https://huggingface.co/{self.weights['hub']}"
        return self.weights.get("url", "?")


@functools.cache
def _specs() -> dict[str, ModelSpec]:
    import yaml

    text = resources.files("segkit").joinpath("models.yaml").read_text(encoding="utf-8")
    specs = {}
    for name, entry in yaml.safe_load(text)["models"].items():
        entry = dict(entry)
        entry["tasks"] = tuple(entry.get("tasks", ()))
        specs[name] = ModelSpec(name=name, **entry)
        if specs[name].backend not in BACKENDS:
            raise ValueError(f"models.yaml: {name} names unknown backend {specs[name].backend!r}")
    return specs


def list_models(backend: str | None = None) -> list[str]:
    """Names of all declared models (optionally of one backend), in file order."""
    return [n for n, s in _specs().items() if backend is None or s.backend == backend]


def get_spec(name: str) -> ModelSpec:
    """The spec for a model name, or for a backend name meaning its default model."""
    specs = _specs()
    if name in specs:
        return specs[name]
    if name in BACKENDS:
        defaults = [s for s in specs.values() if s.backend == name and s.default]
        if defaults:
            return defaults[0]
    known = ", ".join(list(specs) + list(BACKENDS))
    raise KeyError(f"unknown model {name!r}; known: {known}")
