"""One renderer for every Result: overlays, heatmaps and the CLIPSeg-style grid.

Every drawing function is ``f(image, result, ...)`` (as supervision's annotators are): backends
never draw, and this module never runs a model.
"""

from __future__ import annotations

import colorsys

import numpy as np

from .result import Result


def distinct_colors(n: int, offset: int = 0) -> np.ndarray:
    """``n`` deterministic, well-separated RGB colours (golden-ratio hue walk)."""
    colors = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        k = i + offset
        hue = (k * 0.618033988749895) % 1.0
        sat = 0.65 + 0.3 * ((k * 7) % 3) / 2
        val = 0.95 - 0.25 * ((k * 5) % 2)
        colors[i] = [round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val)]
    return colors


def class_palette(result: Result) -> np.ndarray | None:
    """Colours by class index: the dataset's own palette, or distinct colours for a semantic result
    of a model without one (so the overlay and S_labels.png agree); None where classes have none."""
    if result.palette is not None:
        return np.asarray(result.palette, dtype=np.uint8)
    if result.kind == "semantic":
        return distinct_colors(max(len(result.class_names), int(result.class_ids.max(initial=-1)) + 1))
    return None


def segment_colors(result: Result) -> np.ndarray:
    """One RGB colour per segment: by class where classes have colours (semantic segments and
    stuff), shifted per instance for things; one distinct colour per segment otherwise."""
    n = len(result)
    colors = distinct_colors(n)
    palette = class_palette(result)
    if palette is None or n == 0:
        return colors
    for i, cid in enumerate(result.class_ids):
        if not 0 <= cid < len(palette):
            continue
        base = np.asarray(palette[cid], dtype=np.int16)
        per_instance = result.kind == "instance" or (
            result.kind == "panoptic" and result.is_thing is not None and result.is_thing[i])
        if per_instance:
            # Same hue family as the class, shifted per instance so neighbours stay apart.
            jitter = (distinct_colors(1, offset=i)[0].astype(np.int16) - 128) // 4
            base = np.clip(base + jitter, 0, 255)
        colors[i] = base
    return colors


def _font(height: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=max(11, min(28, height // 40)))


def _contours(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a pixel outside it (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _text_color(rgb) -> tuple:
    r, g, b = (int(c) for c in rgb)
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _legend_entries(result: Result, colors: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(name, colour) once per label, in segment order."""
    seen = {}
    for i, label in enumerate(result.labels):
        seen.setdefault(label, colors[i])
    return list(seen.items())


def overlay(image: np.ndarray, result: Result, alpha: float = 0.5, contours: bool = True,
            captions: bool = True, legend: bool = True) -> np.ndarray:
    """The image with every segment tinted, outlined and captioned; a legend of the labels.

    Segments are painted from lowest to highest score so the most confident one is on top.
    Returns a new uint8 RGB array of the image's size.
    """
    from PIL import Image, ImageDraw

    image = np.asarray(image, dtype=np.uint8)
    canvas = image.astype(np.float32)
    colors = segment_colors(result)
    order = np.argsort(result.scores, kind="stable") if result.kind != "semantic" else range(len(result))
    for i in order:
        mask = result.masks[i]
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colors[i]
    if contours:
        for i in order:
            canvas[_contours(result.masks[i])] = colors[i]
    out = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = _font(image.shape[0])
    if captions:
        for i in order:
            ys, xs = np.nonzero(result.masks[i])
            if len(ys) == 0:
                continue
            text = result.labels[i]
            if result.kind in ("instance", "panoptic", "prompted") and np.isfinite(result.scores[i]):
                text = f"{text} {result.scores[i]:.2f}"
            # Anchor at the mask pixel nearest the mask's centroid, so the caption sits on it.
            k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
            _label_box(draw, (int(xs[k]), int(ys[k])), text, colors[i], font, out.size)
    if legend and len(result):
        _legend(draw, _legend_entries(result, colors), font)
    return np.asarray(out)


def _label_box(draw, xy, text, color, font, size):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0, xy[0] - w // 2), max(0, size[0] - w))
    y = min(max(0, xy[1] - h // 2), max(0, size[1] - h))
    draw.rectangle([x, y, x + w, y + h], fill=tuple(int(c) for c in color))
    draw.text((x + 3 - left, y + 2 - top), text, fill=_text_color(color), font=font)


def _legend(draw, entries, font):
    left, top, right, bottom = draw.textbbox((0, 0), "Ag", font=font)
    row = bottom - top + 6
    width = max(draw.textbbox((0, 0), name, font=font)[2] for name, _ in entries) + row + 14
    draw.rectangle([4, 4, 4 + width, 8 + row * len(entries)], fill=(255, 255, 255), outline=(0, 0, 0))
    for k, (name, color) in enumerate(entries):
        y = 8 + k * row
        draw.rectangle([8, y, 8 + row - 6, y + row - 6], fill=tuple(int(c) for c in color), outline=(0, 0, 0))
        draw.text((12 + row - top, y - top), name, fill=(0, 0, 0), font=font)


def heatmap_gray(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap as 8-bit grayscale (0 -> 0, 1 -> 255)."""
    return np.clip(np.round(np.asarray(heatmap, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def grid_figure(image: np.ndarray, result: Result, cmap: str = "viridis"):
    """A matplotlib figure like CLIPSeg's sample program: the image, then one heatmap per prompt
    titled with the prompt. Returns the figure (the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = result.heatmaps if result.heatmaps is not None else result.masks.astype(np.float32)
    n = len(panels) + 1
    height, width = image.shape[:2]
    fig = Figure(figsize=(3 * n, 3 * height / max(width, 1) + 0.5))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax in axes:
        ax.axis("off")
    axes[0].imshow(image)
    axes[0].set_title("image")
    for ax, heat, label in zip(axes[1:], panels, result.labels):
        ax.imshow(heat, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(label)
    fig.tight_layout()
    return fig


def label_image(result: Result):
    """The label map as a PIL image: 8-bit palette PNG of class indices for semantic (and
    combined prompted) results, 16-bit segment ids for instance and panoptic results."""
    from PIL import Image

    if result.kind in ("semantic", "prompted"):
        if result.label_map is None:
            return None
        lm = np.ascontiguousarray(result.label_map.astype(np.uint8))
        img = Image.frombytes("P", (lm.shape[1], lm.shape[0]), lm.tobytes())
        if result.kind == "semantic":
            colors = class_palette(result)
        else:  # prompted: 0 is background, i + 1 is prompt i
            colors = np.vstack([np.zeros((1, 3), np.uint8), segment_colors(result)])
        flat = np.zeros((256, 3), np.uint8)
        flat[: min(256, len(colors))] = colors[:256]
        img.putpalette(flat.flatten().tolist())
        return img
    ids = result.label_map
    if ids is None:
        ids = np.zeros(result.image_size, dtype=np.int32)
        for i in np.argsort(result.scores, kind="stable"):  # best segment wins overlaps
            ids[result.masks[i]] = result.segment_ids[i]
    return Image.fromarray(ids.astype(np.uint16))
