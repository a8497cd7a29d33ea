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
    select: dict = field(default_factory=dict)
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
def _declared() -> dict:
    import yaml

    return yaml.safe_load(resources.files("segkit").joinpath("models.yaml").read_text(encoding="utf-8"))


def selectors(backend: str) -> dict[str, dict]:
    """The flags that pick one of a backend's models (models.yaml ``select``), e.g. OneFormer's
    dataset and backbone: {key: {choices, default (the default model's), help}}."""
    specs = [s for s in _specs().values() if s.backend == backend]
    helps = _declared().get("selectors", {})
    found = {}
    for spec in specs:
        for key, value in spec.select.items():
            entry = found.setdefault(key, {"choices": [], "default": None, "help": helps.get(key, "")})
            if value not in entry["choices"]:
                entry["choices"].append(value)
            if spec.default:
                entry["default"] = value
    return found


@functools.cache
def _specs() -> dict[str, ModelSpec]:
    specs = {}
    for name, entry in _declared()["models"].items():
        entry = dict(entry)
        entry["tasks"] = tuple(entry.get("tasks", ()))
        specs[name] = ModelSpec(name=name, **entry)
        if specs[name].backend not in BACKENDS:
            raise ValueError(f"models.yaml: {name} names unknown backend {specs[name].backend!r}")
    return specs


def selected_model(backend: str, selection: dict) -> str:
    """The backend's model whose models.yaml ``select`` equals ``selection`` (its default model when
    ``selection`` is empty); KeyError naming the selection when none does."""
    if not selection:
        return get_spec(backend).name
    for spec in _specs().values():
        if spec.backend == backend and spec.select == selection:
            return spec.name
    wanted = ", ".join(f"{k} {v}" for k, v in selection.items())
    raise KeyError(f"no {backend} model has {wanted}; see 'segkit models'")


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
