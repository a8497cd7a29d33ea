"""One renderer for every Result: overlays, heatmaps and the CLIPSeg-style grid.

Every drawing function is ``f(image, result, ...)`` (as supervision's annotators are): backends
never draw, and this module never runs a model. Drawing works on each segment's bounding box with
integer labels and look-up tables, never on full-frame float copies: a 12 MP overlay draws 7-16x
faster than that did, pixel for pixel the same (benchmarks/render_speed.py).
"""

from __future__ import annotations

import colorsys
from contextlib import contextmanager

import numpy as np

from . import fonts
from .result import Result

_BAND_PIXELS = 1 << 20  # row bands of about a megapixel bound the temporaries of full-frame passes


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



def mask_boxes(result: Result) -> np.ndarray:
    """Tight integer boxes ``(x0, y0, x1, y1)`` (right/bottom exclusive) of the result's masks; zeros
    for empty masks. Searched inside each segment's own box (widened by a pixel, see rle.box_slices:
    a Result's box holds its mask), so a small segment of a 12 MP photo costs its box, not the frame."""
    from .rle import box_slices

    height, width = result.image_size
    boxes = np.zeros((len(result), 4), dtype=np.int64)
    for i, mask in enumerate(result.masks):
        rows, cols = box_slices(result.boxes[i], height, width)
        crop = mask[rows, cols]
        ys = np.flatnonzero(crop.any(axis=1))
        if len(ys):
            xs = np.flatnonzero(crop[ys[0]:ys[-1] + 1].any(axis=0))
            boxes[i] = (xs[0] + cols.start, ys[0] + rows.start, xs[-1] + 1 + cols.start, ys[-1] + 1 + rows.start)
    return boxes


def _window(box) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return slice(y0, y1), slice(x0, x1)


