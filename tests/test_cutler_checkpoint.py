"""Strict checkpoint loading: full-size models have exactly the official keys, misfits are named."""

import argparse
import json

import pytest
import torch

from segkit.backends.cutler.config import load_config
from segkit.backends.cutler.model import CutLERModel, build_model
from segkit.backends.cutler.checkpoint import describe_state_dict, read_state_dict
from segkit.errors import CheckpointError


def _meta_state(cfg):
    with torch.device("meta"):
        return CutLERModel(cfg).state_dict()


@pytest.mark.parametrize("config, manifest", [
    ("cascade_mask_rcnn_R_50_FPN", "manifest_cascade_r50fpn"),
    ("mask_rcnn_R_50_FPN", "manifest_mrcnn_r50fpn"),
])
def test_full_size_models_have_the_official_keys_and_shapes(cutler_dir, config, manifest):
    state = _meta_state(load_config(config))
    expected = json.loads((cutler_dir / f"{manifest}.json").read_text())
    assert {k: list(v.shape) for k, v in state.items()} == expected
    details = json.loads((cutler_dir / f"{manifest}.details.json").read_text())["keys"]
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in state.items()} == \
        {k: d["dtype"] for k, d in details.items()}


@pytest.fixture(scope="module")
def cascade_state(cutler_dir):
    return read_state_dict(cutler_dir / "cascade_tiny.pth")


@pytest.fixture(scope="module")
def cascade_cfg(cutler_dir):
    return load_config(cutler_dir / "cascade_tiny.yaml")


def _load(cfg, state):
    return build_model(cfg, state, source="test.pth")


def test_missing_key_is_named(cascade_cfg, cascade_state):
    state = dict(cascade_state)
    del state["roi_heads.box_predictor.1.bbox_pred.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing keys \(roi_heads\.box_predictor\.1\.bbox_pred\.weight\)"):
        _load(cascade_cfg, state)


def test_leftover_key_is_named(cascade_cfg, cascade_state):
    state = dict(cascade_state, **{"roi_heads.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"1 unexpected keys \(roi_heads\.extra\.weight\)"):
        _load(cascade_cfg, state)


def test_shape_mismatch_is_named(cascade_cfg, cascade_state):
    state = dict(cascade_state)
    state["roi_heads.mask_head.predictor.weight"] = torch.zeros(3, 16, 1, 1)
    with pytest.raises(CheckpointError, match=r"roi_heads\.mask_head\.predictor\.weight: file \[3, 16, 1, 1\] "
                                              r"vs model \[1, 16, 1, 1\]"):
        _load(cascade_cfg, state)


def test_wrong_architecture_says_what_the_file_looks_like(cutler_dir, cascade_cfg):
    mrcnn_state = read_state_dict(cutler_dir / "mrcnn_tiny.pth")
    with pytest.raises(CheckpointError) as info:
        _load(cascade_cfg, mrcnn_state)
    message = str(info.value)
    assert "does not fit Cascade Mask R-CNN R50-FPN, 1 class" in message
    assert "looks like Mask R-CNN R50-FPN, 1 class" in message
    assert "\n" not in message


@pytest.mark.parametrize("name, manifest, description", [
    ("cascade", "manifest_cascade_r50fpn", "Cascade Mask R-CNN (3 stages) R50-FPN, 1 class"),
    ("mrcnn", "manifest_mrcnn_r50fpn", "Mask R-CNN R50-FPN, 1 class"),
])
def test_describe_recognises_both_tiny_checkpoints_and_official_layouts(cutler_dir, name, manifest, description):
    assert describe_state_dict(read_state_dict(cutler_dir / f"{name}_tiny.pth")) == description
    shapes = json.loads((cutler_dir / f"{manifest}.json").read_text())
    with torch.device("meta"):
        official = {key: torch.empty(shape) for key, shape in shapes.items()}
    assert describe_state_dict(official) == description


def test_describe_names_what_is_not_an_rcnn():
    assert describe_state_dict({"backbone.conv.weight": torch.zeros(1)}) == "not a ResNet-FPN R-CNN checkpoint"


def test_checkpoints_needing_pickled_code_are_refused(tmp_path, cascade_state):
    path = tmp_path / "pickled.pth"
    torch.save({"model": cascade_state, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"the file contains pickled Python code \(argparse\.Namespace\), which segkit does not run"):
        read_state_dict(path)


def test_non_checkpoints_are_refused(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(text)
    empty = tmp_path / "empty.pth"
    torch.save({"model": {}}, empty)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(empty)


@pytest.mark.parametrize("layout", ["bare", "data-parallel"])
def test_bare_and_data_parallel_state_dicts_load_too(tmp_path, cascade_state, cascade_cfg, layout):
    path = tmp_path / f"{layout}.pth"
    prefix = "module." if layout == "data-parallel" else ""
    torch.save({prefix + k: v for k, v in cascade_state.items()}, path)
    model = _load(cascade_cfg, read_state_dict(path))
    assert torch.equal(model.roi_heads.box_predictor[2].cls_score.weight,
                       cascade_state["roi_heads.box_predictor.2.cls_score.weight"])


def test_frozen_stages_have_frozen_bn_keys(tmp_path, cutler_dir):
    """detectron2 turns BN into FrozenBN (no num_batches_tracked) in stages below FREEZE_AT."""
    path = tmp_path / "frozen.yaml"
    path.write_text('_BASE_: "{}"\nMODEL: {{BACKBONE: {{FREEZE_AT: 2}}}}\n'.format(cutler_dir / "cascade_tiny.yaml"))
    keys = set(_meta_state(load_config(path)))
    assert "backbone.bottom_up.stem.conv1.norm.running_var" in keys
    assert "backbone.bottom_up.stem.conv1.norm.num_batches_tracked" not in keys
    assert "backbone.bottom_up.res2.2.conv3.norm.num_batches_tracked" not in keys
    assert "backbone.bottom_up.res3.0.conv1.norm.num_batches_tracked" in keys
    assert "backbone.fpn_lateral2.norm.num_batches_tracked" in keys
