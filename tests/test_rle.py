"""segkit's box-bounded RLE against pycocotools' own encoder: the same strings, byte for byte."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segkit import rle
from segkit.result import Result, boxes_from_masks


def _reference(mask):
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_encode_like_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for _ in range(400):
        h, w = rng.integers(1, 40, size=2)
        mask = rng.random((h, w)) < rng.random()
        if rng.random() < 0.2:
            mask[:] = rng.random() < 0.5  # all off or all on
        box = boxes_from_masks(mask[None])[0]
        assert rle.encode(mask, box)["counts"] == _reference(mask)
        assert rle.encode(mask)["counts"] == _reference(mask)


def test_runs_across_columns_and_large_counts():
    mask = np.zeros((3000, 4000), bool)
    mask[:, 1000:1002] = True  # full-height columns: runs continue from one column into the next
    mask[2990:, 3999] = True  # ends on the last pixel
    mask[100:2900, 2000:3500] = np.random.default_rng(0).random((2800, 1500)) < 0.97
    box = boxes_from_masks(mask[None])[0]
    assert rle.encode(mask, box) == {"size": [3000, 4000], "counts": _reference(mask)}


def test_to_coco_records_decode_to_the_masks():
    rng = np.random.default_rng(1)
    masks = np.zeros((5, 300, 400), bool)
    for m in masks[1:]:
        y, x = rng.integers(0, 250), rng.integers(0, 350)
        m[y:y + 50, x:x + 50] = rng.random((50, 50)) < 0.8
    result = Result("instance", masks, ["o"] * 5, rng.random(5), boxes_from_masks(masks))
    records = result.to_coco()
    assert len(records) == 5
    for mask, record in zip(masks, records):
        assert record["segmentation"]["counts"] == _reference(mask)
        assert record["area"] == mask.sum()
        np.testing.assert_array_equal(mask_utils.decode(record["segmentation"]).astype(bool), mask)
