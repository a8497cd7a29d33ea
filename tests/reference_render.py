"""segkit.render as it was before drawing moved to each segment's box, kept verbatim as the
specification of what the fast renderer must draw (tests/test_render_exact.py) and as the baseline of
benchmarks/render_speed.py."""

import numpy as np
from PIL import Image

from segkit import render
from segkit.render import segment_colors

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
