"""One request of the demo: one uploaded image through the runner and the writer, in its own folder.

Every request writes into a fresh folder, so pages open at the same time never see each other's
files; what the page shows are the files the writer wrote, the same as the CLI writes.
"""

from __future__ import annotations

import html
import shutil
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..errors import SegkitError

KEEP_FOLDERS = 32  # request folders kept on disk (the page has copied their files by then)


class RequestFolders:
    """Fresh folders for requests under one temporary root; only the newest ``KEEP_FOLDERS`` stay."""

    def __init__(self, root=None):
        self.root = Path(root or tempfile.mkdtemp(prefix="segkit-demo-"))
        self._recent: deque[Path] = deque()
        self._lock = threading.Lock()

    def new(self) -> Path:
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self._lock:
            self._recent.append(folder)
            old = self._recent.popleft() if len(self._recent) > KEEP_FOLDERS else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Output:
    """What one request produced: file paths by role and a one-line summary."""

    overlay: Path
    files: dict
    summary: str
    legend: str = ""


def segment(segmenter, image_path, options: dict, folder: Path, *, save, alpha: float, opaque_map: bool,
            max_pixels: int | None) -> Output:
    """Run one image through segkit's runner into ``folder``; a failure is a SegkitError whose message
    names the upload (not the server's temporary path)."""
    from ..runner import describe, run
    from ..writer import OutputWriter

    image_path = Path(image_path)
    writer = OutputWriter(folder, save=save, alpha=alpha, inputs=[image_path],
                          model_info={"weights": segmenter.source})
    try:
        (outcome,) = run(segmenter, [image_path], options, writer, max_pixels=max_pixels)  # the run ends whole
    finally:
        writer.close()
    if not outcome.ok:  # in the command line's words: the demo has the same flags (--max-pixels, ...)
        message = describe(outcome.source, outcome.exception, for_cli=True)
        raise SegkitError(message.replace(str(image_path), image_path.name))
    files = {_role(path): path for path in outcome.files}
    result = outcome.result
    legend = ""
    if opaque_map:
        files["map"] = _opaque_map(segmenter, image_path, result, folder / "map", max_pixels)
        legend = legend_html(result)
    seconds = result.meta.get("timings", {}).get("total_s", outcome.seconds)
    summary = f"{len(result)} segment{'s' if len(result) != 1 else ''} by {segmenter.name} in {seconds:.2f} s"
    return Output(files.pop("overlay"), files, summary, legend)


def _role(path: Path) -> str:
    """The writer's role of one of its files, from its name (S_overlay.png, S.json, S_labels.png, ...)."""
    name = path.name
    for suffix, role in (("_overlay.png", "overlay"), ("_labels.png", "labels"), ("_grid.png", "grid"),
                         ("_panoptic.png", "panoptic"), ("_heat.png", "heat")):
        if name.endswith(suffix):
            return role if role != "heat" else f"heat:{name}"
    return "json" if name.endswith(".json") else name


def _opaque_map(segmenter, image_path, result, folder: Path, max_pixels) -> Path:
    """The segments drawn opaque: the overlay the CLI writes with ``--alpha 1``."""
    from ..imageio import read_image
    from ..writer import OutputWriter

    writer = OutputWriter(folder, save=(), alpha=1.0, model_info={"weights": segmenter.source})
    try:
        (path,) = writer.write(image_path, read_image(image_path, max_pixels=max_pixels), result)
    finally:
        writer.close()
    return path


def legend_html(result) -> str:
    """Each label once, with its colour in the drawings, as a small HTML list."""
    from ..render import segment_colors

    colors = segment_colors(result)
    seen = {}
    for i, label in enumerate(result.labels):
        seen.setdefault(label, colors[i])
    items = "".join(
        f'<span class="segkit-legend-item"><span class="segkit-swatch" style="background:rgb({r},{g},{b})">'
        f"</span>{html.escape(label)}</span>" for label, (r, g, b) in seen.items())
    return f'<div class="segkit-legend">{items}</div>' if items else "<div class=\"segkit-legend\">no segments</div>"
