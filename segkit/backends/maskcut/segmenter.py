"""The MaskCut segmenter: DINO keys, CutLER's NCut rounds, the optional CRF (see the package docstring)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

from ...checkpoints import from_pretrained
from ...errors import CheckpointError, ConfigError, OptionError, first_line
from ...registry import ModelSpec
from ...result import Result, boxes_from_masks
from ..base import Segmenter
from . import OPTIONS
from . import crf as crf_step
from .dino import DINO_LAYER_NORM_EPS, last_block_keys
from .ncut import image_masks, ncut_rounds
from .preprocess import model_input, pixel_values, square_resize

CLASS_NAMES = ["object"]
POOLER = (r"^pooler\.",)  # a ViT saved with its pooler still has every weight MaskCut needs
_crf_warning_shown = False


class MaskCutSegmenter(Segmenter):
    """A DINO ViT (transformers ``ViTModel``) plus MaskCut's NCut rounds and optional CRF."""

    OPTIONS = OPTIONS

    @property
    def patch_size(self) -> int:
        return int(self.model.config.patch_size)

    def options(self, **given) -> dict:
        """``crf`` None means "when pydensecrf is importable" (one warning line when it is not)."""
        global _crf_warning_shown
        used = super().options(**given)
        if used["crf"] is None:
            used["crf"] = crf_step.available()
            if not used["crf"] and not _crf_warning_shown:
                _crf_warning_shown = True
                warnings.warn(f"MaskCut runs without its CRF (pydensecrf is not installed), so the masks are "
                              f"coarser; to refine them: {crf_step.INSTALL_HINT}", stacklevel=4)
        elif used["crf"] and not crf_step.available():
            raise OptionError(f"crf=True needs pydensecrf, which is not installed: {crf_step.INSTALL_HINT}; "
                              "or pass crf=False")
        return used

    def keys(self, square_rgb: np.ndarray):
        """The last block's keys (C, h*w) for the squared image and its patch grid (h, w)."""
        import torch

        pixels = pixel_values(model_input(square_rgb, self.patch_size)).to(self.device, self.dtype)
        with torch.inference_mode():
            keys = last_block_keys(self.model, pixels).float()
        return keys, (pixels.shape[2] // self.patch_size, pixels.shape[3] // self.patch_size)

    def _predict(self, rgb: np.ndarray, tau: float, num_masks: int, fixed_size: int, crf: bool) -> Result:
        timings = {}
        start = time.perf_counter()
        square = square_resize(rgb, fixed_size)
        keys, grid = self.keys(square)
        timings["vit_s"] = time.perf_counter() - start

        start = time.perf_counter()
        masks = image_masks(ncut_rounds(keys, grid, tau, num_masks), fixed_size)
        timings["ncut_s"] = time.perf_counter() - start

        if crf:
            start = time.perf_counter()
            masks = [crf_step.refine(square, mask).mask for mask in masks]
            timings["crf_s"] = time.perf_counter() - start
        height, width = rgb.shape[:2]
        photo_masks = [crf_step.to_photo_size(mask, height, width) for mask in masks]
        photo_masks = np.array([m for m in photo_masks if m.any()], dtype=bool).reshape(-1, height, width)
        n = len(photo_masks)
        return Result(kind="instance", masks=photo_masks, labels=CLASS_NAMES * n, scores=np.ones(n),
                      boxes=boxes_from_masks(photo_masks), class_ids=np.zeros(n), class_names=list(CLASS_NAMES),
                      meta={"timings": timings, "crf": bool(crf)})


def load(spec: ModelSpec, *, weights=None, config=None, device, dtype=None) -> MaskCutSegmenter:
    """Load a DINO ViT folder (``weights`` or the spec's hub repo) with DINO's LayerNorm eps (1e-6).

    ``dtype`` 'auto' stays float32 even on CUDA: the masks hinge on cosines crossing ``tau``.
    """
    from ...device import resolve_dtype
    from ...weights import resolve

    if config is not None:
        raise ConfigError(f"{config}: MaskCut reads its config from the weights folder; drop the config option")
    folder = Path(resolve(spec, weights))
    torch_dtype = resolve_dtype(dtype, device, half_ok=False)
    model = _load_vit(folder, torch_dtype)
    return MaskCutSegmenter(spec, model.to(device).eval(), device, torch_dtype)


def _load_vit(folder: Path, torch_dtype):
    """transformers' ViTModel from ``folder``, refused in one line unless every tensor fits."""
    from transformers import ViTConfig, ViTModel

    hint = "pass a transformers ViT folder such as a snapshot of facebook/dino-vitb8"
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: MaskCut weights must be a ViT model folder (config.json and "
                              f"model.safetensors or pytorch_model.bin), not a single file; {hint}")
    try:
        settings = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: no readable config.json ({first_line(exc)}); {hint}") from None
    if settings.get("model_type") != "vit":
        raise CheckpointError(f"{folder}: config.json says model_type {settings.get('model_type')!r}, not 'vit'; "
                              f"MaskCut needs a DINO ViT; {hint}")
    model_config = ViTConfig.from_dict({**settings, "layer_norm_eps": DINO_LAYER_NORM_EPS})
    return from_pretrained(ViTModel, folder, what="DINO ViT (MaskCut)", ignore_unexpected=POOLER, config=model_config,
                           add_pooling_layer=False, attn_implementation="sdpa", dtype=torch_dtype)
