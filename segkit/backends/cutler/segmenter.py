"""The CutLER segmenter: build the detector from a config, load the checkpoint, run it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device, resolve_dtype
from ...errors import CheckpointError
from ...labels import load_labels
from ...registry import ModelSpec
from ...result import Result
from ...weights import resolve
from ..base import Segmenter
from . import OPTIONS
from .checkpoint import read_state_dict
from .config import CfgNode, load_config
from .model import CutLERModel, build_model


class CutLERSegmenter(Segmenter):
    """A loaded CutLER detector; thresholds follow CutLER's demo (keep scores strictly above)."""

    OPTIONS = OPTIONS

    def __init__(self, spec: ModelSpec, model: CutLERModel, device, dtype, class_names: list[str],
                 category_ids: list[int]):
        super().__init__(spec, model, device, dtype)
        self.class_names = class_names
        self.category_ids = np.asarray(category_ids, dtype=np.int64)

    @property
    def config(self) -> CfgNode:
        return self.model.cfg

    def options(self, **given) -> dict:
        used = super().options(**given)
        if used["threshold"] is None:
            used["threshold"] = float(self.config.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
        if used["max_detections"] is None:
            used["max_detections"] = int(self.config.TEST.DETECTIONS_PER_IMAGE)
        return used

    def _predict(self, rgb: np.ndarray, threshold: float, max_detections: int) -> Result:
        with torch.inference_mode():
            found = self.model(rgb, score_thresh=float(threshold), max_detections=int(max_detections))
        classes = found.classes.cpu().numpy()
        return Result(
            kind="instance",
            masks=found.masks.cpu().numpy(),
            labels=[self.class_names[c] for c in classes],
            scores=found.scores.cpu().numpy(),
            boxes=found.boxes.cpu().numpy(),
            class_ids=classes,
            category_ids=self.category_ids[classes],
            class_names=list(self.class_names),
            meta={"timings": found.timings},
        )


def load(spec: ModelSpec, *, weights=None, config=None, device=None, dtype=None) -> CutLERSegmenter:
    """Build the detector of ``config`` (default: the spec's built-in config) with the spec's weights.

    ``weights`` may be a local .pth (else the spec's URL, downloaded into segkit's cache); loading
    is strict and refuses checkpoints that need pickled code. ``dtype`` defaults to float32;
    float16 is for CUDA.
    """
    cfg = load_config(config if config is not None else spec.options["config"])
    device = resolve_device("auto") if device is None else torch.device(device)
    dtype = resolve_dtype(dtype, device, half_ok=False)
    path = Path(resolve(spec, weights))
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass the detectron2 .pth file itself with --weights")
    model = build_model(cfg, read_state_dict(path), source=path, device=device, dtype=dtype)
    return CutLERSegmenter(spec, model, device, dtype, *classes(cfg))


def classes(cfg: CfgNode) -> tuple[list[str], list[int]]:
    """Class names and dataset category ids: 'object' (id 1) for CutLER's one class; COCO's thing
    names and ids for 80-class COCO fine-tunes; else 'class k' (id k + 1)."""
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if n == 1:
        return ["object"], [1]
    datasets = cfg.DATASETS.TEST
    if n == 80 and datasets and str(datasets[0]).startswith("coco"):
        coco = load_labels("coco_panoptic")
        things = np.flatnonzero(coco.isthing)
        if len(things) == n:
            return [coco.names[i] for i in things], coco.category_ids[things].tolist()
    return [f"class {k}" for k in range(n)], list(range(1, n + 1))
