"""detectron2 checkpoints: read safely, check strictly against the model, say what a misfit looks like."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...checkpoints import SHOWN_KEYS, torch_load
from ...errors import CheckpointError, PickledCodeError
from .backbone import BLOCKS_PER_STAGE


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a detectron2 checkpoint (``{"model": state_dict}``), of a bare state dict, or of
    a .safetensors file (what a checkpoint with pickled code converts to)."""
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        data = torch_load(path)
    except PickledCodeError:
        raise
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; pass a detectron2 .pth file such as cutler_cascade_final.pth") from None
    state = data.get("model", data) if isinstance(data, dict) else data
    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: holds no state dict of tensors (expected {{'model': state_dict}}); "
                              "pass a detectron2 .pth checkpoint")
    if all(k.startswith("module.") for k in state):  # saved from a (Distributed)DataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def describe_state_dict(state: dict[str, torch.Tensor]) -> str:
    """What architecture a detectron2 state dict looks like, from its key names and shapes."""
    res4_blocks = {int(m.group(1)) for k in state if (m := re.match(r"backbone\.bottom_up\.res4\.(\d+)\.", k))}
    if not res4_blocks:
        return "not a ResNet-FPN R-CNN checkpoint"
    depths = [d for d, blocks in BLOCKS_PER_STAGE.items() if blocks[2] == len(res4_blocks)]
    backbone = f"R{depths[0]}-FPN" if depths else f"ResNet-FPN with {len(res4_blocks)} res4 blocks"
    stages = {int(m.group(1)) for k in state if (m := re.match(r"roi_heads\.box_predictor\.(\d+)\.", k))}
    if stages:
        kind, predictor = f"Cascade Mask R-CNN ({len(stages)} stages)", "roi_heads.box_predictor.0.cls_score.weight"
    else:
        kind, predictor = "Mask R-CNN", "roi_heads.box_predictor.cls_score.weight"
    if not any(k.startswith("roi_heads.mask_head.") for k in state):
        kind = kind.replace("Mask R-CNN", "Faster R-CNN (no mask head)")
    classes = ""
    if predictor in state:
        n = state[predictor].shape[0] - 1
        classes = f", {n} class{'es' if n != 1 else ''}"
    return f"{kind} {backbone}{classes}"


def check_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], path: Path, model_name: str):
    """Raise a one-line CheckpointError unless the keys and shapes are exactly the model's."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if mismatched:
        shown = [f"{k}: file {list(state[k].shape)} vs model {list(expected[k])}" for k in mismatched]
        problems.append(f"{len(mismatched)} shape mismatches ({_first(shown)})")
    raise CheckpointError(
        f"{path} does not fit {model_name}: {'; '.join(problems)}. The file looks like "
        f"{describe_state_dict(state)}; choose the matching --model or --config")


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN_KEYS]) + (", ..." if len(keys) > SHOWN_KEYS else "")
