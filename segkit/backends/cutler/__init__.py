"""CutLER (Wang et al., CVPR 2023): class-agnostic instance segmentation with the official
detectron2 checkpoints, run in plain PyTorch + torchvision (no detectron2).

``load(spec, weights=, config=, device=, dtype=)`` returns a :class:`CutLERSegmenter`; its
``predict(image, threshold=0.35, max_detections=None)`` gives an instance Result.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ...device import resolve_device, resolve_dtype
from ...errors import CheckpointError
from ...options import Option
from ...registry import ModelSpec
from ...result import Result
from ...weights import resolve
from ..base import Segmenter
from .checkpoint import read_state_dict
from .config import CfgNode, load_config
from .model import CutLERModel, build_model

__all__ = ["CutLERSegmenter", "CutLERModel", "build_model", "class_names", "load", "load_config"]


class CutLERSegmenter(Segmenter):
    """A loaded CutLER detector; thresholds follow CutLER's demo (keep scores strictly above)."""

    OPTIONS = (
        Option("threshold", "float", None, "Keep detections scoring above this (default: the model's, 0.35 as in "
               "CutLER's demo; replaces the config's SCORE_THRESH_TEST).", min=0, max=1),
        Option("max_detections", "int", None, "Keep at most this many detections per image (default: the "
               "config's TEST.DETECTIONS_PER_IMAGE).", min=1),
    )

    def __init__(self, spec: ModelSpec, model: CutLERModel, device, dtype, class_names: list[str]):
        super().__init__(spec, model, device, dtype)
        self.class_names = class_names

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
    return CutLERSegmenter(spec, model, device, dtype, class_names(cfg))


def class_names(cfg: CfgNode) -> list[str]:
    """'object' for CutLER's one class; COCO's names for 80-class COCO fine-tunes; else 'class k'."""
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if n == 1:
        return ["object"]
    datasets = cfg.DATASETS.TEST
    if n == 80 and datasets and str(datasets[0]).startswith("coco"):
        data = json.loads(resources.files("segkit").joinpath("labels", "coco_panoptic.json").read_text("utf-8"))
        things = [c["name"] for c in sorted(data["categories"], key=lambda c: c["index"]) if c["isthing"]]
        if len(things) == n:
            return things
    return [f"class {k}" for k in range(n)]
