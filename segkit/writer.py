"""What is written for each Result, and for a whole batch, in an output folder.

Per image with stem ``S``: ``S_overlay.png`` (or ``.jpg``) always, and as chosen by ``save``: ``S_labels.png``,
``S.json``, ``S_<prompt>_heat.png``, ``S_masks/NNN_<label>.png``, ``S_grid.png``, ``S_panoptic.png``.
Per batch: ``panoptic.json`` (with ``panoptic``) and a COCO dataset file (``coco_path``). All names
of one image are claimed together (see files.OutputFolder) and written as one atomic group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import OutputFolder, safe_name, write_json

SAVE_CHOICES = ("labels", "json", "heatmaps", "masks", "grid", "panoptic")
OVERLAY_FORMATS = ("png", "jpg")
JPEG_QUALITY = 95
DEFAULT_SAVE = ("labels", "json", "heatmaps")
STEM_BYTES = 120  # room left in a 255-byte name for a prompt and a suffix
LABEL_BYTES = 100


class OutputWriter:
    """Writes the chosen files for each result into one folder; ``finish()`` writes the batch files."""

    def __init__(self, folder, *, save=DEFAULT_SAVE, alpha: float = 0.5, inputs=(), model_info=None,
                 coco_path=None, overlay_format: str = "png"):
        self.folder = Path(folder)
        self.save = set(save)
        self.alpha = alpha
        if overlay_format not in OVERLAY_FORMATS:
            raise ValueError(f"overlay_format must be one of {OVERLAY_FORMATS}, not {overlay_format!r}")
        self.overlay_format = overlay_format  # 'jpg' (quality 95): a small, fast overlay; everything else stays lossless
        self.model_info = dict(model_info or {})
        self.out = OutputFolder(self.folder, protected=inputs)
        self.coco_path = Path(coco_path) if coco_path else None
        self._images: list[dict] = []
        self._image_ids: set[int] = set()
        self._annotations: list[dict] = []
        self._panoptic: list[dict] = []
        self._categories: dict[int, dict] = {}
        self.panoptic_json = None  # the batch's panoptic.json (or panoptic-K.json, if taken) with --save panoptic
        self.images_written = 0
        if "panoptic" in self.save:
            _, (self.panoptic_json,) = self.out.claim(lambda k: ["panoptic.json" if k == 0 else f"panoptic-{k}.json"])

    def names(self, source, result) -> tuple[str, dict]:
        """The stem and every file name (by role) this result will be written under, claimed together."""
        base = safe_name(Path(str(source)).stem, "image", STEM_BYTES)
        heat_parts = []
        if "heatmaps" in self.save and result.heatmaps is not None:
            used = set()
            for i, label in enumerate(result.labels):
                part = safe_name(label, "prompt", LABEL_BYTES)
                while part.casefold() in used:
                    part = f"{part}-{i}"
                used.add(part.casefold())
                heat_parts.append(part)

        def make(k):
            stem = base if k == 0 else f"{base}-{k}"
            roles = {"overlay": f"{stem}_overlay.{self.overlay_format}"}
            if "labels" in self.save and _has_label_image(result):
                roles["labels"] = f"{stem}_labels.png"
            roles.update({("heat", i): f"{stem}_{part}_heat.png" for i, part in enumerate(heat_parts)})
            if "masks" in self.save:
                roles["masks"] = f"{stem}_masks"
            if "grid" in self.save:
                roles["grid"] = f"{stem}_grid.png"
            if "panoptic" in self.save:
                roles["panoptic"] = f"{stem}_panoptic.png"
            if "json" in self.save:
                roles["json"] = f"{stem}.json"
            return [stem] + [roles[r] for r in roles], roles

        k, _ = self.out.claim(lambda k: make(k)[0][1:])
        names, roles = make(k)
        return names[0], roles

    def video_stem(self, source) -> str:
        """Claim the names of a video's outputs (S_overlay.mp4, S.jsonl, S_frames/) and return S."""
        base = safe_name(Path(str(source)).stem, "video", STEM_BYTES)

        def make(k):
            stem = base if k == 0 else f"{base}-{k}"
            return [f"{stem}_overlay.mp4", f"{stem}.jsonl", f"{stem}_frames"]

        _, names = self.out.claim(make)
        return names[1][: -len(".jsonl")]

    def write(self, source, image: np.ndarray, result, abort=None) -> list[Path]:
        """Render and write every chosen output of one image, all or none; returns the paths.

        PNGs are lossless and written fast (see segkit.png)."""
        from . import render
        from .png import write_png

        stem, roles = self.names(source, result)
        files = {}
        over = render.overlay(image, result, alpha=self.alpha)
        files[roles["overlay"]] = lambda p: _save_overlay(over, p, self.overlay_format)
        if "labels" in roles:
            files[roles["labels"]] = lambda p: write_png(render.label_image(result), p)
        heat_files = {}
        for role, name in roles.items():
            if isinstance(role, tuple) and role[0] == "heat":
                heat_files[role[1]] = name
                files[name] = lambda p, i=role[1]: write_png(render.heatmap_gray(result.heatmaps[i]), p)
        mask_files = {}
        if "masks" in roles:
            for i in range(len(result)):
                name = f"{roles['masks']}/{i:03d}_{safe_name(result.labels[i], 'segment', LABEL_BYTES)}.png"
                mask_files[i] = name
                files[name] = lambda p, i=i: write_png(result.masks[i].astype(np.uint8) * 255, p)
        if "grid" in roles:
            files[roles["grid"]] = lambda p: _save_figure(render.grid_figure(image, result), p)
        segments_info = None
        if "panoptic" in roles:
            panoptic_rgb, segments_info = result.to_panoptic()
            files[roles["panoptic"]] = lambda p: write_png(panoptic_rgb, p)
        segments = None
        if "json" in roles or self.coco_path is not None:
            segments = result.to_coco()
        if "json" in roles:
            record = self.record(source, image, result, segments, heat_files, mask_files)
            files[roles["json"]] = lambda p: write_json(p, record)
        written = self.out.write_all(files, abort=abort)
        self._remember(source, image, result, roles, segments, segments_info)
        self.images_written += 1
        return written

    def record(self, source, image, result, segments, heat_files=None, mask_files=None) -> dict:
        """S.json: the source, the model and where its weights came from, every option used, timings
        and the segments (COCO RLE)."""
        segments = [dict(s) for s in segments]
        for i, seg in enumerate(segments):
            if heat_files and i in heat_files:
                seg["heatmap_file"] = heat_files[i]
            if mask_files and i in mask_files:
                seg["mask_file"] = mask_files[i]
        return {
            "image": str(source),
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "model": result.meta.get("model"),
            "weights": self.model_info.get("weights"),
            "kind": result.kind,
            "options": jsonable(result.meta.get("options", {})),
            "timings": jsonable(result.meta.get("timings", {})),
            "segments": segments,
        }

    def _remember(self, source, image, result, roles, segments, segments_info):
        """Keep what the batch files need (small: RLE and segment info, never masks)."""
        if self.coco_path is None and self.panoptic_json is None:
            return
        image_id = self._image_id(source)
        self._image_ids.add(image_id)
        self._images.append({"id": image_id, "file_name": str(source), "width": int(image.shape[1]),
                             "height": int(image.shape[0])})
        for i in range(len(result)):
            cid = int(result.category_ids[i])
            thing = bool(result.is_thing[i]) if result.is_thing is not None else True
            self._categories.setdefault(cid, {"id": cid, "name": result.labels[i], "isthing": int(thing)})
        if segments is not None and self.coco_path is not None:
            for seg in segments:
                self._annotations.append({
                    "id": len(self._annotations) + 1, "image_id": image_id, "category_id": seg["category_id"],
                    "segmentation": seg["segmentation"], "bbox": seg["bbox"], "area": seg["area"],
                    "score": seg["score"], "iscrowd": 0})
        if segments_info is not None:
            self._panoptic.append({"image_id": image_id, "file_name": roles["panoptic"],
                                   "segments_info": segments_info})

    def _image_id(self, source) -> int:
        """The number a COCO image file's name carries (``000000397133.jpg`` is image 397133, as in COCO's
        own annotations), else the next number not yet used."""
        used = self._image_ids
        stem = Path(str(source)).stem
        if stem.isdigit() and int(stem) not in used:
            return int(stem)
        candidate = len(used) + 1
        while candidate in used:
            candidate += 1
        return candidate

    def finish(self) -> list[Path]:
        """Write the batch files (panoptic.json, the COCO file) for the images written so far."""
        written = []
        categories = [self._categories[k] for k in sorted(self._categories)]
        if self.panoptic_json is not None:
            data = {"images": self._images, "annotations": self._panoptic, "categories": categories}
            written += self.out.write_all({self.panoptic_json: lambda p: write_json(p, data)})
        if self.coco_path is not None:
            data = {"images": self._images, "annotations": self._annotations, "categories": categories}
            coco_folder = OutputFolder(self.coco_path.parent)
            try:
                written += coco_folder.write_all({self.coco_path.name: lambda p: write_json(p, data)})
            finally:
                coco_folder.close()
        return written

    def close(self) -> None:
        self.out.close()


def _save_overlay(overlay: np.ndarray, path, overlay_format: str) -> None:
    if overlay_format == "jpg":
        from PIL import Image

        Image.fromarray(overlay).save(path, format="JPEG", quality=JPEG_QUALITY)
    else:
        from .png import write_png

        write_png(overlay, path)


def _has_label_image(result) -> bool:
    return result.kind in ("instance", "panoptic") or result.label_map is not None


def _save_figure(fig, path) -> None:
    fig.savefig(path, dpi=100, format="png")


def jsonable(value):
    """Options and timings as JSON values (numpy scalars unwrapped, anything else as text)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
