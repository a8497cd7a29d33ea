"""OneFormer's own test-time pre- and post-processing (SHI-Labs/OneFormer on detectron2).

Not transformers' ``OneFormerProcessor``/``post_process_*``, which round sizes differently, do not
pad to 32, resize probabilities instead of cropped logits and use other panoptic and instance
rules. The rules here are spelled out in ``shared/fixtures/oneformer_post/README.md``.

Every inference below walks the image in bands of rows (see ``upsample.MaskUpsampler``), so
memory grows with the output, not with queries x pixels; results do not depend on the band size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..image_input import normalize_and_pad, resize_bilinear, shortest_edge_size
from .upsample import MaskUpsampler

# Same in every OneFormer config (RGB order, 0-255 scale).
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def preprocess(rgb: np.ndarray, short_edge: int, max_size: int, divisibility: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The backbone's input (3 x Hp x Wp float32) and the resized size (h, w) it holds."""
    size = shortest_edge_size(rgb.shape[0], rgb.shape[1], short_edge, max_size)
    return normalize_and_pad(resize_bilinear(rgb, size), PIXEL_MEAN, PIXEL_STD, divisibility), size


def semantic_inference(class_logits: torch.Tensor, upsampler: MaskUpsampler, band_rows: int | None = None):
    """Per-pixel class (argmax of ``sum_q P[q, c] * sigmoid(M[q])``) and per-class score sums.

    Returns ``label_map`` (H x W int32, CPU), ``share_sums`` (C float64: the sum over each class's
    pixels of its share of the pixel's total class score) and ``pixel_counts`` (C int64).
    """
    num_classes = class_logits.shape[-1] - 1
    probs = class_logits.float().softmax(-1)[:, :num_classes]
    class_mass = probs.sum(1)  # sum_c S[c] = sum_q class_mass[q] * sigmoid(M[q])
    label_map = torch.empty(upsampler.image_hw, dtype=torch.int32)
    share_sums = torch.zeros(num_classes, dtype=torch.float64)
    pixel_counts = torch.zeros(num_classes, dtype=torch.int64)
    for start, stop in upsampler.bands(upsampler.num_queries + num_classes, band_rows):
        masks = upsampler.rows(start, stop).sigmoid_().flatten(1)
        # Pixel-major (pixels x classes) so the max runs along contiguous rows; same sums as
        # the original's einsum("qc,qhw->chw").
        scores = masks.T @ probs
        best, labels = scores.max(1)
        share = best.double() / (masks.T @ class_mass).double()
        labels = labels.cpu()
        share_sums += torch.bincount(labels, weights=share.cpu(), minlength=num_classes)
        pixel_counts += torch.bincount(labels, minlength=num_classes)
        label_map[start:stop] = labels.view(stop - start, -1)
    return label_map, share_sums, pixel_counts


@dataclass
class PanopticSegment:
    id: int
    category_id: int
    isthing: bool
    score: float
    query: int


