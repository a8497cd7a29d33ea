"""The fast renderer draws exactly what the first, whole-frame float32 renderer drew.

``reference_*`` below is segkit.render as it was before drawing moved to each segment's box (kept
here verbatim as the specification); every case compares the new output with it pixel for pixel.
"""

import io

import numpy as np
import pytest
from PIL import Image

from segkit import render
from segkit.render import segment_colors
from segkit.result import Result, boxes_from_masks


# --- reference: the renderer before the speed-up --------------------------------------------------

def reference_font(height):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(11, min(28, height // 40)))


def reference_contours(mask):
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def reference_text_color(rgb):
    r, g, b = (int(c) for c in rgb)
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def reference_legend_entries(result, colors):
    seen = {}
    for i, label in enumerate(result.labels):
        seen.setdefault(label, colors[i])
    return list(seen.items())


def reference_overlay(image, result, alpha=0.5, contours=True, captions=True, legend=True):
    from PIL import ImageDraw

    image = np.asarray(image, dtype=np.uint8)
    canvas = image.astype(np.float32)
    colors = segment_colors(result)
    order = np.argsort(result.scores, kind="stable") if result.kind != "semantic" else range(len(result))
    for i in order:
        mask = result.masks[i]
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colors[i]
    if contours:
        for i in order:
            canvas[reference_contours(result.masks[i])] = colors[i]
    out = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = reference_font(image.shape[0])
    if captions:
        for i in order:
            ys, xs = np.nonzero(result.masks[i])
            if len(ys) == 0:
                continue
            text = result.labels[i]
            if result.kind in ("instance", "panoptic", "prompted") and np.isfinite(result.scores[i]):
                text = f"{text} {result.scores[i]:.2f}"
            k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
            reference_label_box(draw, (int(xs[k]), int(ys[k])), text, colors[i], font, out.size)
    if legend and len(result):
        reference_legend(draw, reference_legend_entries(result, colors), font)
    return np.asarray(out)


def reference_label_box(draw, xy, text, color, font, size):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0, xy[0] - w // 2), max(0, size[0] - w))
    y = min(max(0, xy[1] - h // 2), max(0, size[1] - h))
    draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in color))
    draw.text((x + 3 - left, y + 2 - top), text, fill=reference_text_color(color), font=font)


def reference_legend(draw, entries, font):
    left, top, right, bottom = draw.textbbox((0, 0), "Ag", font=font)
    row = bottom - top + 6
    width = max(draw.textbbox((0, 0), name, font=font)[2] for name, _ in entries) + row + 14
    draw.rectangle([4, 4, 4 + width, 8 + row * len(entries)], fill=(255, 255, 255), outline=(0, 0, 0))
    for k, (name, color) in enumerate(entries):
        y = 8 + k * row
        draw.rectangle([8, y, 8 + row - 6, y + row - 6], fill=tuple(int(c) for c in color), outline=(0, 0, 0))
        draw.text((12 + row - top, y - top), name, fill=(0, 0, 0), font=font)


def reference_heatmap_gray(heatmap):
    return np.clip(np.round(np.asarray(heatmap, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def reference_label_image(result):
    if result.kind in ("semantic", "prompted"):
        if result.label_map is None:
            return None
        lm = np.ascontiguousarray(result.label_map.astype(np.uint8))
        img = Image.frombytes("P", (lm.shape[1], lm.shape[0]), lm.tobytes())
        if result.kind == "semantic":
            colors = render.class_palette(result)
        else:
            colors = np.vstack([np.zeros((1, 3), np.uint8), segment_colors(result)])
        flat = np.zeros((256, 3), np.uint8)
        flat[: min(256, len(colors))] = colors[:256]
        img.putpalette(flat.flatten().tolist())
        return img
    ids = result.label_map
    if ids is None:
        ids = np.zeros(result.image_size, dtype=np.int32)
        for i in np.argsort(result.scores, kind="stable"):
            ids[result.masks[i]] = result.segment_ids[i]
    return Image.fromarray(ids.astype(np.uint16))


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


def test_overlay_ignores_wrong_boxes():
    """Result.boxes are a detector's: the renderer finds each mask's extent itself."""
    image, result = _photo(7), _instance()
    result.boxes[:] = [0, 0, 1, 1]
    assert np.array_equal(render.overlay(image, result), reference_overlay(image, result))


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


@pytest.mark.parametrize("level, strategy", [(0, -1), (1, -1), (6, -1), (9, -1), (1, 3), (1, 2)])
def test_save_png_is_lossless(level, strategy, tmp_path):
    image, result = _photo(9), _prompted()
    over = render.overlay(image, result)
    render.save_png(over, tmp_path / "o.png", compress_level=level, compress_type=strategy)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), over)
    labels = render.label_image(result)
    buffer = io.BytesIO()
    render.save_png(labels, buffer, compress_level=level, compress_type=strategy)
    again = Image.open(io.BytesIO(buffer.getvalue()))
    assert again.mode == "P" and np.array_equal(np.asarray(again), np.asarray(labels))
    assert again.getpalette() == labels.getpalette()
    ids = render.label_image(_instance())
    render.save_png(ids, tmp_path / "ids.png", compress_level=level, compress_type=strategy)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ids.png")), np.asarray(ids))
    assert Image.open(tmp_path / "ids.png").mode == "I;16"
