"""Panoptic quality (PQ, SQ, RQ) with panopticapi's rules, over a process pool.

The rules (cocodataset/panopticapi ``pq_compute``): PNG ids are ``R + 256 G + 256^2 B``, 0 = VOID.
A non-crowd ground-truth segment and a prediction of the same category match when
``IoU = |g & p| / (|g| + |p| - |g & p| - |p & VOID|) > 0.5`` (``|g|`` is the JSON ``area``, ``|p|``
is counted in the PNG). Unmatched non-crowd ground truth is a false negative. An unmatched
prediction is ignored when more than half of it lies on VOID plus its category's crowd region,
else it is a false positive. Categories count in the averages when ``TP + FP + FN > 0``.

torchmetrics' ``PanopticQuality`` has no crowd regions and takes unlabeled predicted pixels out of
the union too, so it gives other numbers; hence this module.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EvaluationInputError
from .inputs import ImageIndex, check_size, pixel_runs, read_json, read_png
from .parallel import map_images

VOID = 0
MATCH_IOU = 0.5
TP, FP, FN, IOU_SUM = range(4)  # positions in a category's [tp, fp, fn, iou_sum]


@dataclass(frozen=True)
class ImagePair:
    """One image's ground truth and prediction: PNG paths and their ``segments_info``."""

    image_id: object
    gt_png: Path
    pred_png: Path
    gt_segments: tuple
    pred_segments: tuple
    size: tuple | None  # (height, width) from the ground truth's ``images``, when listed


def load_pairs(gt_json, gt_dir, pred_json, pred_dir, image_ids=None) -> tuple[list[dict], list[ImagePair]]:
    """The ground truth's categories and one ImagePair per ground-truth image (or per ``image_ids``).

    Predictions are matched to the ground truth by ``image_id``, as panopticapi does.
    """
    gt = read_json(gt_json, "a COCO panoptic JSON with images, annotations and categories")
    pred = read_json(pred_json, "a COCO panoptic JSON with annotations")
    for data, path, keys in ((gt, gt_json, ("annotations", "categories")), (pred, pred_json, ("annotations",))):
        missing = [key for key in keys if not isinstance(data, dict) or key not in data]
        if missing:
            raise EvaluationInputError(f"{path}: not a COCO panoptic JSON (no {missing[0]!r} list)")
    try:
        return gt["categories"], _pairs(gt, gt_json, gt_dir, pred, pred_json, pred_dir, image_ids)
    except (KeyError, TypeError) as exc:
        raise EvaluationInputError(f"{gt_json} or {pred_json}: malformed COCO panoptic JSON (missing or bad "
                                   f"field {exc})") from None


def _pairs(gt, gt_json, gt_dir, pred, pred_json, pred_dir, image_ids) -> list[ImagePair]:
    sizes = {image["id"]: (image["height"], image["width"]) for image in gt.get("images", [])}
    gt_by_image = {ann["image_id"]: ann for ann in gt["annotations"]}
    pred_by_image = {}
    to_gt = _ids_by_file_name(gt, pred)
    for ann in pred["annotations"]:
        image_id = to_gt.get(ann.get("image_id"), ann.get("image_id"))
        if image_id not in gt_by_image:
            raise EvaluationInputError(f"{pred_json}: image_id {ann.get('image_id')!r} is not in {gt_json}; "
                                       "predictions must use the ground truth's image ids (or list their "
                                       "images by file name, as segkit's panoptic.json does)")
        pred_by_image[image_id] = ann
    wanted = list(gt_by_image) if image_ids is None else list(image_ids)
    pairs = []
    for image_id in wanted:
        if image_id not in gt_by_image:
            raise EvaluationInputError(f"{gt_json}: no annotation for image_id {image_id!r}")
        gt_ann = gt_by_image[image_id]
        pred_ann = pred_by_image.get(image_id)
        if pred_ann is None:
            raise EvaluationInputError(f"{pred_json}: no prediction for image_id {image_id!r} "
                                       f"({gt_ann.get('file_name')}); predict every ground-truth image")
        if "file_name" not in pred_ann:
            raise EvaluationInputError(f"{pred_json}: the annotation of image_id {image_id!r} has no file_name "
                                       "(the PNG's name in the prediction folder)")
        pairs.append(ImagePair(
            image_id=image_id,
            gt_png=Path(gt_dir) / gt_ann["file_name"],
            pred_png=Path(pred_dir) / pred_ann["file_name"],
            gt_segments=tuple((s["id"], s["category_id"], s.get("iscrowd", 0), s["area"])
                              for s in gt_ann["segments_info"]),
            pred_segments=tuple((s["id"], s["category_id"]) for s in pred_ann["segments_info"]),
            size=sizes.get(image_id),
        ))
    return pairs


