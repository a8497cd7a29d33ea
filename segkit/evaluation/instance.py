"""Mask and box AP with pycocotools' COCOeval, the reference, and detectron2's per-category AP.

Predictions are checked against the ground truth first (image ids, category ids, mask sizes), since
pycocotools would otherwise fail with an assertion or score silently wrong. For mask AP any ``bbox``
of a result is dropped before ``loadRes``, as detectron2 does: with it pycocotools would take the box
area for the small/medium/large ranges.
"""

from __future__ import annotations

import contextlib
import io
import numbers

import numpy as np

from ..errors import EvaluationInputError
from .inputs import ImageIndex, read_json

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("segm", "bbox")
AGNOSTIC_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


def _load(source, what: str):
    """(data, name for errors) from a path or already-parsed JSON."""
    if isinstance(source, (dict, list)):
        return source, "<predictions>" if isinstance(source, list) else "<dataset>"
    return read_json(source, what), str(source)


def load_ground_truth(gt, *, class_agnostic: bool = False) -> tuple[dict, str]:
    """A COCO instances dataset (path or dict), with every category folded into one if asked."""
    data, name = _load(gt, "a COCO instances JSON with images, annotations and categories")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data, dict) or key not in data]
    if missing:
        raise EvaluationInputError(f"{name}: not a COCO instances JSON (no {missing[0]!r} list)")
    if class_agnostic:
        data = {**data, "categories": [AGNOSTIC_CATEGORY],
                "annotations": [{**ann, "category_id": AGNOSTIC_CATEGORY["id"]} for ann in data["annotations"]]}
    return data, name


def load_predictions(data, name: str, gt: dict, gt_name: str, *, iou_type: str,
                     class_agnostic: bool = False) -> list[dict]:
    """Result records ready for ``loadRes``: checked, RLE-encoded, image ids the ground truth's.

    ``data`` (parsed from the file ``name``) is a COCO results list, or a COCO dataset (``images`` +
    ``annotations``, e.g. pseudo-labels) whose images are matched to the ground truth's by
    ``file_name``; its annotations without a ``score`` count as score 1.
    """
    if isinstance(data, dict) and "annotations" in data:
        records = _from_dataset(data, name, gt, gt_name)
    elif isinstance(data, list):
        records = data
    else:
        raise EvaluationInputError(f"{name}: expected a COCO results list or a COCO dataset with 'annotations'")
    sizes = {image["id"]: (image.get("height"), image.get("width")) for image in gt["images"]}
    category_ids = {category["id"] for category in gt["categories"]}
    return [_checked(record, i, name, gt_name, sizes, category_ids, iou_type, class_agnostic)
            for i, record in enumerate(records)]


def _from_dataset(data: dict, name: str, gt: dict, gt_name: str) -> list[dict]:
    index = ImageIndex(gt["images"])
    image_ids = {}
    for image in data.get("images", []):
        found = index.lookup(image.get("file_name", ""))
        if found is None:
            raise EvaluationInputError(f"{name}: image {image.get('file_name')!r} is not in {gt_name} "
                                       "(images are matched by file_name)")
        image_ids[image["id"]] = found
    records = []
    for i, ann in enumerate(data["annotations"]):
        if ann.get("image_id") not in image_ids:
            raise EvaluationInputError(f"{name}: annotation {i} has image_id {ann.get('image_id')!r}, "
                                       "which its 'images' list lacks")
        records.append({**ann, "image_id": image_ids[ann["image_id"]], "score": ann.get("score", 1.0)})
    return records


def segkit_results(json_paths, gt) -> list[dict]:
    """A COCO results list from segkit's per-image ``S.json`` files, for ``evaluate_instances``.

    Each file's ``image`` (the source image's path) finds its ground-truth image by file name, so
    renamed output stems (``S-1.json``) still match; its segments' ``category_id`` must be the
    dataset's category ids. ``gt`` is the ground truth (path or dict).
    """
    gt_data, gt_name = load_ground_truth(gt)
    index = ImageIndex(gt_data["images"])
    records = []
    for path in json_paths:
        data = read_json(path, "a segkit result JSON")
        image_id = index.lookup(data.get("image", "")) if isinstance(data, dict) else None
        if image_id is None:
            raise EvaluationInputError(f"{path}: its image {data.get('image') if isinstance(data, dict) else None!r} "
                                       f"is not in {gt_name} (matched by file name)")
        for segment in data.get("segments", []):
            records.append({key: segment[key] for key in ("category_id", "segmentation", "score", "bbox")
                            if key in segment} | {"image_id": image_id})
    return records


