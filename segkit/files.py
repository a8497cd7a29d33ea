"""The one I/O layer: which files to read, and what is written for each result.

Output names come from the input's stem; two inputs with the same stem never share outputs,
and no output ever replaces an input file.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SegkitError
from .imageio import IMAGE_SUFFIXES
from .result import Result

SAVE_CHOICES = ("overlay", "labels", "json", "heatmaps", "masks", "grid")
DEFAULT_SAVE = ("overlay", "labels", "json", "heatmaps")


@dataclass
class Inputs:
    """Image paths to process, and the arguments that named no readable file."""

    paths: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def collect_inputs(args, recursive: bool = False, exclude: Path | None = None) -> Inputs:
    """Expand files, folders (images inside; all levels with ``recursive``) and glob patterns.

    A file named explicitly is kept whatever its suffix (it may still be an image); folders and
    globs contribute only files with image suffixes, and nothing inside ``exclude`` (the output
    folder, so a rerun does not segment its own outputs). Order is argument order, then sorted.
    """
    found = Inputs()
    seen = set()
    skip = os.path.abspath(exclude) + os.sep if exclude is not None else None

    def add(path: Path, named: bool = False):
        key = os.path.abspath(path)
        if key not in seen and (named or skip is None or not key.startswith(skip)):
            seen.add(key)
            found.paths.append(path)

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for child in sorted(path.glob(pattern)):
                if child.is_file() and _is_image(child):
                    add(child)
        elif path.is_file():
            add(path, named=True)
        elif glob.has_magic(str(arg)):
            matches = sorted(Path(m) for m in glob.glob(str(arg), recursive=recursive))
            files = [m for m in matches if m.is_file() and _is_image(m)]
            if not files:
                found.missing.append(f"{arg}: no image files match this pattern")
            for m in files:
                add(m)
        else:
            found.missing.append(f"{arg}: no such file or folder")
    return found


def slug(text: str, fallback: str = "prompt") -> str:
    """A safe file-name fragment: letters, digits, '-' and '_' only, never a path."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")[:60]
    return cleaned or fallback


def check_writable(folder: Path) -> None:
    """Create the output folder and prove it is writable, before any model loads."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".segkit-write-test-"):
            pass
    except OSError as exc:
        raise SegkitError(
            f"{folder}: output folder is not writable ({exc.strerror or exc}); choose another with -o") from None


class OutputWriter:
    """Writes the chosen files for each result into one folder, under unique stems."""

    def __init__(self, folder, save=DEFAULT_SAVE, alpha: float = 0.5, inputs=()):
        self.folder = Path(folder)
        self.save = set(save) | {"overlay"}
        self.alpha = alpha
        self._stems: set[str] = set()
        self._protected = {os.path.abspath(p).casefold() for p in inputs}

    def _unique_stem(self, stem: str) -> str:
        """``stem``, or ``stem-N`` if taken; compared case-insensitively (macOS and Windows file systems)."""
        candidate, k = stem, 1
        while candidate.casefold() in self._stems or self._would_hit_input(candidate):
            candidate, k = f"{stem}-{k}", k + 1
        self._stems.add(candidate.casefold())
        return candidate

    def _would_hit_input(self, stem: str) -> bool:
        prefix = os.path.abspath(self.folder / stem).casefold()
        return any(p == prefix + ".json" or p.startswith(prefix + "_") for p in self._protected)

    def write(self, image_path: Path, image: np.ndarray, result: Result, options: dict) -> list[Path]:
        """Write every selected output for one image; returns the paths written."""
        from PIL import Image

        from . import render

        self.folder.mkdir(parents=True, exist_ok=True)
        stem = self._unique_stem(slug(Path(image_path).stem, fallback="image"))
        written = []

        def put(name: str, save_fn):
            path = self.folder / name
            if os.path.abspath(path).casefold() in self._protected:  # never replace an input
                raise SegkitError(f"{path}: refusing to overwrite an input file; choose another -o")
            save_fn(path)
            written.append(path)

        over = render.overlay(image, result, alpha=self.alpha)
        put(f"{stem}_overlay.png", lambda p: Image.fromarray(over).save(p))

        if "labels" in self.save:
            labels = render.label_image(result)
            if labels is not None:
                put(f"{stem}_labels.png", lambda p: labels.save(p))

        heat_files = {}
        if "heatmaps" in self.save and result.heatmaps is not None:
            used = set()
            for i, label in enumerate(result.labels):
                name = slug(label)
                while name.casefold() in used:
                    name = f"{name}-{i}"
                used.add(name.casefold())
                heat = Image.fromarray(render.heatmap_gray(result.heatmaps[i]))
                put(f"{stem}_{name}_heat.png", heat.save)
                heat_files[i] = written[-1].name

        mask_files = {}
        if "masks" in self.save:
            mask_dir = self.folder / f"{stem}_masks"
            mask_dir.mkdir(exist_ok=True)
            for i in range(len(result)):
                name = f"{i:03d}_{slug(result.labels[i], 'segment')}.png"
                put(f"{mask_dir.name}/{name}",
                    lambda p, m=result.masks[i]: Image.fromarray(m.astype(np.uint8) * 255).save(p))
                mask_files[i] = f"{mask_dir.name}/{name}"

        if "grid" in self.save:
            fig = render.grid_figure(image, result)
            put(f"{stem}_grid.png", lambda p: fig.savefig(p, dpi=100))

        if "json" in self.save:
            put(f"{stem}.json", lambda p: _write_json(p, self._record(image_path, image, result, options,
                                                                      heat_files, mask_files)))
        return written

    def _record(self, image_path, image, result: Result, options, heat_files, mask_files) -> dict:
        segments = result.to_coco()
        for i, seg in enumerate(segments):
            if i in heat_files:
                seg["heatmap_file"] = heat_files[i]
            if i in mask_files:
                seg["mask_file"] = mask_files[i]
        return {
            "image": str(image_path),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "model": result.meta.get("model"),
            "kind": result.kind,
            "options": _jsonable(options),
            "timings": _jsonable(result.meta.get("timings", {})),
            "segments": segments,
        }


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, path)