def _ids_by_file_name(gt: dict, pred: dict) -> dict:
    """Prediction image id -> ground-truth image id for predictions that list their ``images`` by
    the source's file name (segkit's export numbers images in batch order)."""
    index = ImageIndex(gt.get("images", []))
    return {image["id"]: gt_id for image in pred.get("images", []) if isinstance(image, dict)
            and (gt_id := index.lookup(image.get("file_name", ""))) is not None}


def png_ids(path) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG: ``R + 256 G + 256^2 B`` as HxW uint32."""
    rgbx = read_png(path, convert="RGBX")  # 4 bytes a pixel: one little-endian uint32 without the pad byte
    return rgbx.view("<u4")[..., 0] & 0xFFFFFF


def _index(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Position of each id in the sorted array ``known``; ``len(known)`` where it is absent."""
    position = np.searchsorted(known, ids)
    position[position == len(known)] = 0
    return np.where(known[position] == ids, position, len(known))


def score_image(category_ids: frozenset, pair: ImagePair) -> dict:
    """``{category_id: [tp, fp, fn, iou_sum]}`` for one image (panopticapi's ``pq_compute_single_core``)."""
    gt_ids = png_ids(pair.gt_png)
    if pair.size is not None:
        check_size(pair.gt_png, gt_ids, *pair.size, "its image in the ground-truth JSON")
    pred_ids = png_ids(pair.pred_png)
    check_size(pair.pred_png, pred_ids, *gt_ids.shape, f"the ground truth {pair.gt_png}")

    pred_known = np.array(sorted({VOID, *(s[0] for s in pair.pred_segments)}), dtype=np.int64)
    gt_known = np.array(sorted({VOID, *(s[0] for s in pair.gt_segments)}), dtype=np.uint32)
    gt_run, pred_run, run_length = pixel_runs(gt_ids, pred_ids)
    pred_index = _index(pred_run, pred_known)
    if (pred_index == len(pred_known)).any():
        stray = int(pred_run[pred_index == len(pred_known)][0])
        raise EvaluationInputError(f"{pair.pred_png}: segment id {stray} is in the PNG but not in the JSON's "
                                   f"segments_info of image_id {pair.image_id!r}")
    # One extra ground-truth row collects ids the JSON does not list (panopticapi ignores them).
    gt_index = _index(gt_run, gt_known)
    columns = len(pred_known)
    joint = np.bincount(gt_index * columns + pred_index, weights=run_length,
                        minlength=(len(gt_known) + 1) * columns)
    intersections = joint.astype(np.int64).reshape(len(gt_known) + 1, columns)
    pred_areas = intersections.sum(axis=0)

    pred_column = {int(i): c for c, i in enumerate(pred_known)}
    gt_row = {int(i): r for r, i in enumerate(gt_known)}
    void_row = gt_row[VOID]
    pred_category = {}
    for segment_id, category_id in pair.pred_segments:
        if segment_id in pred_category or segment_id == VOID:
            raise EvaluationInputError(f"{pair.pred_png}: segment id {segment_id} is listed twice (or is 0, "
                                       f"VOID) in the segments_info of image_id {pair.image_id!r}")
        if pred_areas[pred_column[segment_id]] == 0:
            raise EvaluationInputError(f"{pair.pred_png}: segment id {segment_id} of the JSON's segments_info "
                                       f"is not in the PNG (image_id {pair.image_id!r})")
        if category_id not in category_ids:
            raise EvaluationInputError(f"{pair.pred_png}: segment {segment_id} has category_id {category_id}, "
                                       "which the ground truth's categories do not have")
        pred_category[segment_id] = category_id

    stats = {}

    def add(category_id, field, value=1):
        stats.setdefault(category_id, [0, 0, 0, 0.0])[field] += value

    gt_matched, pred_matched = set(), set()
    gt_info = {s[0]: s for s in pair.gt_segments}
    for gt_id in gt_known:  # sorted ids, as panopticapi's np.unique order
        if gt_id == VOID:
            continue
        _, category_id, iscrowd, gt_area = gt_info[int(gt_id)]
        if iscrowd == 1:
            continue
        row = intersections[gt_row[int(gt_id)]]
        for column in np.flatnonzero(row):
            pred_id = int(pred_known[column])
            if pred_id == VOID or pred_category[pred_id] != category_id:
                continue
            intersection = int(row[column])
            union = int(pred_areas[column]) + gt_area - intersection - int(intersections[void_row, column])
            iou = intersection / union
            if iou > MATCH_IOU:
                add(category_id, TP)
                add(category_id, IOU_SUM, iou)
                gt_matched.add(int(gt_id))
                pred_matched.add(pred_id)

    crowd_of_category = {}
    for gt_id, category_id, iscrowd, _ in pair.gt_segments:
        if gt_id in gt_matched:
            continue
        if iscrowd == 1:
            crowd_of_category[category_id] = gt_id
            continue
        add(category_id, FN)

    for pred_id, category_id in pred_category.items():
        if pred_id in pred_matched:
            continue
        column = pred_column[pred_id]
        ignored = int(intersections[void_row, column])
        if category_id in crowd_of_category:
            ignored += int(intersections[gt_row[crowd_of_category[category_id]], column])
        if ignored / pred_areas[column] > 0.5:
            continue
        add(category_id, FP)
    return stats


