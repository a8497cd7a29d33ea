"""Scoring a model on a dataset in one go: run it over the ground truth's images (through segkit's
runner, or the Ray engine), write its predictions (so they can be re-scored or inspected), and
say what to score.

Predictions are matched to ground-truth images by the source image each S.json records, so renamed
stems (``S-1``) still match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EvaluationInputError
from .inputs import read_json

SAVE = {"instance": ("json",), "panoptic": ("json", "panoptic"), "semantic": ("json",)}


@dataclass
class Predicted:
    """What the run left: each ground-truth image id (or label file) with its S.json, and failures."""

    json_files: dict = field(default_factory=dict)  # ground-truth image id (or GT label path) -> S.json path
    label_maps: dict = field(default_factory=dict)  # GT label path -> <stem>_trainids.png (semantic)
    panoptic_json: Path | None = None  # the batch's panoptic.json (panoptic)
    failures: list[str] = field(default_factory=list)
    out_dir: Path | None = None


@dataclass
class Predictor:
    """A model as scoring needs it, on either engine: its declared option names, its class labels
    (None for backends without a fixed set), where its weights came from, and ``run(paths,
    options, writer, batch_size, progress)``, which yields the runner's Outcomes in input order."""

    options: set
    labels: object
    source: dict
    run: Callable


def local_predictor(segmenter) -> Predictor:
    """A loaded segmenter, run by the local runner."""
    from ..runner import run

    def outcomes(paths, options, writer, batch_size, progress):
        return run(segmenter, paths, options, writer, batch_size=batch_size, progress=progress)

    return Predictor({o.name for o in segmenter.OPTIONS}, getattr(segmenter, "labels", None), segmenter.source,
                     outcomes)


def ray_predictor(model: str, *, weights=None, device="auto", address=None, workers=None,
                  gpus_per_worker: float = 0) -> Predictor:
    """``model`` run by the Ray engine (segkit.ray.run): its weights resolved once, here, and its
    labels read from the checkpoint's config; the model itself loads on the workers only."""
    import importlib

    from .. import ray as ray_engine
    from ..registry import BACKENDS, get_spec

    ray_engine.require_ray()
    spec = get_spec(model)
    package = importlib.import_module(BACKENDS[spec.backend])
    path, source = ray_engine.resolve_weights(model, weights)
    labels = package.class_labels(spec, weights=path) if hasattr(package, "class_labels") else None
    load_kwargs = {"weights": path, "config": None, "device": device, "dtype": None}

    def outcomes(paths, options, writer, batch_size, progress):
        return ray_engine.run(model, load_kwargs, paths, options, writer, batch_size=batch_size, address=address,
                              workers=workers, gpus_per_worker=gpus_per_worker, progress=progress,
                              show_progress=False)

    return Predictor({o.name for o in package.OPTIONS}, labels, source, outcomes)


def dataset_images(gt_json, images_dir, limit: int | None = None) -> list[tuple[object, Path]]:
    """(image id, path) of the ground truth's images found in ``images_dir``, in the JSON's order."""
    gt = read_json(gt_json, "a COCO JSON with images")
    if not isinstance(gt, dict) or not isinstance(gt.get("images"), list):
        raise EvaluationInputError(f"{gt_json}: no 'images' list; pass the COCO JSON of the ground truth")
    found = []
    for image in gt["images"]:
        path = Path(images_dir) / str(image["file_name"])
        if not path.is_file():
            raise EvaluationInputError(f"{path}: image {image['id']} of {gt_json} is not in --images {images_dir}")
        found.append((image["id"], path))
    return found[:limit] if limit else found


def label_images(gt_label_files, images_dir, image_suffix: str = "", gt_suffix: str = "",
                 limit: int | None = None) -> list[tuple[Path, Path]]:
    """(ground-truth label file, image) pairs for a semantic layout: the image with the label file's
    stem (less the layout's suffix, plus the image suffix) anywhere under ``images_dir``."""
    images = {}
    for path in sorted(Path(images_dir).rglob("*")):
        if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
            images.setdefault(path.stem, path)
    pairs = []
    for gt in gt_label_files:
        stem = gt.stem.removesuffix(gt_suffix) if gt_suffix else gt.stem
        image = images.get(stem + image_suffix) or images.get(stem)
        if image is None:
            raise EvaluationInputError(f"{gt}: no image named {stem + image_suffix}.* under --images {images_dir}")
        pairs.append((gt, image))
    return pairs[:limit] if limit else pairs


def predict(predictor: Predictor, items, task: str, out_dir, *, batch_size: int = 1, train_ids=None,
            categories=None, progress=None) -> Predicted:
    """Run ``predictor`` over ``items`` ((key, image path) pairs) and write its predictions to ``out_dir``.

    ``categories`` (the ground truth's category ids) keeps only those classes where the backend can
    (OneFormer's ``label_set``), so a dataset of a few of the model's classes is scored on them.
    For semantic scoring ``train_ids`` (model class index -> the ground truth's train id, 255 for none)
    also writes ``<stem>_trainids.png`` beside each S.json: the label map in the ground truth's numbering.
    """
    from ..png import write_png
    from ..writer import OutputWriter

    out_dir = Path(out_dir)
    keys = {str(path): key for key, path in items}
    options = {"task": task} if "task" in predictor.options else {}
    labels = predictor.labels
    if categories is not None and "label_set" in predictor.options and labels is not None:
        options["label_set"] = [name for name, c in zip(labels.names, labels.category_ids) if int(c) in categories]
    writer = OutputWriter(out_dir, save=SAVE[task], inputs=[path for _, path in items],
                          model_info={"weights": predictor.source})
    predicted = Predicted(out_dir=out_dir)
    try:
        for outcome in predictor.run([path for _, path in items], options, writer, batch_size, progress):
            if not outcome.ok:
                predicted.failures.append(outcome.error)
                continue
            json_file = next(p for p in outcome.files if p.suffix == ".json")
            key = keys[str(outcome.source)]
            predicted.json_files[key] = json_file
            if train_ids is not None:
                mapped = _in_train_ids(outcome.result, train_ids)
                name = json_file.name[: -len(".json")] + "_trainids.png"
                predicted.label_maps[key], = writer.out.write_all({name: lambda p, m=mapped: write_png(m, p)})
        writer.finish()
        if writer.panoptic_json is not None:
            predicted.panoptic_json = out_dir / writer.panoptic_json
    finally:
        writer.close()
    return predicted


def _in_train_ids(result, train_ids: np.ndarray) -> np.ndarray:
    """A semantic result's label map (model class indices, -1 for none) in the ground truth's train ids."""
    lut = np.append(train_ids, 255).astype(np.uint8)  # index -1 -> 255
    return lut[result.label_map]


def train_id_table(class_category_ids, classes) -> np.ndarray:
    """Model class index -> ground-truth train id, matching by category id (255 where the ground truth
    has no such category)."""
    by_category = {c: train_id for train_id, c in enumerate(classes.category_ids)}
    return np.array([by_category.get(int(c), 255) for c in class_category_ids], dtype=np.int64)
