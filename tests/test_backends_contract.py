"""Every backend in the registry keeps the same contract: a tiny model returns a valid Result, the
renderer draws it, to_coco() round-trips through pycocotools, and bad options are refused alike."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

import segkit
from segkit import render, rle
from segkit.errors import OptionError
from segkit.registry import BACKENDS, get_spec
from segkit.result import KINDS, Result

from conftest import TINY_OPTIONS, tiny_model_args


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def loaded(request, tmp_path_factory):
    backend = request.param
    segmenter = segkit.load(backend, device="cpu", **tiny_model_args(backend, tmp_path_factory.mktemp(backend)))
    return backend, segmenter


def test_a_tiny_model_returns_a_valid_result(loaded, examples_dir):
    backend, segmenter = loaded
    photo = examples_dir / "coffee.jpg"
    result = segmenter.predict(photo, **TINY_OPTIONS[backend])
    assert isinstance(result, Result) and result.kind in KINDS and result.kind in get_spec(backend).tasks
    n = len(result)
    assert n >= 1, f"{backend}: the tiny model found nothing; adjust TINY_OPTIONS"
    h, w = result.image_size
    with Image.open(photo) as image:
        assert (w, h) == image.size  # results are at the input's size, whatever the model ran at
    assert result.masks.shape == (n, h, w) and result.masks.dtype == bool
    assert len(result.labels) == n and result.scores.shape == (n,) and result.boxes.shape == (n, 4)
    assert result.category_ids.shape == (n,) and (result.category_ids >= 1).all()
    assert result.class_names and all(0 <= c < len(result.class_names) for c in result.class_ids)
    assert [result.class_names[c] for c in result.class_ids] == result.labels
    assert set(result.meta["options"]) == {o.name for o in type(segmenter).OPTIONS}
    json.dumps(result.meta["options"], default=str)
    assert "total_s" in result.meta["timings"] and result.meta["model"] == segmenter.name
    if result.label_map is not None:
        assert result.label_map.shape == (h, w)
    for mask, box in zip(result.masks, result.boxes):  # each mask lies in its box (RLE reads only the box)
        rows, cols = rle.box_slices(box, h, w)
        assert np.count_nonzero(mask[rows, cols]) == np.count_nonzero(mask)

    overlay = render.overlay(np.zeros((h, w, 3), np.uint8), result)
    assert overlay.shape == (h, w, 3) and overlay.any()
    labels = render.label_image(result)
    if labels is not None:
        assert labels.size == (w, h)

    records = result.to_coco(image_id=7)
    assert len(records) == n
    for i, record in enumerate(records):
        assert record["image_id"] == 7 and record["category_id"] == int(result.category_ids[i])
        decoded = mask_utils.decode(record["segmentation"]).astype(bool)
        np.testing.assert_array_equal(decoded, result.masks[i])
        assert record["area"] == int(result.masks[i].sum())
    json.dumps(records)

    picked = result[result.scores >= np.median(result.scores)]
    assert 1 <= len(picked) <= n and picked.labels == [result.labels[i] for i in
                                                      np.flatnonzero(result.scores >= np.median(result.scores))]
    assert repr(result).startswith(f"Result({result.kind!r}, {n} segment") and len(repr(result)) < 400


def test_unknown_and_bad_options_are_refused_alike(loaded, examples_dir):
    backend, segmenter = loaded
    names = ", ".join(o.name for o in type(segmenter).OPTIONS)
    with pytest.raises(OptionError, match=f"unknown option 'colour'; valid options: {names}"):
        segmenter.predict(examples_dir / "coffee.jpg", colour="red")
    threshold = next((o for o in type(segmenter).OPTIONS if o.name == "threshold"), None)
    if threshold is not None:
        with pytest.raises(OptionError, match=r"threshold=1\.5 is out of range; use 0\.\.1"):
            segmenter.predict(examples_dir / "coffee.jpg", threshold=1.5)
