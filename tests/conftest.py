"""Shared test fixtures: reference data in tests/fixtures, offline hub, small helpers."""

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Reference data kept in the repository (each tests/fixtures/<name>/README.md says where it comes from)."""
    return FIXTURES


@pytest.fixture(scope="session")
def cutler_dir(fixtures_dir) -> Path:
    """Tiny CutLER checkpoints, configs, images and detectron2's outputs for them."""
    return fixtures_dir / "cutler"


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The photos shipped in examples/."""
    return REPO / "examples"


@pytest.fixture(scope="session")
def tiny_clipseg(tmp_path_factory) -> Path:
    """A tiny CLIPSeg folder (refined decoder) that ``segkit.load("clipseg", weights=...)`` loads."""
    from tiny_models import make_tiny_clipseg

    return make_tiny_clipseg(tmp_path_factory.mktemp("tiny_clipseg"))


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Keep the suite polite on a 2-core machine."""
    try:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    except ImportError:
        pass


# ---------------------------------------------------------------- neighborhood attention, brute force
# Legacy NATTEN's semantics spelled out position by position; test_neighborhood_attention.py and
# test_dinat_models.py check segkit's kernels and transformers' DiNAT against them.

def window_keys(length, kernel_size, dilation):
    """Brute force, per query: the K key positions along one axis and their bias-table indices (legacy NATTEN)."""
    import torch

    keys, bias_rows = [], []
    for i in range(length):
        group, inside = i % dilation, i // dilation
        group_length = len(range(group, length, dilation))
        start = min(max(inside - kernel_size // 2, 0), group_length - kernel_size)
        row = [(start + t) * dilation + group for t in range(kernel_size)]
        keys.append(row)
        bias_rows.append([kernel_size - 1 + (key - i) // dilation for key in row])
    return torch.tensor(keys), torch.tensor(bias_rows)


def reference_qk(query, key, rpb, kernel_size, dilation):
    rows, row_bias = window_keys(query.shape[2], kernel_size, dilation)
    cols, col_bias = window_keys(query.shape[3], kernel_size, dilation)
    windows = key[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # B, h, H, W, K, K, D
    scores = (query[:, :, :, :, None, None, :] * windows).sum(-1)
    if rpb is not None:
        scores = scores + rpb[:, row_bias[:, None, :, None], col_bias[None, :, None, :]]
    return scores.flatten(-2)


def reference_av(attn, value, kernel_size, dilation):
    rows, _ = window_keys(value.shape[2], kernel_size, dilation)
    cols, _ = window_keys(value.shape[3], kernel_size, dilation)
    windows = value[:, :, rows[:, None, :, None], cols[None, :, None, :]].flatten(4, 5)  # B, h, H, W, K*K, D
    return (attn[..., None] * windows).sum(-2)


# ---------------------------------------------------------------- CutLER intermediates, recorded from outside

class _RecordingPooler:
    """Stands in for one of the ROI heads' poolers (plain objects, not modules) and keeps the boxes it pools."""

    def __init__(self, pooler, calls: list):
        self.pooler, self.calls = pooler, calls

    def __call__(self, features, boxes):
        self.calls.append(boxes)
        return self.pooler(features, boxes)


def run_recording_intermediates(model, rgb, **options):
    """``model(rgb, **options)`` and the intermediate tensors the CutLER fixtures hold, under their names.

    Module inputs and outputs come from forward hooks (and from the poolers, wrapped for the call);
    the per-stage decoded boxes and the cascade's averaged probabilities are computed from those as
    detectron2 defines them (fixture README). The package itself carries no tracing code.
    """
    import torch

    from segkit.backends.cutler import boxes as box_ops

    found, rpn_maps, stage_outputs, box_pools, mask_pools = {}, [], [], [], []
    rpn, heads = model.proposal_generator, model.roi_heads
    stages = heads.stages()

    hooks = [
        model.backbone.register_forward_pre_hook(lambda module, args: found.update(backbone_input=args[0])),
        model.backbone.bottom_up.register_forward_hook(  # copied now: the FPN empties this dict
            lambda module, args, output: found.update({f"bottom_up_{k}": v for k, v in output.items()})),
        model.backbone.register_forward_hook(
            lambda module, args, output: found.update({f"fpn_{k}": v for k, v in output.items()})),
        rpn.register_forward_pre_hook(lambda module, args: found.update(image_size_resized=torch.tensor(args[1]))),
        rpn.rpn_head.register_forward_hook(lambda module, args, output: rpn_maps.append(output)),
        rpn.register_forward_hook(
            lambda module, args, output: found.update(rpn_proposals=output[0], rpn_proposal_logits=output[1])),
        heads.mask_head.register_forward_hook(lambda module, args, output: found.update(mask_logits=output)),
    ]
    hooks += [predictor.register_forward_hook(lambda module, args, output: stage_outputs.append(output))
              for _, predictor, _ in stages]
    box_pooler, mask_pooler = heads.box_pooler, heads.mask_pooler
    heads.box_pooler = _RecordingPooler(box_pooler, box_pools)
    heads.mask_pooler = _RecordingPooler(mask_pooler, mask_pools)
    try:
        detections = model(rgb, **options)
    finally:
        heads.box_pooler, heads.mask_pooler = box_pooler, mask_pooler
        for hook in hooks:
            hook.remove()

    assert len(rpn_maps) == len(rpn.in_features) and len(stage_outputs) == len(box_pools) == len(stages)
    for name, (objectness, deltas) in zip(rpn.in_features, rpn_maps):
        found[f"rpn_objectness_{name}"], found[f"rpn_deltas_{name}"] = objectness, deltas
    found["cell_anchors"] = torch.stack(rpn.cell_anchors)
    for k, ((logits, deltas), proposals, (_, _, weights)) in enumerate(zip(stage_outputs, box_pools, stages)):
        found.update({f"stage{k}_proposals": proposals, f"stage{k}_cls_logits": logits.float(),
                      f"stage{k}_box_deltas": deltas,
                      f"stage{k}_pred_boxes": box_ops.apply_deltas(deltas, proposals, weights)})
    if heads.cascade:
        found["cascade_avg_probs"] = sum(found[f"stage{k}_cls_logits"].softmax(-1) for k in range(len(stages)))
        found["cascade_avg_probs"] /= len(stages)
    (found["boxes_resized"],) = mask_pools
    return detections, found


@pytest.fixture(scope="session")
def run_recording():
    """``run_recording(model, rgb, **options)`` -> (detections, intermediates) for a CutLER model."""
    return run_recording_intermediates


# ---------------------------------------------------------------- one tiny model per backend
# The contract test and the engine tests (CLI, runner) run every backend in the registry through
# these; a backend added without one here fails test_backends_contract.py.

def tiny_model_args(backend: str, folder: Path) -> dict:
    """``segkit.load`` keyword arguments (weights=, config=) for a tiny model of ``backend``."""
    if backend == "clipseg":
        from tiny_models import make_tiny_clipseg

        return {"weights": make_tiny_clipseg(folder / "clipseg")}
    if backend == "cutler":
        return {"weights": FIXTURES / "cutler" / "cascade_tiny.pth", "config": FIXTURES / "cutler" / "cascade_tiny.yaml"}
    if backend == "oneformer":
        from segkit.labels import load_labels
        from tiny_models import tiny_oneformer

        tiny_oneformer(load_labels("coco_panoptic").names, seed=1).save_pretrained(folder / "oneformer")
        return {"weights": folder / "oneformer"}
    raise KeyError(f"no tiny model for backend {backend!r}: add one to tests/conftest.py tiny_model_args")


# Predict options that make each tiny random model produce segments.
TINY_OPTIONS = {
    "clipseg": {"prompts": ["cat", "grass"], "threshold": 0.5},
    "cutler": {"threshold": 0.0, "max_detections": 5},
    "oneformer": {"task": "panoptic", "threshold": 0.0},
}
