"""Renderer and Result on small synthetic results (no model needed)."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segkit import render
from segkit.result import Result, boxes_from_masks

from conftest import gray_image, two_masks


def test_boxes_from_masks():
    masks = np.zeros((2, 5, 6), bool)
    masks[0, 1:3, 2:5] = True
    assert boxes_from_masks(masks).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0]]


def test_to_coco_round_trip():
    masks = two_masks()
    res = Result("instance", masks, ["a", "b"], [0.9, 0.5], boxes_from_masks(masks))
    records = res.to_coco()
    assert len(records) == len(masks) == 2
    assert [rec["label"] for rec in records] == ["a", "b"]
    assert [rec["score"] for rec in records] == pytest.approx([0.9, 0.5])
    for mask, rec in zip(masks, records):
        assert isinstance(rec["segmentation"]["counts"], str)
        assert (mask_utils.decode(rec["segmentation"]).astype(bool) == mask).all()
        assert rec["area"] == mask.sum()
        x, y, w, h = rec["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    json.dumps(records)


def test_overlay_tints_only_masked_pixels():
    masks = two_masks()
    res = Result("instance", masks, ["a", "b"], [0.9, 0.5], boxes_from_masks(masks))
    out = render.overlay(gray_image(), res, alpha=0.5, contours=False, captions=False, legend=False)
    colors = render.segment_colors(res)
    assert out.shape == (20, 30, 3)
    assert (out[~masks.any(0)] == 100).all()
    expected = np.round(0.5 * 100 + 0.5 * colors[0].astype(float))
    assert np.abs(out[masks[0]].astype(float) - expected).max() <= 1


def test_colors_deterministic_and_palette_used():
    masks = two_masks()
    palette = np.array([[1, 2, 3], [200, 100, 50]], np.uint8)
    sem = Result("semantic", masks, ["x", "y"], [1, 1], boxes_from_masks(masks), class_ids=[1, 0], palette=palette)
    assert render.segment_colors(sem).tolist() == [[200, 100, 50], [1, 2, 3]]
    inst = Result("instance", masks, ["o", "o"], [1, 1], boxes_from_masks(masks))
    c1, c2 = render.segment_colors(inst), render.segment_colors(inst)
    assert (c1 == c2).all() and not (c1[0] == c1[1]).all()


def test_label_images():
    masks = two_masks()
    sem = Result("semantic", masks, ["x", "y"], [1, 1], boxes_from_masks(masks),
                 label_map=np.where(masks[1], 7, 0), class_ids=[0, 7], palette=np.zeros((150, 3), np.uint8))
    img = render.label_image(sem)
    assert img.mode == "P" and (np.asarray(img) == sem.label_map).all()
    inst = Result("instance", masks, ["o", "o"], [0.2, 0.9], boxes_from_masks(masks), segment_ids=[300, 2])
    ids = np.asarray(render.label_image(inst))
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 2, 300}
    assert ids[8, 9] == 300


def test_heatmap_gray():
    heat = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert render.heatmap_gray(heat).tolist() == [[0, 128, 255]]


def test_semantic_without_palette_colours_by_class_everywhere():
    label_map = np.array([[2, 2, 5], [5, 5, 2]], np.int32)
    masks = np.stack([label_map == 2, label_map == 5])
    sem = Result("semantic", masks, ["c2", "c5"], [1, 1], boxes_from_masks(masks), label_map=label_map,
                 class_ids=[2, 5], class_names=[f"c{i}" for i in range(6)])
    labels = render.label_image(sem)
    flat = np.asarray(labels.getpalette(), np.uint8).reshape(-1, 3)
    assert (flat[[2, 5]] == render.segment_colors(sem)).all()  # S_labels.png and overlay agree
    assert not (flat[2] == flat[5]).all()
