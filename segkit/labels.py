"""Class names, thing/stuff flags and colours of the datasets segkit's models were trained on.

The label sets ship as JSON in ``segkit/labels/`` (see each file's ``source``), so nothing is
fetched at run time. ``index`` in those files is the model's class index.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np


def _normalise(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


@dataclass(frozen=True)
class LabelSet:
    """One dataset's classes in model order.

    ``category_ids[c]`` is class ``c``'s id in the dataset's own annotations and evaluation tools
    (COCO category ids, ADE20K's 1..150, Cityscapes label ids).

    ``thing_index[c]`` is class ``c``'s position among the dataset's instance classes where the
    dataset defines a separate list for them (ADE20K), else ``-1``; ``None`` when it has none.
    """

    name: str
    names: tuple[str, ...]
    isthing: np.ndarray
    colors: np.ndarray | None
    category_ids: np.ndarray | None = None
    thing_index: np.ndarray | None = None
    synonyms: tuple[frozenset[str], ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_names(cls, name: str, names) -> LabelSet:
        """A label set known only by its class names: no colours, every class a thing, ids 1..N."""
        names = tuple(names)
        return cls(name=name, names=names, isthing=np.ones(len(names), dtype=bool), colors=None,
                   category_ids=np.arange(1, len(names) + 1),
                   synonyms=tuple(frozenset({_normalise(n)}) for n in names))

    def matches(self, index: int, name: str) -> bool:
        """Whether ``name`` denotes class ``index`` (case, spacing and listed synonyms ignored)."""
        return _normalise(name) in self.synonyms[index]

    def resolve(self, names) -> list[int]:
        """Class indices for user-given names; raises KeyError naming the first unknown one."""
        indices = []
        for name in names:
            hits = [i for i in range(len(self)) if self.matches(i, name)]
            if not hits:
                raise KeyError(name)
            indices.extend(hits)
        return sorted(set(indices))


def _synonyms(category: dict) -> frozenset[str]:
    """The full name, each comma-separated alternative ("road, route") and the instance name."""
    words = {_normalise(category["name"])}
    words.update(_normalise(part) for part in category["name"].split(",") if part.strip())
    if category.get("instance_name"):
        words.add(_normalise(category["instance_name"]))
    return frozenset(words)


def available() -> list[str]:
    """Names of the shipped label sets."""
    folder = resources.files("segkit").joinpath("labels")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


@functools.cache
def load_labels(name: str) -> LabelSet:
    """The shipped label set ``segkit/labels/<name>.json``."""
    path = resources.files("segkit").joinpath("labels", f"{name}.json")
    if not path.is_file():
        raise KeyError(f"unknown label set {name!r}; shipped: {', '.join(available())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    categories = sorted(data["categories"], key=lambda c: c["index"])
    if [c["index"] for c in categories] != list(range(len(categories))):
        raise ValueError(f"{path}: class indices are not 0..{len(categories) - 1}")
    thing_index = None
    if any("thing_index" in c for c in categories):
        thing_index = np.array([c.get("thing_index", -1) for c in categories], dtype=np.int64)
    labels = LabelSet(
        name=name,
        names=tuple(c["name"] for c in categories),
        isthing=np.array([bool(c["isthing"]) for c in categories]),
        colors=np.array([c["color"] for c in categories], dtype=np.uint8).reshape(-1, 3),
        category_ids=np.array([c.get("category_id", c["id"]) for c in categories], dtype=np.int64),
        thing_index=thing_index,
        synonyms=tuple(_synonyms(c) for c in categories),
    )
    for array in (labels.isthing, labels.colors, labels.category_ids, labels.thing_index):
        if array is not None:
            array.flags.writeable = False
    return labels