def _checked(record, i, name, gt_name, sizes, category_ids, iou_type, class_agnostic) -> dict:
    """One result record as pycocotools needs it, or an error naming the file and the record."""
    where = f"{name}: result {i}"
    if not isinstance(record, dict):
        raise EvaluationInputError(f"{where} is not an object")
    image_id = record.get("image_id")
    if image_id not in sizes:
        raise EvaluationInputError(f"{where} has image_id {image_id!r}, which {gt_name} lacks; "
                                   "predictions must use the ground truth's image ids")
    category_id = record.get("category_id")
    if class_agnostic:
        category_id = AGNOSTIC_CATEGORY["id"]
    elif category_id not in category_ids:
        raise EvaluationInputError(f"{where} has category_id {category_id!r}, which {gt_name} does not define "
                                   "(use --class-agnostic for class-agnostic predictions)")
    score = record.get("score")
    if not isinstance(score, numbers.Real) or isinstance(score, bool) or not np.isfinite(score):
        raise EvaluationInputError(f"{where} has no valid score ({score!r})")
    out = {"image_id": image_id, "category_id": category_id, "score": float(score)}
    segmentation = record.get("segmentation")
    if iou_type == "segm" or (iou_type == "bbox" and "bbox" not in record):
        if segmentation is None:
            raise EvaluationInputError(f"{where} has no segmentation" +
                                       (" (nor bbox)" if iou_type == "bbox" else ""))
        rle = _rle(segmentation, sizes[image_id], where)
    if iou_type == "segm":
        out["segmentation"] = rle
    else:
        out["bbox"] = _bbox(record["bbox"], where) if "bbox" in record else _box_of(rle)
    return out


def _rle(segmentation, size, where) -> dict:
    """A compressed RLE at the ground-truth image's size, from RLE (either form) or polygons."""
    from pycocotools import mask as mask_utils

    height, width = size
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if list(segmentation["size"]) != [height, width]:
            h, w = segmentation["size"]
            raise EvaluationInputError(f"{where}: mask is {w}x{h} but its image is {width}x{height}; "
                                       "write masks at the image's own size")
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, height, width)
        return segmentation
    if isinstance(segmentation, list) and segmentation and all(isinstance(p, list) for p in segmentation):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    raise EvaluationInputError(f"{where}: segmentation must be RLE ({{size, counts}}) or polygons")


def _bbox(box, where) -> list[float]:
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, numbers.Real) for v in box)):
        raise EvaluationInputError(f"{where}: bbox must be [x, y, width, height], not {box!r}")
    return [float(v) for v in box]


def _box_of(rle) -> list[float]:
    from pycocotools import mask as mask_utils

    return [float(v) for v in mask_utils.toBbox(rle)]


def coco_eval(gt: dict, records: list[dict], iou_type: str, image_ids=None) -> dict:
    """pycocotools' twelve stats (None where it reports -1) and detectron2's per-category AP.

    Per-category AP is the mean of ``precision[:, :, k, area all, maxDets 100]`` over entries > -1,
    None for a category without non-crowd ground truth.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and its table
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if records:
            coco_dt = coco_gt.loadRes(records)
        else:  # loadRes cannot take an empty list; no detections scores 0 where there is ground truth
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: (float(value) if value > -1 else None) for name, value in zip(STAT_NAMES, evaluator.stats)}
    names = {category["id"]: category["name"] for category in gt["categories"]}
    precision = evaluator.eval["precision"]
    per_category = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_category[names[category_id]] = float(np.mean(values)) if values.size else None
    return {"stats": stats, "per_category_AP": per_category}


def evaluate_instances(gt, pred, *, iou_type: str = "segm", class_agnostic: bool = False,
                       image_ids=None) -> dict:
    """``{"instance_segm": ..., "instance_bbox": ...}`` (as asked by ``iou_type``: segm, bbox or both).

    ``gt`` is a COCO instances JSON (path or dict), ``pred`` a results list or a COCO dataset (path or
    parsed); ``class_agnostic`` folds all categories into one (CutLER's protocol); ``image_ids``
    limits the evaluation to those ground-truth images.
    """
    if iou_type not in (*IOU_TYPES, "both"):
        raise ValueError(f"iou_type must be segm, bbox or both, not {iou_type!r}")
    gt_data, gt_name = load_ground_truth(gt, class_agnostic=class_agnostic)
    pred_data, pred_name = _load(pred, "a COCO results list or a COCO dataset JSON")
    sections = {}
    for kind in (IOU_TYPES if iou_type == "both" else (iou_type,)):
        records = load_predictions(pred_data, pred_name, gt_data, gt_name, iou_type=kind,
                                   class_agnostic=class_agnostic)
        sections[f"instance_{kind}"] = coco_eval(gt_data, records, kind, image_ids)
    return sections