def summarise(categories: list[dict], totals: dict) -> dict:
    """The ``panoptic`` section of metrics.json from per-category ``[tp, fp, fn, iou_sum]``."""
    per_class = {}
    groups = {"All": [], "Things": [], "Stuff": []}
    for category in categories:
        tp, fp, fn, iou_sum = totals.get(category["id"], [0, 0, 0, 0.0])
        counted = tp + fp + fn > 0
        entry = {"pq": None, "sq": None, "rq": None, "name": category.get("name"),
                 "isthing": category.get("isthing"), "tp": tp, "fp": fp, "fn": fn, "iou_sum": iou_sum,
                 "counted": counted}
        if counted:
            entry["pq"] = iou_sum / (tp + 0.5 * fp + 0.5 * fn)
            entry["sq"] = iou_sum / tp if tp != 0 else 0.0
            entry["rq"] = tp / (tp + 0.5 * fp + 0.5 * fn)
            groups["All"].append(entry)
            groups["Things" if category.get("isthing") == 1 else "Stuff"].append(entry)
        per_class[str(category["id"])] = entry
    section = {}
    for group, entries in groups.items():
        n = len(entries)
        section[group] = {key: (sum(e[key] for e in entries) / n if n else None) for key in ("pq", "sq", "rq")}
        section[group]["n"] = n
    section["per_class"] = per_class
    return section


def score_pairs(categories: list[dict], pairs, *, workers=None, progress=None) -> dict:
    """The ``panoptic`` section for these image pairs, scored on ``workers`` processes (default: every
    core); ``progress`` (tqdm-like) advances once per image."""
    score = functools.partial(score_image, frozenset(c["id"] for c in categories))
    totals = {}
    for stats in map_images(score, pairs, workers=workers, progress=progress):
        for category_id, counts in stats.items():
            total = totals.setdefault(category_id, [0, 0, 0, 0.0])
            for k in range(4):
                total[k] += counts[k]
    return summarise(categories, totals)


def evaluate_panoptic(gt_json, gt_dir, pred_json, pred_dir, *, image_ids=None, workers=None,
                      progress=None) -> dict:
    """PQ/SQ/RQ (All, Things, Stuff) and per-class counts, as panopticapi's ``pq_compute``.

    ``image_ids`` limits the evaluation to those ground-truth images.
    """
    categories, pairs = load_pairs(gt_json, gt_dir, pred_json, pred_dir, image_ids)
    return score_pairs(categories, pairs, workers=workers, progress=progress)
