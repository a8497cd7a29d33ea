"""The fast renderer draws exactly what the first, whole-frame float32 renderer drew.

``reference_render`` is segkit.render as it was before drawing moved to each segment's box (kept
verbatim as the specification); every case compares the new output with it pixel for pixel.
"""

import numpy as np
import pytest

from segkit import render
from segkit.result import Result, boxes_from_masks

from reference_render import reference_heatmap_gray, reference_label_image, reference_overlay

# --- results that exercise every path ------------------------------------------------------------

H, W = 150, 200


def _photo(seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    smooth = np.stack([(xx * 255 // W), (yy * 255 // H), ((xx + yy) * 255 // (H + W))], axis=-1)
    return np.clip(smooth + rng.integers(-40, 41, (H, W, 3)), 0, 255).astype(np.uint8)


def _ellipse(cy, cx, ry, rx):
    yy, xx = np.mgrid[:H, :W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _instance():
    """Overlapping and nested masks, tied scores, an empty mask, a ring (centroid off the mask), an
    even square (four pixels equally near its centroid), masks cut by every edge of the frame."""
    rng = np.random.default_rng(1)
    ring = _ellipse(75, 100, 40, 60) & ~_ellipse(75, 100, 25, 40)
    square = np.zeros((H, W), bool)
    square[20:30, 40:50] = True
    corner = np.zeros((H, W), bool)
    corner[:35, :50] = True
    right = _ellipse(100, W - 5, 30, 25)
    bottom = _ellipse(H, 100, 20, 70)
    noise = (rng.random((H, W)) < 0.3) & _ellipse(60, 140, 40, 50)
    masks = [ring, square, corner, right, bottom, noise, np.zeros((H, W), bool),
             _ellipse(70, 95, 30, 30), _ellipse(80, 110, 20, 35)]
    scores = [0.9, 0.5, 0.5, 0.7, 0.5, 0.3, 0.8, 0.9, 0.95]
    labels = ["ring", "square", "corner", "right", "bottom", "noise", "empty", "disk", "disk"]
    masks = np.stack(masks)
    return Result("instance", masks, labels, scores, boxes_from_masks(masks), class_ids=[0] * len(masks),
                  segment_ids=np.arange(1, len(masks) + 1) * 300)


def _panoptic():
    rng = np.random.default_rng(2)
    seeds = rng.integers(0, [H, W], (12, 2))
    yy, xx = np.mgrid[:H, :W]
    label_map = np.argmin((yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2,
                          axis=0).astype(np.int32) + 1
    masks = np.stack([label_map == k for k in range(1, 13)])
    palette = rng.integers(0, 256, (20, 3)).astype(np.uint8)
    class_ids = rng.integers(0, 20, 12)
    return Result("panoptic", masks, [f"class{c}" for c in class_ids], rng.random(12), boxes_from_masks(masks),
                  label_map=label_map, class_ids=class_ids, segment_ids=np.arange(1, 13),
                  is_thing=rng.random(12) < 0.5, palette=palette, class_names=[f"class{c}" for c in range(20)])


def _semantic():
    yy, xx = np.mgrid[:H, :W]
    label_map = ((yy // 40) * 3 + xx // 70).astype(np.int32)
    classes = np.unique(label_map)
    masks = np.stack([label_map == c for c in classes])
    return Result("semantic", masks, [f"c{c}" for c in classes], np.ones(len(classes)), boxes_from_masks(masks),
                  label_map=label_map, class_ids=classes, class_names=[f"c{c}" for c in range(12)])


def _prompted():
    yy, xx = np.mgrid[:H, :W]
    heat = np.stack([np.exp(-((yy - 50) ** 2 + (xx - 60) ** 2) / 2000.0),
                     np.exp(-((yy - 90) ** 2 + (xx - 120) ** 2) / 3000.0),
                     np.full((H, W), 0.2)]).astype(np.float32)
    heat[0, 0, 0], heat[1, 0, 1] = 1.3, -0.2  # out of [0, 1]: clipped
    masks = heat > 0.4
    label_map = np.where(masks.any(0), heat.argmax(0) + 1, 0)
    return Result("prompted", masks, ["a cat", "a dog", "sky"], heat.max(axis=(1, 2)), boxes_from_masks(masks),
                  heatmaps=heat, label_map=label_map)


CASES = {"instance": _instance, "panoptic": _panoptic, "semantic": _semantic, "prompted": _prompted}


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 0.3, np.float32(0.7)])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_overlay_matches_reference(kind, alpha):
    image, result = _photo(), CASES[kind]()
    expected = reference_overlay(image, result, alpha=alpha)
    got = render.overlay(image, result, alpha=alpha)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.array_equal(got, expected), f"{np.count_nonzero((got != expected).any(-1))} pixels differ"


@pytest.mark.parametrize("flags", [dict(contours=False), dict(captions=False), dict(legend=False),
                                   dict(contours=False, captions=False, legend=False)])
def test_overlay_options_match_reference(flags):
    image, result = _photo(3), _instance()
    assert np.array_equal(render.overlay(image, result, **flags), reference_overlay(image, result, **flags))


def test_overlay_in_row_bands_matches_reference(monkeypatch):
    """Full-frame passes run a band of rows at a time on big photos: bands must not show."""
    monkeypatch.setattr(render, "_BAND_PIXELS", 7 * W + 3)
    image = _photo(4)
    for make in CASES.values():
        result = make()
        assert np.array_equal(render.overlay(image, result), reference_overlay(image, result))
        if result.heatmaps is not None:
            assert np.array_equal(render.heatmap_gray(result.heatmaps[0]), reference_heatmap_gray(result.heatmaps[0]))


@pytest.mark.parametrize("limit", [2, 6])
def test_overlay_falls_back_to_float_blending_exactly(monkeypatch, limit):
    """Masks with more distinct stacks than the table limit are finished in float: same pixels."""
    monkeypatch.setattr(render, "_MAX_STACKS", limit)
    image = _photo(10)
    for alpha in (0.5, 0.3):
        for result in (_instance(), _prompted()):
            assert np.array_equal(render.overlay(image, result, alpha=alpha),
                                  reference_overlay(image, result, alpha=alpha))


def test_overlay_many_segments_and_tiny_images():
    """Over 255 segments (wider look-up index), a one-pixel mask, images smaller than the legend."""
    rng = np.random.default_rng(5)
    masks = np.zeros((300, 40, 50), bool)
    for k in range(300):
        y, x = rng.integers(0, [40, 50])
        masks[k, y:y + rng.integers(1, 9), x:x + rng.integers(1, 9)] = True
    result = Result("instance", masks, [f"o{k % 7}" for k in range(300)], rng.random(300).round(1),
                    boxes_from_masks(masks))
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    assert np.array_equal(render.overlay(image, result), reference_overlay(image, result))
    one = np.zeros((1, 3, 4), bool)
    one[0, 2, 3] = True
    tiny = Result("instance", one, ["x"], [0.5], boxes_from_masks(one))
    image = np.full((3, 4, 3), 77, np.uint8)
    assert np.array_equal(render.overlay(image, tiny), reference_overlay(image, tiny))


def test_overlay_of_empty_result_is_the_image():
    image = _photo(6)
    empty = Result("instance", np.zeros((0, H, W), bool), [], [], np.zeros((0, 4)))
    assert np.array_equal(render.overlay(image, empty), reference_overlay(image, empty))
    assert np.array_equal(render.overlay(image, empty), image)


def test_overlay_with_loose_boxes():
    """Result.boxes need only hold their masks (a detector's boxes are looser, or fractional): the
    renderer finds each mask's extent inside its box."""
    image, result = _photo(7), _instance()
    loose = result.boxes.copy()
    loose[:, :2] = np.maximum(loose[:, :2] - [9.5, 3.25], 0)
    loose[:, 2:] = np.minimum(loose[:, 2:] + [0.5, 11.0], [W, H])
    for boxes in (loose, np.tile([0, 0, W, H], (len(result), 1))):
        result.boxes[:] = boxes
        assert np.array_equal(render.overlay(image, result), reference_overlay(image, result))
        assert np.array_equal(np.asarray(render.label_image(result)), np.asarray(reference_label_image(result)))


@pytest.mark.parametrize("kind", sorted(CASES))
def test_label_image_matches_reference(kind):
    result = CASES[kind]()
    expected, got = reference_label_image(result), render.label_image(result)
    assert got.mode == expected.mode
    assert np.array_equal(np.asarray(got), np.asarray(expected))
    assert got.getpalette() == expected.getpalette()
    if kind in ("instance", "panoptic"):  # also the path that builds the map from the masks
        result.label_map = None
        expected, got = reference_label_image(result), render.label_image(result)
        assert got.mode == expected.mode and np.array_equal(np.asarray(got), np.asarray(expected))


def test_label_image_wraps_large_ids_like_reference():
    result = _instance()
    result.segment_ids = np.array([70000, -1, 5, 65535, 65536, 2, 3, 4, 9], np.int32)
    assert np.array_equal(np.asarray(render.label_image(result)), np.asarray(reference_label_image(result)))


def test_heatmap_gray_matches_reference():
    rng = np.random.default_rng(8)
    heat = rng.normal(0.5, 0.4, (37, 41)).astype(np.float32)
    heat[0, :6] = [0.5 / 255, 1.5 / 255, 2.5 / 255, -0.0, 1.0, 254.5 / 255]  # ties round to even
    assert np.array_equal(render.heatmap_gray(heat), reference_heatmap_gray(heat))
    assert np.array_equal(render.heatmap_gray(heat.astype(np.float64)), reference_heatmap_gray(heat.astype(np.float64)))
