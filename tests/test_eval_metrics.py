"""segkit.evaluation against the reference numbers of tests/fixtures/eval (pycocotools, panopticapi,
detectron2's SemSegEvaluator), and its checks of mismatched inputs."""

import contextlib
import copy
import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segkit.errors import EvaluationInputError
from segkit.evaluation.instance import STAT_NAMES, evaluate_instances, segkit_results
from segkit.evaluation.panoptic import evaluate_panoptic
from segkit.evaluation.report import metrics_document, write_metrics
from segkit.evaluation.semantic import (cityscapes_train_ids, evaluate_semantic, load_classes, pair_files)

FIXTURE = Path(__file__).parent / "fixtures" / "eval"
REFERENCE = json.loads((FIXTURE / "metrics.json").read_text())
GT_INSTANCES = FIXTURE / "gt" / "instances.json"
RESULTS = FIXTURE / "pred" / "instances_results.json"


def close(value, expected, rel):
    if expected is None:
        return value is None
    return value is not None and abs(value - expected) <= rel * abs(expected)


def assert_close_dict(values, expected, rel):
    assert set(values) >= set(expected)
    bad = {k: (values[k], v) for k, v in expected.items() if not close(values[k], v, rel)}
    assert not bad, bad


def pycocotools_stats(gt: dict, results: list, iou_type: str) -> list:
    """Plain pycocotools on in-memory data: the reference path for derived inputs."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def test_fixture_files_match_their_checksums():
    for name, digest in REFERENCE["meta"]["files_sha256"].items():
        if name.startswith("images/"):  # not copied: no metric reads the pictures
            continue
        assert hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest() == digest, name


# Instance segmentation (mask and box AP)


def test_mask_ap_equals_pycocotools_reference():
    section = evaluate_instances(GT_INSTANCES, RESULTS)["instance_segm"]
    assert list(section["stats"]) == list(STAT_NAMES) == REFERENCE["instance_segm"]["stats_order"]
    assert_close_dict(section["stats"], REFERENCE["instance_segm"]["stats"], 1e-9)
    assert_close_dict(section["per_category_AP"], REFERENCE["instance_segm"]["per_category_AP"], 1e-9)
    assert section["per_category_AP"]["bicycle"] is None


def test_mask_ap_drops_bbox_of_results():
    """With a (here: whole-image) bbox key pycocotools would take box areas for S/M/L; detectron2 drops it."""
    gt = json.loads(GT_INSTANCES.read_text())
    sizes = {image["id"]: (image["width"], image["height"]) for image in gt["images"]}
    results = json.loads(RESULTS.read_text())
    for record in results:
        width, height = sizes[record["image_id"]]
        record["bbox"] = [0.0, 0.0, float(width), float(height)]
    section = evaluate_instances(GT_INSTANCES, results)["instance_segm"]
    assert_close_dict(section["stats"], REFERENCE["instance_segm"]["stats"], 1e-9)
    naive = pycocotools_stats(gt, copy.deepcopy(results), "segm")
    assert not math.isclose(naive[STAT_NAMES.index("APs")], REFERENCE["instance_segm"]["stats"]["APs"])


def test_box_ap_uses_given_boxes_else_the_masks_boxes():
    gt = json.loads(GT_INSTANCES.read_text())
    results = json.loads(RESULTS.read_text())
    with_boxes = [{k: v for k, v in r.items() if k != "segmentation"}
                  | {"bbox": [float(x) for x in mask_utils.toBbox(r["segmentation"])]} for r in results]
    expected = pycocotools_stats(gt, copy.deepcopy(with_boxes), "bbox")
    sections = evaluate_instances(GT_INSTANCES, RESULTS, iou_type="both")
    assert_close_dict(sections["instance_segm"]["stats"], REFERENCE["instance_segm"]["stats"], 1e-9)
    got = sections["instance_bbox"]["stats"]
    assert [got[name] for name in STAT_NAMES] == pytest.approx(expected, rel=1e-12)
    assert got["AP"] != pytest.approx(REFERENCE["instance_segm"]["stats"]["AP"])
    shifted = [r | {"bbox": [r["bbox"][0] + 5, r["bbox"][1] + 5, *r["bbox"][2:]]} for r in with_boxes]
    moved = evaluate_instances(GT_INSTANCES, shifted, iou_type="bbox")["instance_bbox"]["stats"]
    expected_moved = pycocotools_stats(gt, copy.deepcopy(shifted), "bbox")
    assert [moved[name] for name in STAT_NAMES] == pytest.approx(expected_moved, rel=1e-12)
    assert moved["AP"] < got["AP"]


def test_class_agnostic_equals_pycocotools_on_folded_files():
    gt = json.loads(GT_INSTANCES.read_text())
    results = json.loads(RESULTS.read_text())
    folded_gt = gt | {"categories": [{"id": 1, "name": "object"}],
                      "annotations": [a | {"category_id": 1} for a in gt["annotations"]]}
    folded = [r | {"category_id": 1} for r in results]
    expected = pycocotools_stats(folded_gt, folded, "segm")
    section = evaluate_instances(GT_INSTANCES, RESULTS, class_agnostic=True)["instance_segm"]
    assert [section["stats"][name] for name in STAT_NAMES] == pytest.approx(expected, rel=1e-12)
    assert list(section["per_category_AP"]) == ["object"]
    assert section["per_category_AP"]["object"] == pytest.approx(expected[0], rel=1e-12)
    assert section["stats"]["AP"] != pytest.approx(REFERENCE["instance_segm"]["stats"]["AP"])


def test_pred_as_coco_dataset_matched_by_file_name():
    """A COCO dataset file (as --coco writes) with its own image ids and full paths as file_name."""
    gt = json.loads(GT_INSTANCES.read_text())
    results = json.loads(RESULTS.read_text())
    names = {image["id"]: image["file_name"] for image in gt["images"]}
    dataset = {
        "images": [{"id": 100 + i, "file_name": f"/data/photos/{names[i]}"} for i in names],
        "annotations": [r | {"id": k + 1, "image_id": 100 + r["image_id"]} for k, r in enumerate(results)],
        "categories": gt["categories"],
    }
    section = evaluate_instances(GT_INSTANCES, dataset)["instance_segm"]
    assert_close_dict(section["stats"], REFERENCE["instance_segm"]["stats"], 1e-9)


def test_segkit_result_files_matched_by_source_image(tmp_path):
    """S.json files as segkit writes them (renamed stems, full image paths, boxes) score like the results."""
    gt = json.loads(GT_INSTANCES.read_text())
    results = json.loads(RESULTS.read_text())
    paths = []
    for image in gt["images"]:
        segments = [{"id": k + 1, "label": "x", "category_id": r["category_id"], "score": r["score"],
                     "bbox": [0.0, 0.0, 1.0, 1.0], "segmentation": r["segmentation"]}
                    for k, r in enumerate(r for r in results if r["image_id"] == image["id"])]
        path = tmp_path / f"{Path(image['file_name']).stem}-1.json"
        path.write_text(json.dumps({"image": f"/data/val/{image['file_name']}", "kind": "instance",
                                    "segments": segments}))
        paths.append(path)
    section = evaluate_instances(GT_INSTANCES, segkit_results(paths, GT_INSTANCES))["instance_segm"]
    assert_close_dict(section["stats"], REFERENCE["instance_segm"]["stats"], 1e-9)
    (tmp_path / "stray.json").write_text(json.dumps({"image": "/data/val/other.png", "segments": []}))
    with pytest.raises(EvaluationInputError, match="other.png"):
        segkit_results([tmp_path / "stray.json"], GT_INSTANCES)


def test_no_detections_score_zero():
    section = evaluate_instances(GT_INSTANCES, [])["instance_segm"]
    assert section["stats"]["AP"] == 0.0 and section["stats"]["AR100"] == 0.0
    assert section["per_category_AP"] == {"person": 0.0, "bicycle": None, "car": 0.0, "dog": 0.0}


@pytest.mark.parametrize("change, message", [
    (lambda r: r[3].update(image_id=99), "image_id 99"),
    (lambda r: r[0].update(category_id=7), "category_id 7"),
    (lambda r: r[2]["segmentation"].update(size=[10, 20]), "mask is 20x10"),
    (lambda r: r[1].pop("score"), "no valid score"),
])
def test_instance_errors_name_the_file(tmp_path, change, message):
    results = json.loads(RESULTS.read_text())
    change(results)
    broken = tmp_path / "results.json"
    broken.write_text(json.dumps(results))
    with pytest.raises(EvaluationInputError, match=message) as info:
        evaluate_instances(GT_INSTANCES, broken)
    assert str(broken) in str(info.value)


# Panoptic segmentation (PQ)


def check_panoptic(section):
    reference = REFERENCE["panoptic"]
    for group in ("All", "Things", "Stuff"):
        assert_close_dict(section[group], reference[group], 1e-12)
    assert set(section["per_class"]) == set(reference["per_class"])
    for category_id, expected in reference["per_class"].items():
        got = section["per_class"][category_id]
        assert (got["tp"], got["fp"], got["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
        assert_close_dict(got, {k: expected[k] for k in ("pq", "sq", "rq", "iou_sum")}, 1e-12)
        assert got["counted"] == expected["counted"]


@pytest.mark.parametrize("workers", [1, 2])
def test_pq_equals_panopticapi_reference(workers):
    section = evaluate_panoptic(FIXTURE / "gt" / "panoptic.json", FIXTURE / "gt" / "panoptic",
                                FIXTURE / "pred" / "panoptic.json", FIXTURE / "pred" / "panoptic", workers=workers)
    check_panoptic(section)


def test_pq_pool_while_other_threads_run():
    """With a second thread alive the pool starts by forkserver instead of fork; same numbers."""
    import threading

    from segkit.evaluation.parallel import _start_method

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert _start_method() in ("forkserver", "spawn")
        section = evaluate_panoptic(FIXTURE / "gt" / "panoptic.json", FIXTURE / "gt" / "panoptic",
                                    FIXTURE / "pred" / "panoptic.json", FIXTURE / "pred" / "panoptic", workers=2)
    finally:
        stop.set()
        thread.join()
    check_panoptic(section)


def test_pq_category_with_no_gt_and_no_prediction_is_left_out(tmp_path):
    """Drop the two bicycle predictions (relabel them as VOID): bicycle then does not count."""
    pred = json.loads((FIXTURE / "pred" / "panoptic.json").read_text())
    pred_dir = tmp_path / "pred"
    shutil.copytree(FIXTURE / "pred" / "panoptic", pred_dir)
    for ann in pred["annotations"]:
        bikes = [s["id"] for s in ann["segments_info"] if s["category_id"] == 2]
        if bikes:
            rgb = np.asarray(Image.open(pred_dir / ann["file_name"]).convert("RGB")).copy()
            ids = rgb.astype(np.int64) @ np.array([1, 256, 65536])
            rgb[np.isin(ids, bikes)] = 0
            Image.fromarray(rgb).save(pred_dir / ann["file_name"])
            ann["segments_info"] = [s for s in ann["segments_info"] if s["category_id"] != 2]
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    section = evaluate_panoptic(FIXTURE / "gt" / "panoptic.json", FIXTURE / "gt" / "panoptic",
                                tmp_path / "pred.json", pred_dir)
    assert section["per_class"]["2"]["counted"] is False and section["per_class"]["2"]["pq"] is None
    assert section["Things"]["n"] == 3 and section["All"]["n"] == 6
    person, car, dog = (REFERENCE["panoptic"]["per_class"][k]["pq"] for k in ("1", "3", "18"))
    assert section["Things"]["pq"] == pytest.approx((person + car + dog) / 3, rel=1e-12)


def _broken_panoptic(tmp_path, edit_json=None, edit_png=None):
    pred = json.loads((FIXTURE / "pred" / "panoptic.json").read_text())
    pred_dir = tmp_path / "pred"
    shutil.copytree(FIXTURE / "pred" / "panoptic", pred_dir)
    if edit_json:
        edit_json(pred)
    if edit_png:
        edit_png(pred_dir / "img03.png")
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    return FIXTURE / "gt" / "panoptic.json", FIXTURE / "gt" / "panoptic", tmp_path / "pred.json", pred_dir


def _crop(path):
    Image.open(path).crop((0, 0, 100, 100)).save(path)


def _stray_segment(path):
    rgb = np.asarray(Image.open(path).convert("RGB")).copy()
    rgb[:3, :3] = (1, 2, 3)
    Image.fromarray(rgb).save(path)


@pytest.mark.parametrize("edit_json, edit_png, message, names", [
    (None, _crop, "100x100 pixels but the ground truth", "img03.png"),
    (lambda p: p["annotations"][2]["segments_info"][0].update(category_id=77), None, "category_id 77", "img03.png"),
    (lambda p: p["annotations"].pop(1), None, "no prediction for image_id 2", "pred.json"),
    (lambda p: p["annotations"][0].update(image_id=42), None, "image_id 42 is not in", "pred.json"),
    (None, _stray_segment, "in the PNG but not in the JSON", "img03.png"),
    (lambda p: p["annotations"][2]["segments_info"].append({"id": 5, "category_id": 1}), None,
     "is not in the PNG", "img03.png"),
])
def test_panoptic_errors_name_the_file(tmp_path, edit_json, edit_png, message, names):
    with pytest.raises(EvaluationInputError, match=message) as info:
        evaluate_panoptic(*_broken_panoptic(tmp_path, edit_json, edit_png))
    assert names in str(info.value)


def test_panoptic_error_in_a_worker_reaches_the_caller(tmp_path):
    with pytest.raises(EvaluationInputError, match="img03.png: 100x100 pixels"):
        evaluate_panoptic(*_broken_panoptic(tmp_path, None, _crop), workers=2)


# Semantic segmentation (mIoU)


def check_semantic(section, rel=1e-12):
    reference = REFERENCE["semantic"]
    assert_close_dict(section, {k: reference[k] for k in ("mIoU", "fwIoU", "mACC", "pACC")}, rel)
    assert_close_dict(section["IoU"], reference["IoU"], rel)
    assert_close_dict(section["ACC"], reference["ACC"], rel)
    assert section["confusion_matrix_gt_rows_pred_cols"] == reference["confusion_matrix_gt_rows_pred_cols"]


@pytest.mark.parametrize("workers", [1, 2])
def test_semantic_equals_detectron2_reference(workers):
    classes = load_classes(FIXTURE / "gt" / "semantic_classes.json")
    assert classes.ignore == 255 and classes.names[3] == "bicycle"
    pairs = pair_files(FIXTURE / "gt" / "semantic", FIXTURE / "pred" / "semantic")
    check_semantic(evaluate_semantic(pairs, classes, workers=workers))


@pytest.mark.parametrize("images, pixels", [(1, 2**20), (2, 2**20), (16, 1)])
def test_semantic_maps_read_in_groups_of_any_size(monkeypatch, images, pixels):
    """Maps are read a group of images at a time: the counts do not depend on where groups end."""
    from segkit.evaluation import semantic

    monkeypatch.setattr(semantic, "READ_GROUP_IMAGES", images)
    monkeypatch.setattr(semantic, "READ_GROUP_PIXELS", pixels)
    classes = load_classes(FIXTURE / "gt" / "semantic_classes.json")
    pairs = pair_files(FIXTURE / "gt" / "semantic", FIXTURE / "pred" / "semantic")
    check_semantic(evaluate_semantic(pairs, classes, workers=1))


def test_ade20k_layout_shifts_labels(tmp_path):
    """The same ground truth written as ADE20K does (class + 1, 0 = ignore) scores the same."""
    (tmp_path / "gt").mkdir()
    for path in sorted((FIXTURE / "gt" / "semantic").glob("*.png")):
        labels = np.asarray(Image.open(path))
        Image.fromarray(np.where(labels == 255, 0, labels + 1).astype(np.uint8)).save(tmp_path / "gt" / path.name)
    classes = load_classes(FIXTURE / "gt" / "semantic_classes.json")
    pairs = pair_files(tmp_path / "gt", FIXTURE / "pred" / "semantic", "ade20k")
    check_semantic(evaluate_semantic(pairs, classes, layout="ade20k"))


def test_cityscapes_layout_maps_label_ids_and_file_names(tmp_path):
    label_ids = np.array([[7, 8, 26, 0], [255, 33, 6, 24]], dtype=np.uint8)
    assert cityscapes_train_ids(label_ids).tolist() == [[0, 1, 13, 255], [255, 18, 255, 11]]
    (tmp_path / "gt" / "frankfurt").mkdir(parents=True)
    (tmp_path / "pred").mkdir()
    for name in ("frankfurt_000000_000294_gtFine_labelIds.png", "frankfurt_000000_000294_gtFine_color.png"):
        Image.fromarray(label_ids).save(tmp_path / "gt" / "frankfurt" / name)
    Image.fromarray(label_ids).save(tmp_path / "pred" / "frankfurt_000000_000294_leftImg8bit_labels.png")
    pairs = pair_files(tmp_path / "gt", tmp_path / "pred", "cityscapes")
    assert [(gt.name, pred.name) for gt, pred in pairs] == [
        ("frankfurt_000000_000294_gtFine_labelIds.png", "frankfurt_000000_000294_leftImg8bit_labels.png")]


def _broken_semantic(tmp_path, name, array_edit):
    pred_dir = tmp_path / "pred"
    shutil.copytree(FIXTURE / "pred" / "semantic", pred_dir)
    path = pred_dir / name
    if array_edit is None:
        path.unlink()
    else:
        Image.fromarray(array_edit(np.asarray(Image.open(path)).copy())).save(path)
    return pred_dir


@pytest.mark.parametrize("edit, message", [
    (lambda a: a[:50], "pixels but the ground truth"),
    (lambda a: np.where(a == 1, 9, a).astype(np.uint8), "label 9 is not a train id"),
    (None, "no prediction for it"),
])
def test_semantic_errors_name_the_file(tmp_path, edit, message):
    pred_dir = _broken_semantic(tmp_path, "img02.png", edit)
    classes = load_classes(FIXTURE / "gt" / "semantic_classes.json")
    with pytest.raises(EvaluationInputError, match=message) as info:
        evaluate_semantic(pair_files(FIXTURE / "gt" / "semantic", pred_dir), classes)
    assert "img02.png" in str(info.value)


def test_semantic_ground_truth_label_outside_the_classes(tmp_path):
    gt_dir = tmp_path / "gt"
    shutil.copytree(FIXTURE / "gt" / "semantic", gt_dir)
    labels = np.asarray(Image.open(gt_dir / "img04.png")).copy()
    labels[10, 10:20] = 7  # 7 classes (0..6) and 255: 7 is neither
    Image.fromarray(labels).save(gt_dir / "img04.png")
    classes = load_classes(FIXTURE / "gt" / "semantic_classes.json")
    with pytest.raises(EvaluationInputError, match="img04.png: label 7 is neither a train id"):
        evaluate_semantic(pair_files(gt_dir, FIXTURE / "pred" / "semantic"), classes)


def test_semantic_classes_file_is_checked(tmp_path):
    entries = json.loads((FIXTURE / "gt" / "semantic_classes.json").read_text())
    (tmp_path / "gap.json").write_text(json.dumps([e for e in entries if e["train_id"] != 2]))
    with pytest.raises(EvaluationInputError, match="train ids must be 0..5"):
        load_classes(tmp_path / "gap.json")


# metrics.json


def test_metrics_json_layout(tmp_path):
    sections = evaluate_instances(GT_INSTANCES, RESULTS, iou_type="both")
    sections["panoptic"] = evaluate_panoptic(FIXTURE / "gt" / "panoptic.json", FIXTURE / "gt" / "panoptic",
                                             FIXTURE / "pred" / "panoptic.json", FIXTURE / "pred" / "panoptic")
    classes = load_classes(FIXTURE / "gt" / "semantic_classes.json")
    sections["semantic"] = evaluate_semantic(pair_files(FIXTURE / "gt" / "semantic", FIXTURE / "pred" / "semantic"),
                                             classes)
    path = write_metrics(tmp_path / "out" / "metrics.json", sections)

    def no_constants(name):
        raise AssertionError(f"{name} in metrics.json")

    written = json.loads(path.read_text(), parse_constant=no_constants)
    assert written == metrics_document(sections)
    assert set(written) == {"instance_segm", "instance_bbox", "panoptic", "semantic", "units"}
    assert written["units"] == {"instance_segm": "fraction", "instance_bbox": "fraction", "panoptic": "fraction",
                                "semantic": "percent"}
    for key in ("instance_segm", "instance_bbox"):
        assert set(written[key]) == {"stats", "per_category_AP"}
        assert list(written[key]["stats"]) == REFERENCE["instance_segm"]["stats_order"]
    assert written["instance_segm"]["per_category_AP"]["bicycle"] is None
    for group in ("All", "Things", "Stuff"):
        assert set(written["panoptic"][group]) == {"pq", "sq", "rq", "n"}
    assert set(written["panoptic"]["per_class"]) == {"1", "2", "3", "18", "119", "125", "200"}
    assert set(written["panoptic"]["per_class"]["1"]) >= {"tp", "fp", "fn", "iou_sum"}
    assert written["semantic"]["IoU"]["bicycle"] is None and written["semantic"]["ACC"]["bicycle"] is None
    check_semantic(written["semantic"])
    check_panoptic(written["panoptic"])