def panoptic_inference(class_logits: torch.Tensor, upsampler: MaskUpsampler, isthing: np.ndarray,
                       object_mask_threshold: float, overlap_threshold: float, band_rows: int | None = None):
    """OneFormer's panoptic rule: id map (H x W int32, 0 = void, CPU) and its segments in id order.

    Queries whose best class is not "no object" and whose score beats the threshold compete per
    pixel by ``score * sigmoid(mask)``; a query keeps the pixels it wins where its own mask is
    >= 0.5, unless it won less than ``overlap_threshold`` of its mask; stuff classes merge.
    """
    num_classes = class_logits.shape[-1] - 1
    scores, labels = class_logits.float().softmax(-1).max(-1)
    kept = torch.nonzero((labels != num_classes) & (scores > object_mask_threshold)).flatten()
    id_map = torch.zeros(upsampler.image_hw, dtype=torch.int32)
    if len(kept) == 0:
        return id_map, []
    kept_scores = scores[kept]
    k = len(kept)
    won_area = torch.zeros(k, dtype=torch.int64)
    mask_area = torch.zeros(k, dtype=torch.int64)
    segment_area = torch.zeros(k, dtype=torch.int64)
    for start, stop in upsampler.bands(k, band_rows):
        masks = upsampler.rows(start, stop, kept).sigmoid_()
        owner = (kept_scores[:, None, None] * masks).max(0).indices  # first index on ties, like argmax
        confident = masks.gather(0, owner[None])[0] >= 0.5
        mask_area += (masks >= 0.5).sum((1, 2)).cpu()
        owner, confident = owner.cpu(), confident.cpu()
        won_area += torch.bincount(owner.flatten(), minlength=k)
        # Provisionally: 1 + the winning kept query where it is confident; renumbered below.
        provisional = torch.where(confident, owner.int() + 1, 0)
        segment_area += torch.bincount(provisional.flatten(), minlength=k + 1)[1:]
        id_map[start:stop] = provisional

    segment_of_query = torch.zeros(k + 1, dtype=torch.int32)
    segments: list[PanopticSegment] = []
    stuff_segment: dict[int, int] = {}
    for i in range(k):
        won, area, seg = int(won_area[i]), int(mask_area[i]), int(segment_area[i])
        if won == 0 or area == 0 or seg == 0 or won / area < overlap_threshold:
            continue
        label = int(labels[kept[i]])
        thing = bool(isthing[label])
        if not thing and label in stuff_segment:
            segment_of_query[i + 1] = stuff_segment[label]
            continue
        segment = PanopticSegment(len(segments) + 1, label, thing, float(kept_scores[i]), int(kept[i]))
        segments.append(segment)
        segment_of_query[i + 1] = segment.id
        if not thing:
            stuff_segment[label] = segment.id
    for start, stop in upsampler.bands(1, band_rows):
        id_map[start:stop] = segment_of_query[id_map[start:stop].long()]
    return id_map, segments


@dataclass
class Instances:
    """Instance masks (N x H x W bool, CPU) with their score, class and source query."""

    masks: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    queries: np.ndarray


def instance_inference(class_logits: torch.Tensor, upsampler: MaskUpsampler, isthing: np.ndarray, top_k: int,
                       threshold: float | None = None, allowed: np.ndarray | None = None,
                       band_rows: int | None = None) -> Instances:
    """OneFormer's instance rule, in its output order (``topk(sorted=False)``).

    The ``top_k`` best (query, class) pairs of thing classes; ``threshold`` is the demo's filter on
    the class probability (``None``: evaluation mode, no filter); ``allowed`` (C bools) keeps only
    some classes. Mask = logit > 0; score = class probability x mean mask probability inside it.
    """
    num_classes = class_logits.shape[-1] - 1
    probs = class_logits.float().softmax(-1)[:, :num_classes]
    values, index = probs.flatten().topk(min(top_k, probs.numel()), sorted=False)
    queries, classes = (index // num_classes).cpu(), (index % num_classes).cpu()
    values = values.cpu()
    keep = torch.tensor(np.asarray(isthing, dtype=bool))[classes]
    if threshold is not None:
        keep &= values > threshold
    if allowed is not None:
        keep &= torch.tensor(np.asarray(allowed, dtype=bool))[classes]
    queries, classes, values = queries[keep], classes[keep], values[keep]

    height, width = upsampler.image_hw
    masks = np.zeros((len(queries), height, width), dtype=bool)
    if len(queries) == 0:
        return Instances(masks, np.zeros(0, np.float32), classes.numpy(), queries.numpy())
    sources, slot = torch.unique(queries, return_inverse=True)
    prob_sums = torch.zeros(len(sources), dtype=torch.float64)
    pixel_counts = torch.zeros(len(sources), dtype=torch.int64)
    for start, stop in upsampler.bands(len(sources), band_rows):
        logits = upsampler.rows(start, stop, sources.to(upsampler.logits.device))
        inside = logits > 0
        # Sigmoids above 0.5 are multiples of 2**-24, so float64 sums of them are exact in any order.
        prob_sums += (logits.sigmoid_() * inside).sum((1, 2), dtype=torch.float64).cpu()
        pixel_counts += inside.sum((1, 2)).cpu()
        masks[:, start:stop] = inside.cpu().numpy()[slot.numpy()]
    mask_scores = (prob_sums / (pixel_counts.double() + 1e-6)).float()
    scores = values * mask_scores[slot]
    return Instances(masks, scores.numpy(), classes.numpy(), queries.numpy())
