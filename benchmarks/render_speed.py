"""Drawing and encoding a 12 MP photo's outputs: segkit.render against the whole-frame renderer it
replaced, side by side in one process.

A 4000x3000 photo (the example astronaut scaled up, with sensor-like noise so PNGs compress like a
phone photo's) and three synthetic results shaped like the backends' (the renderer never runs a model):
  cutler    100 overlapping instance masks of many sizes (CutLER's default of 100 detections)
  panoptic  40 segments tiling the frame, things and stuff, a dataset palette (OneFormer)
  clipseg   3 prompts with full-size heatmaps, masks and a combined label map (CLIPSeg)
For each: seconds for the overlay (old and new, and that the pixels are identical), the label image
and the heatmaps; then PNG encoding of each overlay, label map and a heatmap: Pillow at zlib levels 1
and 6 (``optimize`` off) against segkit.png with ISA-L's deflate and with zlib (its fallback).

    flock /tmp/segkit-bench.lock python benchmarks/render_speed.py [--repeat 3] [--cases cutler,panoptic,clipseg]
        [--png-only]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

from peak_memory import PeakMemory  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
H, W = 3000, 4000

from segkit import render  # noqa: E402
from segkit.result import Result, boxes_from_masks  # noqa: E402


# The renderer before the speed-up (the reference), as tests/test_render_exact.py specifies it.
sys.path.insert(0, str(REPO / "tests"))
from reference_render import reference_heatmap_gray as old_heatmap_gray  # noqa: E402
from reference_render import reference_label_image as old_label_image  # noqa: E402
from reference_render import reference_overlay as old_overlay  # noqa: E402


def photo() -> np.ndarray:
    from PIL import Image

    small = Image.open(REPO / "examples" / "astronaut.jpg").convert("RGB")
    big = np.asarray(small.resize((W, W), Image.BICUBIC))[(W - H) // 2:(W - H) // 2 + H]
    noise = np.random.default_rng(0).normal(0, 1.5, big.shape)
    return np.clip(big + noise, 0, 255).astype(np.uint8)


def cutler_result() -> Result:
    """100 class-agnostic ellipses, from a fifth of the frame down to a few hundred pixels, overlapping."""
    rng = np.random.default_rng(1)
    masks = np.zeros((100, H, W), bool)
    for k in range(100):
        ry, rx = (rng.uniform(0.01, 0.25) * np.array([H, W]) * rng.uniform(0.6, 1.4, 2)).astype(int) + 8
        cy, cx = rng.integers(0, H), rng.integers(0, W)
        y0, y1, x0, x1 = max(0, cy - ry), min(H, cy + ry + 1), max(0, cx - rx), min(W, cx + rx + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        masks[k, y0:y1, x0:x1] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    scores = np.sort(rng.uniform(0.05, 1.0, 100))[::-1]
    return Result("instance", masks, ["fg"] * 100, scores, boxes_from_masks(masks), class_ids=np.zeros(100))


def panoptic_result() -> Result:
    """40 segments tiling the frame (a jittered Voronoi diagram, computed at a quarter of the size)."""
    rng = np.random.default_rng(2)
    h, w = H // 4, W // 4
    seeds = rng.integers(0, [h, w], (40, 2))
    yy, xx = np.mgrid[:h, :w]
    yy = yy + rng.normal(0, 4, (h, w))
    small = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf)
    for k, (sy, sx) in enumerate(seeds):
        dist = (yy - sy) ** 2 + (xx - sx) ** 2
        small[dist < best] = k + 1
        best = np.minimum(best, dist)
    label_map = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)
    masks = np.stack([label_map == k for k in range(1, 41)])
    class_ids = rng.integers(0, 133, 40)
    names = [f"class{c}" for c in range(133)]
    return Result("panoptic", masks, [names[c] for c in class_ids], rng.uniform(0.5, 1, 40), boxes_from_masks(masks),
                  label_map=label_map, class_ids=class_ids, segment_ids=np.arange(1, 41), is_thing=class_ids < 80,
                  palette=rng.integers(0, 256, (133, 3)).astype(np.uint8), class_names=names)


def clipseg_result() -> Result:
    """3 prompts: smooth heatmaps, masks above 0.4, the combined label map."""
    yy, xx = np.ogrid[:H, :W]
    heat = np.empty((3, H, W), np.float32)
    for k, (cy, cx, s) in enumerate([(1200, 1500, 9e5), (2000, 2800, 1.5e6), (600, 3400, 4e5)]):
        heat[k] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s)
    masks = heat > 0.4
    label_map = np.where(masks.any(0), heat.argmax(0) + 1, 0).astype(np.int32)
    return Result("prompted", masks, ["a person", "a rocket", "the sky"], heat.max(axis=(1, 2)),
                  boxes_from_masks(masks), heatmaps=heat, label_map=label_map)


CASES = {"cutler": cutler_result, "panoptic": panoptic_result, "clipseg": clipseg_result}


def best_of(fn, repeat):
    """Fastest of ``repeat`` runs (the machine is shared), the last value and the peak memory (MiB)."""
    times, peak = [], 0.0
    for _ in range(repeat):
        with PeakMemory() as mem:
            start = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - start)
        peak = max(peak, mem.mib)
    return min(times), value, peak


def _pillow(level):
    def encode(image, buffer):
        from PIL import Image

        image = image if isinstance(image, Image.Image) else Image.fromarray(image)
        image.save(buffer, format="PNG", compress_level=level, optimize=False)
    return encode


def _segkit(deflate):
    def encode(image, buffer):
        import zlib

        from segkit import png

        saved = png._deflate, png.LEVEL
        if deflate == "zlib":
            png._deflate, png.LEVEL = zlib, 1
        try:
            png.write_png(image, buffer)
        finally:
            png._deflate, png.LEVEL = saved
    return encode


PNG_ENCODERS = [("Pillow 1", _pillow(1)), ("Pillow 6", _pillow(6)), ("segkit isal", _segkit("isal")),
                ("segkit zlib", _segkit("zlib"))]


def png_seconds(image, encode, repeat):
    def run():
        buffer = io.BytesIO()
        encode(image, buffer)
        return buffer.getbuffer().nbytes
    seconds, size, _ = best_of(run, repeat)
    return seconds, size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each new step (old steps run once)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--png-only", action="store_true", help="skip the old renderer (PNG table only)")
    args = parser.parse_args()
    image = photo()
    print(f"photo {W}x{H}; seconds per image, fastest of {args.repeat} (old: one run); peak = extra RSS")
    print(f"{'case':9} {'step':10} {'old s':>7} {'new s':>7} {'ratio':>6} {'old MiB':>8} {'new MiB':>8}  identical")
    overlays, label_maps, heatmaps = {}, {}, {}
    for name in args.cases.split(","):
        result = CASES[name]()
        coverage = sum(np.count_nonzero(m) for m in result.masks) / (H * W)
        print(f"{name:9} {len(result)} segments covering {coverage:.1f} frames in all")
        if args.png_only:
            overlays[name], label_maps[name] = render.overlay(image, result), render.label_image(result)
            if result.heatmaps is not None:
                heatmaps[name] = render.heatmap_gray(result.heatmaps[0])
            continue
        old_s, old_over, old_mib = best_of(lambda: old_overlay(image, result), 1)
        new_s, new_over, new_mib = best_of(lambda: render.overlay(image, result), args.repeat)
        same = np.array_equal(old_over, new_over)
        print(f"{name:9} {'overlay':10} {old_s:7.3f} {new_s:7.3f} {old_s / new_s:6.1f} {old_mib:8.0f} {new_mib:8.0f}"
              f"  {same}")
        old_s, old_lab, _ = best_of(lambda: old_label_image(result), 1)
        new_s, new_lab, _ = best_of(lambda: render.label_image(result), args.repeat)
        same = np.array_equal(np.asarray(old_lab), np.asarray(new_lab))
        result_map = result.label_map
        if result.kind in ("instance", "panoptic") and result_map is not None:
            result.label_map = None  # the map a backend without one gets: built from the masks
            old_b, _, _ = best_of(lambda: old_label_image(result), 1)
            new_b, built, _ = best_of(lambda: render.label_image(result), args.repeat)
            same = same and np.array_equal(np.asarray(built), np.asarray(old_lab))
            result.label_map = result_map
            print(f"{name:9} {'labels*':10} {old_b:7.3f} {new_b:7.3f} {old_b / new_b:6.1f} {'':8} {'':8}  (from masks)")
        print(f"{name:9} {'labels':10} {old_s:7.3f} {new_s:7.3f} {old_s / new_s:6.1f} {'':8} {'':8}  {same}")
        if result.heatmaps is not None:
            old_s, old_heat, _ = best_of(lambda: [old_heatmap_gray(h) for h in result.heatmaps], 1)
            new_s, new_heat, _ = best_of(lambda: [render.heatmap_gray(h) for h in result.heatmaps], args.repeat)
            same = all(np.array_equal(a, b) for a, b in zip(old_heat, new_heat))
            print(f"{name:9} {'heatmaps':10} {old_s:7.3f} {new_s:7.3f} {old_s / new_s:6.1f} {'':8} {'':8}  {same}")
            heatmaps[name] = new_heat[0]
        overlays[name], label_maps[name] = new_over, new_lab
        del result

    print("\nPNG encoding: seconds and MB per image")
    targets = [(f"{n} overlay", overlays[n]) for n in overlays] + [(f"{n} labels", label_maps[n]) for n in label_maps]
    targets += [(f"{n} heatmap", heatmaps[n]) for n in heatmaps]
    print(f"{'image':17}" + "".join(f"{name + ' s':>15}{'MB':>6}" for name, _ in PNG_ENCODERS))
    for label, target in targets:
        row = [png_seconds(target, encode, args.repeat) for _, encode in PNG_ENCODERS]
        print(f"{label:17}" + "".join(f"{s:15.3f}{b / 1e6:6.2f}" for s, b in row)
              + f"   Pillow 1 / segkit isal: {row[0][0] / row[2][0]:.1f}x the time")


if __name__ == "__main__":
    main()
