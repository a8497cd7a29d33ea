"""What writing the results costs on 12 MP photos: the model alone against the whole CLI run, per image.

A batch of four 4000x3000 photos (the example photos, upscaled) through each backend with real-size
architectures and random weights (speed does not depend on the values): CLIPSeg rd64-refined with 3
prompts (and 8, for the record), CutLER cascade R50-FPN forced to 100 instances, OneFormer COCO DiNAT-L
panoptic. Random OneFormer weights make one segment of the whole photo (their mask features are flat, so
one query wins every pixel) where a trained model makes a few dozen: the model runs in full (its time,
post-processing included, is the model's), then its result is swapped for the 40-segment panoptic tiling
of benchmarks/render_speed.py, so the outputs written are a trained model's size. For each: seconds per image of the API's ``predict`` (the model's own time), seconds per image
of the CLI's run with its default outputs (start-up and model loading excluded: the runner's own time
from the first image to the last file), the overhead between them, and the peak memory of each; with the
overlay as PNG (the default) and as JPEG (``--overlay-format jpg``).

    python benchmarks/output_speed.py [--threads 2] [--photos 4] [--only clipseg,cutler,oneformer]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from peak_memory import PeakMemory  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tokenizer and model builders the tests use
SIZE = (4000, 3000)


def twelve_mp_photos(folder: Path, count: int) -> list[Path]:
    """The example photos upscaled to 4000x3000 JPEGs (quality 92, like a phone's)."""
    from PIL import Image

    sources = sorted((REPO / "examples").glob("*.jpg"))
    paths = []
    for k in range(count):
        with Image.open(sources[k % len(sources)]) as image:
            path = folder / f"photo{k}.jpg"
            image.convert("RGB").resize(SIZE, Image.BICUBIC).save(path, quality=92)
            paths.append(path)
    return paths


def clipseg_weights(folder: Path) -> dict:
    from clipseg_prompts import rd64_refined_config
    from tiny_models import save_clipseg, write_clip_vocab

    words = ("a", "cat", "grass", "sky", "the", "cup", "of", "coffee", "person", "rocket", "table", "smoke")
    config = rd64_refined_config()
    config.text_config.vocab_size = write_clip_vocab(folder, words)
    save_clipseg(folder, config, image_size=352)
    return {"weights": folder}


def cutler_weights(folder: Path) -> dict:
    from cutler_speed import random_weights

    path = folder / "cascade.pth"
    random_weights(path, seed=0)
    return {"weights": path}


def oneformer_weights(folder: Path) -> dict:
    from oneformer_backbones import dinat_l, oneformer

    from segkit.backends.oneformer.dinat import patch_transformers_dinat
    from segkit.labels import load_labels

    patch_transformers_dinat()
    model = oneformer(dinat_l())
    names = load_labels("coco_panoptic").names
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    model.save_pretrained(folder)
    return {"weights": folder}


CASES = {  # name: (backend, weights builder, predict options)
    "clipseg-3": ("clipseg-rd64-refined", clipseg_weights, {"prompts": ["a cat", "grass", "the sky"]}),
    "clipseg-8": ("clipseg-rd64-refined", clipseg_weights,
                  {"prompts": ["a cat", "grass", "the sky", "a rocket", "a cup of coffee", "a person", "a table",
                               "smoke"]}),
    "cutler": ("cutler-cascade", cutler_weights, {"threshold": 0.0, "max_detections": 100}),
    "oneformer": ("oneformer-coco-dinat-l", oneformer_weights, {"task": "panoptic"}),
}


BUILT: dict[str, dict] = {}  # model -> segkit.load keyword arguments of its random weights


class TrainedLikePanoptic:
    """The segmenter with its result swapped for render_speed's 40-segment panoptic tiling (see above)."""

    def __init__(self, segmenter):
        from render_speed import panoptic_result

        self.segmenter, self.result = segmenter, panoptic_result()

    def __getattr__(self, name):
        return getattr(self.segmenter, name)

    def predict(self, image, **options):
        return self.predict_batch([image], **options)[0]

    def predict_batch(self, images, **options):
        import copy

        swapped = []
        for real in self.segmenter.predict_batch(images, **options):
            result = copy.copy(self.result)  # the arrays are shared; meta (model, options) is the model's
            result.meta = real.meta
            swapped.append(result)
        return swapped


def measure(name: str, paths: list[Path], work: Path, overlay_formats: list[str]) -> list[dict]:
    """The model alone once, then the runner's whole loop once per overlay format."""
    import segkit
    from segkit.runner import run
    from segkit.writer import OutputWriter

    model, build, options = CASES[name]
    if model not in BUILT:
        folder = work / f"weights-{model}"
        folder.mkdir()
        BUILT[model] = build(folder)
    seg = segkit.load(model, device="cpu", **BUILT[model])
    if name == "oneformer":
        seg = TrainedLikePanoptic(seg)
    seg.predict(paths[0], **options)  # warm-up
    with PeakMemory() as model_memory:
        start = time.perf_counter()
        counts = [len(seg.predict(path, **options)) for path in paths]
        model_s = (time.perf_counter() - start) / len(paths)
    rows = []
    for overlay_format in overlay_formats:
        writer = OutputWriter(work / f"out-{name}-{overlay_format}", inputs=paths, overlay_format=overlay_format)
        with PeakMemory() as run_memory:
            start = time.perf_counter()
            errors = [o.error for o in run(seg, paths, options, writer) if not o.ok]  # results dropped as the CLI does
            writer.finish()
            run_s = (time.perf_counter() - start) / len(paths)
        writer.close()
        assert not errors, errors
        rows.append({"overlay": overlay_format, "model_s": model_s, "run_s": run_s, "segments": counts,
                     "model_mib": model_memory.mib, "run_mib": run_memory.mib})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--overlay-format", default="png,jpg", help="overlay formats to run (comma-separated)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = twelve_mp_photos(work, args.photos)
        print(f"{args.photos} photos of {SIZE[0]}x{SIZE[1]}, {args.threads} threads, default outputs")
        print(f"{'case':<11} {'overlay':>7} {'model s/img':>11} {'CLI run s/img':>13} {'overhead':>9} "
              f"{'segments':>9} {'peak MiB model':>15} {'peak MiB run':>13}")
        for name in args.only.split(","):
            for r in measure(name, paths, work, args.overlay_format.split(",")):
                print(f"{name:<11} {r['overlay']:>7} {r['model_s']:>11.2f} {r['run_s']:>13.2f} "
                      f"{r['run_s'] - r['model_s']:>+9.2f} {round(np.mean(r['segments'])):>9} "
                      f"{r['model_mib']:>15.0f} {r['run_mib']:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
