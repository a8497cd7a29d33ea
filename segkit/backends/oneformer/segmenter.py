"""The OneFormer segmenter: load a transformers checkpoint, run the original pre/post-processing."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from ...device import resolve_dtype
from ...checkpoints import from_pretrained
from ...errors import CheckpointError, ConfigError, OptionError
from ...labels import LabelSet, load_labels
from ...registry import ModelSpec
from ...result import Result, boxes_from_masks
from ...weights import resolve
from ..base import Segmenter
from . import OPTIONS
from .processing import instance_inference, panoptic_inference, preprocess, semantic_inference
from .tasks import ExactTaskTokens, task_token_ids
from .upsample import MaskUpsampler


def _checkpoint_folder(spec: ModelSpec, weights) -> Path:
    path = resolve(spec, weights)
    folder = path.parent if path.is_file() else path
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder}: no config.json; OneFormer weights must be a transformers save_pretrained folder "
            "(config.json + model.safetensors)")
    return folder


def _model_config(folder: Path, config):
    """The checkpoint's OneFormerConfig, or the one ``config`` (a config.json or its folder) names."""
    from transformers import OneFormerConfig

    source = Path(config).expanduser() if config is not None else folder
    try:
        model_config = OneFormerConfig.from_pretrained(str(source))
    except Exception as exc:
        raise ConfigError(f"{source}: not a OneFormer config.json ({type(exc).__name__}); "
                          "pass the config.json of a transformers OneFormer checkpoint") from None
    if model_config.model_type != "oneformer":
        raise ConfigError(f"{source}: model_type is {model_config.model_type!r}, not 'oneformer'; "
                          "pass a OneFormer checkpoint")
    return model_config


def _build_model(folder: Path, model_config):
    """Load the weights; DiNAT backbones first get segkit's neighborhood attention."""
    if getattr(model_config.backbone_config, "model_type", None) == "dinat":
        from .dinat import patch_transformers_dinat

        patch_transformers_dinat()
    from transformers import OneFormerForUniversalSegmentation

    return from_pretrained(OneFormerForUniversalSegmentation, folder, what="OneFormer model (with this config.json)",
                           config=model_config)


def _class_labels(spec: ModelSpec, folder: Path, model_config) -> LabelSet:
    """The spec's shipped label set when it fits the checkpoint; warns (one line) where they disagree."""
    names = [model_config.id2label[i] for i in range(len(model_config.id2label))]
    if not spec.labels:
        return LabelSet.from_names(folder.name, names)
    shipped = load_labels(spec.labels)
    if len(names) != len(shipped):
        warnings.warn(
            f"{folder}: the checkpoint has {len(names)} classes but {spec.name} expects {len(shipped)} "
            f"({spec.labels}); using the checkpoint's class names, with every class treated as a thing",
            stacklevel=3)
        return LabelSet.from_names(folder.name, names)
    differ = [i for i, name in enumerate(names) if not shipped.matches(i, name)]
    if differ:
        i = differ[0]
        warnings.warn(
            f"{folder}: config.id2label differs from segkit's {spec.labels} labels for {len(differ)} of "
            f"{len(names)} classes (first: {i} is {names[i]!r} there, {shipped.names[i]!r} here); "
            "using segkit's labels", stacklevel=3)
    return shipped


def class_labels(spec: ModelSpec, *, weights=None, config=None) -> LabelSet:
    """The labels :func:`load` gives the model, from the checkpoint's config alone (for a driver
    that scores what remote workers predict: no weights are read)."""
    folder = _checkpoint_folder(spec, weights)
    return _class_labels(spec, folder, _model_config(folder, config))


