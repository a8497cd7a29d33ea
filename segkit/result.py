"""One result type for every backend (in the spirit of supervision's ``Detections``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KINDS = ("semantic", "instance", "panoptic", "prompted")


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight xyxy boxes (right/bottom exclusive) of boolean masks; zeros for empty masks."""
    n = len(masks)
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    for i in range(n):
        ys = np.flatnonzero(rows[i])
        xs = np.flatnonzero(cols[i])
        if len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


@dataclass
class Result:
    """Segments of one image, at the image's own size.

    ``masks[i]``, ``labels[i]``, ``scores[i]``, ``boxes[i]`` describe segment ``i``.
    ``class_ids[i]`` indexes ``class_names`` (so renderers can colour by class) and
    ``segment_ids[i]`` is the segment's value in ``label_map`` for instance/panoptic results
    (for semantic results ``label_map`` holds class indices instead).
    """

    kind: str
    masks: np.ndarray
    labels: list[str]
    scores: np.ndarray
    boxes: np.ndarray
    label_map: np.ndarray | None = None
    heatmaps: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    class_ids: np.ndarray | None = None
    segment_ids: np.ndarray | None = None
    is_thing: np.ndarray | None = None
    palette: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        self.masks = np.asarray(self.masks, dtype=bool)
        n = len(self.masks)
        self.labels = list(self.labels)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        if self.class_ids is None:
            self.class_ids = np.full(n, -1, dtype=np.int64)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(n)
        if self.segment_ids is None:
            self.segment_ids = np.arange(1, n + 1, dtype=np.int32)
        self.segment_ids = np.asarray(self.segment_ids, dtype=np.int32).reshape(n)
        if self.label_map is not None:
            self.label_map = np.asarray(self.label_map, dtype=np.int32)
        if self.heatmaps is not None:
            self.heatmaps = np.asarray(self.heatmaps, dtype=np.float32)
        if len(self.labels) != n:
            raise ValueError(f"{n} masks but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image the result belongs to."""
        for arr in (self.label_map, self.heatmaps, self.masks):
            if arr is not None and arr.ndim >= 2 and arr.shape[-1] > 0:
                return tuple(arr.shape[-2:])
        return tuple(self.meta.get("image_size", (0, 0)))

    def to_coco(self) -> list[dict]:
        """Segments as COCO result records with compressed-RLE masks (pycocotools format)."""
        from pycocotools import mask as mask_utils

        records = []
        for i in range(len(self)):
            mask = np.asfortranarray(self.masks[i].astype(np.uint8))
            rle = mask_utils.encode(mask)
            rle["counts"] = rle["counts"].decode("utf-8")
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            record = {
                "id": int(self.segment_ids[i]),
                "label": self.labels[i],
                "category_id": int(self.class_ids[i]),
                "score": float(self.scores[i]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": int(self.masks[i].sum()),
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]},
            }
            if self.is_thing is not None:
                record["isthing"] = bool(self.is_thing[i])
            records.append(record)
        return records