def _row_bands(height: int, width: int):
    step = max(1, _BAND_PIXELS // max(width, 1))
    for start in range(0, height, step):
        yield slice(start, min(height, start + step))


def _to_uint8(canvas: np.ndarray) -> np.ndarray:
    """A float32 canvas to 8 bits, rounding halves up (the one conversion every path shares)."""
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _blend(values: np.ndarray, color, alpha) -> np.ndarray:
    """One tint step on float32 ``values`` (N, 3): the formula every pixel of the overlay goes through."""
    out = np.empty_like(values)
    out[...] = (1 - alpha) * values + alpha * color
    return out


def _tint(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, painted: list[int], colors: np.ndarray,
          alpha) -> np.ndarray:
    """The image with each segment of ``painted`` blended over it in that order.

    Equal to blending a float32 copy of the frame segment after segment (the reference), without
    float work on the frame: a pixel's result depends only on its 8-bit value and on the stack of
    segments over it. While segments are painted, each pixel carries the id of its stack (0: none;
    integer work on each segment's box), and each stack has the float32 blend of all 256 values per
    channel; one table look-up per pixel then gives the result. Masks so ragged that their stacks
    pass _MAX_STACKS fall back to blending a float32 frame.
    """
    height, width = image.shape[:2]
    stack = np.zeros((height, width), dtype=np.uint16)
    states = np.empty((64, 256, 3), dtype=np.float32)  # states[s][v]: value v after stack s's blends
    states[0] = np.arange(256, dtype=np.float32)[:, None]
    count = 1
    for done, i in enumerate(painted):
        window = _window(boxes[i])
        mask, ids = masks[i][window], stack[window]
        if count <= _EVERY_STACK_A_PARENT:  # stack s under the mask becomes count + s: one pass, no search
            parents = np.arange(count)
            np.add(ids, count, out=ids, where=mask)
        elif not ids.any(where=mask):  # nothing under this segment yet: one new stack
            parents = np.zeros(1, dtype=np.int64)
            np.copyto(ids, count, where=mask)
        else:
            marked = np.where(mask, ids, count)  # ``count`` marks pixels outside the mask
            parents = np.flatnonzero(np.bincount(marked.ravel(), minlength=count + 1)[:count])
            if count + len(parents) > _MAX_STACKS:
                return _tint_in_float(_apply_states(image, stack, states), masks, boxes, painted[done:], colors,
                                      alpha)
            relabel = np.arange(count + 1, dtype=np.uint16)
            relabel[parents] = np.arange(count, count + len(parents))
            np.copyto(ids, relabel[marked], where=mask)
        while count + len(parents) > len(states):
            states = np.concatenate([states, np.empty_like(states)])
        blended = _blend(states[parents].reshape(-1, 3), colors[i], alpha)
        states[count:count + len(parents)] = blended.reshape(-1, 256, 3)
        count += len(parents)
    windows = [_window(boxes[i]) for i in painted]
    if sum((rows.stop - rows.start) * (cols.stop - cols.start) for rows, cols in windows) >= height * width:
        windows = None  # boxes as large as the frame: one pass over it
    return _apply_states(image, stack, _to_uint8(states[:count]), windows)


_MAX_STACKS = 8192  # tables of at most 8192 x 256 x 3 float32 (24 MiB); ids fit in uint16
# While there are this few stacks, every one is taken as a parent of the next segment's (a stack
# no pixel has costs a 3 KiB table), which spares finding the stacks under a large mask.
_EVERY_STACK_A_PARENT = 16


def _apply_states(image: np.ndarray, stack: np.ndarray, states: np.ndarray, windows=None) -> np.ndarray:
    """Each pixel's value looked up in its stack's table (uint8 or float32), a band of rows at a time.
    With ``windows`` ((rows, cols) slices holding every stacked pixel) only there: the other pixels
    are in no stack and keep the image's values."""
    height, width = stack.shape
    if windows is None:
        out = np.empty((height, width, 3), dtype=states.dtype)
        windows = [(slice(0, height), slice(0, width))]
    else:
        out = image.astype(states.dtype, copy=True)
    flat = [np.ascontiguousarray(states[:, :, c]).reshape(-1) for c in range(3)]
    for rows, cols in windows:
        for band in _row_bands(rows.stop - rows.start, cols.stop - cols.start):
            band = slice(rows.start + band.start, rows.start + band.stop)
            base = stack[band, cols].astype(np.intp) << 8
            for c in range(3):
                out[band, cols, c] = np.take(flat[c], base | image[band, cols, c])
    return out


def _tint_in_float(canvas: np.ndarray, masks: np.ndarray, boxes: np.ndarray, painted: list[int],
                   colors: np.ndarray, alpha) -> np.ndarray:
    """The reference's float32 blending, on each segment's box, for the rest of ``painted``."""
    for i in painted:
        window = _window(boxes[i])
        mask, region = masks[i][window], canvas[window]
        region[mask] = _blend(region[mask], colors[i], alpha)
    return _to_uint8(canvas)


def _contours(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a pixel outside it (4-neighbourhood; the frame's edge is not
    outside, so a mask cut by the edge is not outlined along it)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return np.bitwise_xor(mask, inner, out=inner)


def _outline(out: np.ndarray, masks: np.ndarray, boxes: np.ndarray, painted: list[int], colors: np.ndarray):
    """Draw each segment's contour in its colour, in paint order, on its box grown by one pixel (so
    the box's edge sees the outside)."""
    height, width = out.shape[:2]
    for i in painted:
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        window = slice(max(0, y0 - 1), min(height, y1 + 1)), slice(max(0, x0 - 1), min(width, x1 + 1))
        out[window][_contours(masks[i][window])] = colors[i]


def _caption_anchor(mask: np.ndarray, box) -> tuple[int, int]:
    """(x, y) of the mask pixel nearest the mask's centroid, the first in row-major order among equals.

    Rows are searched outward from the centroid's row and the search stops once a row's distance
    alone exceeds the best found, so a large mask costs a few rows rather than all its pixels.
    """
    window = _window(box)
    crop = mask[window]
    y0, x0 = window[0].start, window[1].start
    rows = np.arange(y0, y0 + crop.shape[0])
    cols = np.arange(x0, x0 + crop.shape[1])
    row_counts = np.count_nonzero(crop, axis=1)
    col_counts = np.count_nonzero(crop, axis=0)
    count = int(row_counts.sum())
    # Exact integer sums, then one division: the same float64 centroid as the mean of the pixel coordinates.
    cy = np.float64(int(rows @ row_counts)) / count
    cx = np.float64(int(cols @ col_counts)) / count
    dy2, dx2 = (rows - cy) ** 2, (cols - cx) ** 2
    search = np.argsort(dy2, kind="stable")
    best = (np.inf, 0, 0)
    start, size = 0, 8
    while start < len(search) and dy2[search[start]] <= best[0]:
        chunk = search[start:start + size]
        dist = np.where(crop[chunk], dy2[chunk, None] + dx2, np.inf)
        nearest = dist.min()
        if nearest <= best[0]:
            r, c = np.nonzero(dist == nearest)
            best = min(best, min((nearest, int(rows[chunk[a]]), int(cols[b])) for a, b in zip(r, c)))
        start, size = start + size, size * 2
    return best[2], best[1]


def _caption_text(result: Result, i: int) -> str:
    if result.kind in ("instance", "panoptic", "prompted") and np.isfinite(result.scores[i]):
        return f"{result.labels[i]} {result.scores[i]:.2f}"
    return result.labels[i]


def _font_size(height: int) -> int:
    return max(11, min(28, height // 40))


class _Text:
    """Fonts of one drawing (one size): Pillow's default font, another only for text it lacks.

    Fonts are opened per drawing, not shared, so drawings may run in parallel threads.
    """

    def __init__(self, size: int):
        from PIL import Image, ImageDraw, ImageFont

        self.size = size
        self.default = ImageFont.load_default(size=size)
        self.measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        self._opened: dict[fonts.FontFile, object] = {}

    def font(self, text: str):
        from PIL import ImageFont

        found = fonts.pil_font_file(text)
        if found is None:
            return self.default
        if found not in self._opened:
            try:
                self._opened[found] = ImageFont.truetype(found[0], self.size, index=found[1])
            except OSError:  # listed by fontconfig but unreadable by FreeType: boxes, not a failed image
                self._opened[found] = self.default
        return self._opened[found]

    def bbox(self, text: str, xy=(0, 0), font=None):
        """Pillow's text box of ``text`` drawn at ``xy``, in its own font unless ``font`` is given."""
        return self.measure.textbbox(xy, text, font=font or self.font(text))


@contextmanager
def _patch(out: np.ndarray, boxes):
    """A PIL drawing on the window of ``out`` that holds every box of ``boxes`` (image coordinates,
    grown by a pixel), written back on exit: text is drawn without a full-size PIL copy of the frame.
    Yields (draw, x0, y0), or None where the window lies outside the image."""
    from PIL import Image, ImageDraw

    height, width = out.shape[:2]
    x0 = max(0, min(b[0] for b in boxes) - 1)
    y0 = max(0, min(b[1] for b in boxes) - 1)
    x1 = min(width, max(b[2] for b in boxes) + 2)
    y1 = min(height, max(b[3] for b in boxes) + 2)
    if x1 <= x0 or y1 <= y0:
        yield None
        return
    patch = Image.fromarray(out[y0:y1, x0:x1])
    yield ImageDraw.Draw(patch), x0, y0
    out[y0:y1, x0:x1] = np.asarray(patch)


def _label_box(out: np.ndarray, xy, text: str, color, text_fonts: _Text):
    """A filled box with ``text``, centred on ``xy`` and kept inside the image."""
    height, width = out.shape[:2]
    left, top, right, bottom = text_fonts.bbox(text)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0, xy[0] - w // 2), max(0, width - w))
    y = min(max(0, xy[1] - h // 2), max(0, height - h))
    text_xy = (x + 3 - left, y + 2 - top)
    with _patch(out, [(x, y, x + w, y + h), text_fonts.bbox(text, text_xy)]) as patch:
        if patch is None:
            return
        draw, ox, oy = patch
        draw.rectangle([x - ox, y - oy, x + w - ox, y + h - oy], fill=tuple(int(c) for c in color))
        draw.text((text_xy[0] - ox, text_xy[1] - oy), text, fill=_text_color(color), font=text_fonts.font(text))


def _legend(out: np.ndarray, entries, text_fonts: _Text):
    """A white box at the top left with one swatch and name per label."""
    left, top, right, bottom = text_fonts.bbox("Ag", font=text_fonts.default)
    row = bottom - top
    name_tops = []
    for name, _ in entries:
        font = text_fonts.font(name)
        if font is text_fonts.default:
            name_tops.append(top)
        else:  # another script's font: the row fits its glyphs too
            name_box = text_fonts.bbox("Ag" + name, font=font)
            row = max(row, name_box[3] - name_box[1])
            name_tops.append(name_box[1])
    row += 6
    width = max(text_fonts.bbox(name)[2] for name, _ in entries) + row + 14
    frame = (4, 4, 4 + width, 8 + row * len(entries))
    places = [(8 + k * row, (12 + row - top, 8 + k * row - name_top)) for k, name_top in enumerate(name_tops)]
    with _patch(out, [frame] + [text_fonts.bbox(name, xy) for (name, _), (_, xy) in zip(entries, places)]) as patch:
        if patch is None:
            return
        draw, ox, oy = patch
        draw.rectangle([frame[0] - ox, frame[1] - oy, frame[2] - ox, frame[3] - oy], fill=(255, 255, 255),
                       outline=(0, 0, 0))
        for (name, color), (y, (tx, ty)) in zip(entries, places):
            draw.rectangle([8 - ox, y - oy, 8 + row - 6 - ox, y + row - 6 - oy], fill=tuple(int(c) for c in color),
                           outline=(0, 0, 0))
            draw.text((tx - ox, ty - oy), name, fill=(0, 0, 0), font=text_fonts.font(name))


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
    Captions and legend draw any script an installed font has (see segkit.fonts).
    Returns a new uint8 RGB array of the image's size.
    """
    image = np.asarray(image, dtype=np.uint8)
    colors = segment_colors(result)
    order = np.argsort(result.scores, kind="stable") if result.kind != "semantic" else range(len(result))
    boxes = mask_boxes(result)
    painted = [int(i) for i in order if boxes[i, 2] > boxes[i, 0]]
    out = _tint(image, result.masks, boxes, painted, colors, alpha)
    if contours:
        _outline(out, result.masks, boxes, painted, colors)
    text_fonts = _Text(_font_size(image.shape[0]))
    if captions:
        for i in painted:
            _label_box(out, _caption_anchor(result.masks[i], boxes[i]), _caption_text(result, i), colors[i],
                       text_fonts)
    if legend and len(result):
        _legend(out, _legend_entries(result, colors), text_fonts)
    return out


def heatmap_gray(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap as 8-bit grayscale (0 -> 0, 1 -> 255), converted a band of rows at a time."""
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim < 2:
        return np.clip(np.round(heat * 255), 0, 255).astype(np.uint8)
    gray = np.empty(heat.shape, dtype=np.uint8)
    for rows in _row_bands(heat.shape[0], int(np.prod(heat.shape[1:]))):
        band = heat[rows] * 255
        np.round(band, out=band)
        gray[rows] = np.clip(band, 0, 255, out=band)
    return gray


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
        font = fonts.matplotlib_font(label)  # None: matplotlib's default font has every glyph
        if font is None:
            ax.set_title(label)
        else:
            ax.set_title(label, fontproperties=font)
    fig.tight_layout()
    return fig


def label_image(result: Result):
    """The label map as a PIL image: 8-bit palette PNG of class indices for semantic (and
    combined prompted) results, 16-bit segment ids for instance and panoptic results."""
    from PIL import Image

    if result.kind in ("semantic", "prompted"):
        if result.label_map is None:
            return None
        img = Image.fromarray(np.ascontiguousarray(result.label_map.astype(np.uint8)))  # mode L; P below
        if result.kind == "semantic":
            colors = class_palette(result)
        else:  # prompted: 0 is background, i + 1 is prompt i
            colors = np.vstack([np.zeros((1, 3), np.uint8), segment_colors(result)])
        flat = np.zeros((256, 3), np.uint8)
        flat[: min(256, len(colors))] = colors[:256]
        img.putpalette(flat.flatten().tolist())
        return img
    if result.label_map is not None:
        return Image.fromarray(result.label_map.astype(np.uint16))
    ids = np.zeros(result.image_size, dtype=np.uint16)
    segment_ids = result.segment_ids.astype(np.uint16)  # wraps as the int32 map's conversion would
    boxes = mask_boxes(result)
    for i in np.argsort(result.scores, kind="stable"):  # best segment wins overlaps
        window = _window(boxes[i])
        np.copyto(ids[window], segment_ids[i], where=result.masks[i][window])
    return Image.fromarray(ids)
