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
    ``class_ids[i]`` indexes ``class_names`` (so renderers can colour by class);
    ``category_ids[i]`` is the dataset's own category id, the number evaluation tools expect
    (COCO panoptic 1..200 with gaps, ADE20K 1..150, Cityscapes label ids; 1 for class-agnostic
    objects; 1..P for CLIPSeg's prompts in order); ``segment_ids[i]`` is the segment's value in
    ``label_map`` for panoptic results.

    ``label_map`` per kind: semantic, the class index of every pixel (-1 where no kept class);
    panoptic, the segment id of every pixel (0 = none); prompted with ``combine``, 1 + the prompt
    index (0 = background); instance (and prompted without ``combine``), None: masks may overlap.

    Select segments like supervision's ``Detections``: ``result[0]``, ``result[1:3]``,
    ``result[result.scores > 0.5]`` give a Result with only those segments.

    Every mask lies inside its box (``boxes`` are xyxy pixels, right/bottom exclusive), which
    lets large-photo work read only the box.
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
    category_ids: np.ndarray | None = None
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
        if self.category_ids is None:
            self.category_ids = np.where(self.class_ids >= 0, self.class_ids + 1, 1)
        self.category_ids = np.asarray(self.category_ids, dtype=np.int64).reshape(n)
        if self.segment_ids is None:
            self.segment_ids = np.arange(1, n + 1, dtype=np.int32)
        self.segment_ids = np.asarray(self.segment_ids, dtype=np.int32).reshape(n)
        if self.is_thing is not None:
            self.is_thing = np.asarray(self.is_thing, dtype=bool).reshape(n)
        if self.label_map is not None:
            self.label_map = np.asarray(self.label_map, dtype=np.int32)
        if self.heatmaps is not None:
            self.heatmaps = np.asarray(self.heatmaps, dtype=np.float32)
        if len(self.labels) != n:
            raise ValueError(f"{n} masks but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index) -> Result:
        """The segments picked by an int, a slice, an index array or a boolean mask, as a Result.

        Pixels of dropped segments leave ``label_map`` (-1 for semantic classes, 0 otherwise).
        """
        picked = np.arange(len(self))[np.array([index]) if isinstance(index, (int, np.integer)) else index]
        picked = np.atleast_1d(picked)
        label_map = self.label_map
        if label_map is not None:
            keep_values = (self.class_ids if self.kind == "semantic" else self.segment_ids)[picked]
            label_map = np.where(np.isin(label_map, keep_values), label_map, -1 if self.kind == "semantic" else 0)
        return Result(
            kind=self.kind, masks=self.masks[picked], labels=[self.labels[i] for i in picked],
            scores=self.scores[picked], boxes=self.boxes[picked], label_map=label_map,
            heatmaps=None if self.heatmaps is None else self.heatmaps[picked], class_names=list(self.class_names),
            class_ids=self.class_ids[picked], category_ids=self.category_ids[picked],
            segment_ids=self.segment_ids[picked], is_thing=None if self.is_thing is None else self.is_thing[picked],
            palette=self.palette, meta=dict(self.meta))

    def __repr__(self) -> str:
        h, w = self.image_size
        shown = ", ".join(f"{label} {score:.2f}" for label, score in zip(self.labels[:5], self.scores[:5]))
        more = f", … {len(self) - 5} more" if len(self) > 5 else ""
        extras = "".join(f", {name}={getattr(self, name).shape}" for name in ("label_map", "heatmaps")
                         if getattr(self, name) is not None)
        return f"Result({self.kind!r}, {len(self)} segments at {h}x{w}: [{shown}{more}]{extras})"

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image the result belongs to."""
        for arr in (self.label_map, self.heatmaps, self.masks):
            if arr is not None and arr.ndim >= 2 and arr.shape[-1] > 0:
                return tuple(arr.shape[-2:])
        return tuple(self.meta.get("image_size", (0, 0)))

    def segment_map(self) -> np.ndarray:
        """int32 (H, W) of segment ids, 0 where no segment: the panoptic label map, else the masks
        painted from lowest to highest score (the best segment wins where masks overlap)."""
        if self.kind == "panoptic" and self.label_map is not None:
            return self.label_map
        ids = np.zeros(self.image_size, dtype=np.int32)
        for i in np.argsort(self.scores, kind="stable"):
            ids[self.masks[i]] = self.segment_ids[i]
        return ids

    def to_coco(self, image_id=None) -> list[dict]:
        """Segments as COCO result records with compressed-RLE masks (pycocotools format).

        ``category_id`` is the dataset's category id, so the records can be scored by pycocotools
        against real annotations; ``image_id`` is added to every record when given. Each mask is
        read only inside its box (``boxes`` hold their masks), so this costs little on large photos.
        """
        from . import rle

        height, width = self.image_size
        records = []
        for i in range(len(self)):
            rows, cols = rle.box_slices(self.boxes[i], height, width)
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            record = {} if image_id is None else {"image_id": image_id}
            record.update({
                "id": int(self.segment_ids[i]),
                "label": self.labels[i],
                "category_id": int(self.category_ids[i]),
                "score": float(self.scores[i]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": int(np.count_nonzero(self.masks[i][rows, cols])),
                "segmentation": {"size": [int(height), int(width)],
                                 "counts": rle.compress(rle.run_lengths(self.masks[i], rows, cols))},
            })
            if self.is_thing is not None:
                record["isthing"] = bool(self.is_thing[i])
            records.append(record)
        return records

    def to_panoptic(self) -> tuple[np.ndarray, list[dict]]:
        """COCO panoptic form: an RGB uint8 image with ``id = R + 256 G + 256² B`` (0 = none) and
        its ``segments_info`` (id, category_id, iscrowd, area, bbox, isthing), as panopticapi reads."""
        ids = self.segment_map()
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
        present = np.bincount(ids.ravel(), minlength=int(self.segment_ids.max(initial=0)) + 1)
        info = []
        for i in range(len(self)):
            sid = int(self.segment_ids[i])
            area = int(present[sid]) if sid < len(present) else 0
            if area == 0:
                continue  # painted over by better segments
            ys, xs = np.nonzero(ids == sid)
            x, y = int(xs.min()), int(ys.min())
            info.append({"id": sid, "category_id": int(self.category_ids[i]), "iscrowd": 0, "area": area,
                         "bbox": [x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y],
                         "isthing": bool(self.is_thing[i]) if self.is_thing is not None else True})
        return rgb, info