def load(spec: ModelSpec, *, weights=None, config=None, device, dtype=None) -> OneFormerSegmenter:
    """Load a OneFormer checkpoint folder (``weights`` or the spec's hub repo) onto ``device``."""
    import torch

    folder = _checkpoint_folder(spec, weights)
    model_config = _model_config(folder, config)
    dtype = resolve_dtype(dtype, device, half_ok=True)
    model = _build_model(folder, model_config).eval()
    labels = _class_labels(spec, folder, model_config)
    task_ids = {task: torch.tensor([ids], dtype=torch.long)
                for task, ids in task_token_ids(folder, model_config.task_seq_len).items()}
    half = dtype in (torch.float16, torch.bfloat16)
    exact_tokens = ExactTaskTokens(model.model.task_encoder.task_mlp, task_ids) if half else None
    model.to(device=device, dtype=dtype)
    if exact_tokens is not None:
        exact_tokens.install(dtype, device)
    task_inputs = {task: ids.to(device) for task, ids in task_ids.items()}
    return OneFormerSegmenter(spec, model, device, dtype, labels=labels, task_inputs=task_inputs)


class OneFormerSegmenter(Segmenter):
    """A loaded OneFormer; ``predict(image, task=..., threshold=..., label_set=...)``.

    ``threshold`` is the original's object-mask threshold: for instances the demo's filter on the
    class probability, for panoptic the query-score cut (default: the dataset's value,
    ``threshold`` in models.yaml); semantic results do not use it.
    ``label_set`` keeps only the named classes (names, synonyms and case as in the label set);
    in a semantic ``label_map`` the pixels of other classes become -1, in a panoptic one 0.
    """

    OPTIONS = OPTIONS

    def __init__(self, spec, model, device, dtype, *, labels: LabelSet, task_inputs: dict):
        super().__init__(spec, model, device, dtype)
        self.labels = labels
        self.task_inputs = task_inputs

    @property
    def class_names(self) -> list[str]:
        return list(self.labels.names)

    def _option(self, key: str, default):
        return self.spec.options.get(key, default)

    def options(self, **given) -> dict:
        used = super().options(**given)
        if used["task"] not in self.spec.tasks:
            raise OptionError(f"{self.name}: task={used['task']!r} is not one of its tasks "
                              f"({', '.join(self.spec.tasks)})")
        if used["task"] == "semantic":
            used["threshold"] = None  # semantic results use no threshold
        elif used["threshold"] is None:
            used["threshold"] = 0.8
        return used

    def _predict(self, rgb: np.ndarray, task: str, threshold: float | None, label_set) -> Result:
        allowed = self._allowed_classes(label_set)
        started = time.perf_counter()
        class_logits, upsampler, resized_hw = self._run_model(rgb, task)
        model_s = time.perf_counter() - started
        if task == "semantic":
            result = self._semantic(class_logits, upsampler, allowed)
        elif task == "panoptic":
            result = self._panoptic(class_logits, upsampler, threshold, allowed)
        else:
            result = self._instance(class_logits, upsampler, threshold, allowed)
        result.meta.update(task=task, resized_size=list(resized_hw), padded_size=list(upsampler.padded_hw),
                           timings={"model_s": model_s, "postprocess_s": time.perf_counter() - started - model_s})
        return result

    def _allowed_classes(self, label_set) -> np.ndarray | None:
        if not label_set:
            return None
        names = [label_set] if isinstance(label_set, str) else list(label_set)
        try:
            indices = self.labels.resolve(names)
        except KeyError as exc:
            examples = ", ".join(n.strip() for n in self.labels.names[:6])
            raise OptionError(f"label set: {exc.args[0]!r} is not a class of {self.name} "
                              f"(classes such as {examples}, … {len(self.labels)} in all)") from None
        allowed = np.zeros(len(self.labels), dtype=bool)
        allowed[indices] = True
        return allowed

    def _run_model(self, rgb: np.ndarray, task: str):
        import torch

        pixels, resized_hw = preprocess(rgb, int(self._option("min_size_test", 800)),
                                        int(self._option("max_size_test", 1333)),
                                        int(self._option("size_divisibility", 32)))
        pixel_values = torch.from_numpy(pixels)[None].to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            outputs = self.model(pixel_values=pixel_values, task_inputs=self.task_inputs[task])
        class_logits = outputs.class_queries_logits[0].float()
        mask_logits = outputs.masks_queries_logits[0].float()
        upsampler = MaskUpsampler(mask_logits, pixels.shape[1:], resized_hw, rgb.shape[:2])
        return class_logits, upsampler, resized_hw

    def _common(self, classes) -> dict:
        classes = np.asarray(classes, dtype=np.int64)
        return {"class_names": self.class_names, "palette": self.labels.colors, "class_ids": classes,
                "category_ids": self.labels.category_ids[classes]}

    def _semantic(self, class_logits, upsampler, allowed) -> Result:
        import torch

        label_map, share_sums, pixel_counts = semantic_inference(class_logits, upsampler)
        present = np.flatnonzero(pixel_counts.numpy())
        if allowed is not None:
            present = present[allowed[present]]
            lut = torch.full((len(self.labels),), -1, dtype=torch.int32)
            lut[torch.from_numpy(present)] = torch.from_numpy(present).int()
            label_map = lut[label_map.long()]
        label_map = label_map.numpy()
        masks = _masks_of(label_map, present)
        scores = (share_sums.numpy()[present] / pixel_counts.numpy()[present]).astype(np.float32)
        return Result(kind="semantic", masks=masks, labels=[self.labels.names[c] for c in present], scores=scores,
                      boxes=boxes_from_masks(masks), label_map=label_map, is_thing=self.labels.isthing[present],
                      **self._common(present))

    def _panoptic(self, class_logits, upsampler, threshold, allowed) -> Result:
        id_map, segments = panoptic_inference(class_logits, upsampler, self.labels.isthing, threshold,
                                              float(self._option("overlap_threshold", 0.8)))
        id_map = id_map.numpy()
        if allowed is not None:
            dropped = [s.id for s in segments if not allowed[s.category_id]]
            segments = [s for s in segments if allowed[s.category_id]]
            if dropped:
                id_map[np.isin(id_map, dropped)] = 0
        masks = _masks_of(id_map, [s.id for s in segments])
        return Result(kind="panoptic", masks=masks, labels=[self.labels.names[s.category_id] for s in segments],
                      scores=[s.score for s in segments], boxes=boxes_from_masks(masks), label_map=id_map,
                      segment_ids=[s.id for s in segments], is_thing=np.array([s.isthing for s in segments], dtype=bool),
                      **self._common([s.category_id for s in segments]))

    def _instance(self, class_logits, upsampler, threshold, allowed) -> Result:
        top_k = int(self._option("detections_per_image", 100))
        found = instance_inference(class_logits, upsampler, self.labels.isthing, top_k, threshold, allowed)
        order = np.lexsort((found.classes, found.queries, -found.scores))
        masks = _reorder_in_place(found.masks, order)
        classes = found.classes[order]
        return Result(kind="instance", masks=masks, labels=[self.labels.names[c] for c in classes],
                      scores=found.scores[order], boxes=boxes_from_masks(masks), is_thing=np.ones(len(order), dtype=bool),
                      meta={"queries": found.queries[order].tolist()}, **self._common(classes))


def _masks_of(label_map: np.ndarray, values) -> np.ndarray:
    """One boolean mask per value of ``label_map``, written straight into one array."""
    masks = np.empty((len(values), *label_map.shape), dtype=bool)
    for mask, value in zip(masks, values):
        np.equal(label_map, value, out=mask)
    return masks


def _reorder_in_place(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``rows[:] = rows[order]`` with one row of scratch instead of a second copy of all masks."""
    placed = np.zeros(len(order), dtype=bool)
    for start in range(len(order)):
        if placed[start]:
            continue
        scratch = rows[start].copy()
        i = start
        while order[i] != start:
            rows[i] = rows[order[i]]
            placed[i] = True
            i = order[i]
        rows[i] = scratch
        placed[i] = True
    return rows
