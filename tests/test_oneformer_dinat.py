"""The tiny DiNAT OneFormer of shared/fixtures/dinat, loaded through segkit, against NATTEN-computed outputs."""

import dataclasses

import numpy as np
import pytest
import torch

import segkit
from segkit.backends import oneformer
from segkit.imageio import read_image
from segkit.registry import get_spec
from segkit.result import boxes_from_masks


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    from safetensors.torch import load_file

    folder = fixtures_dir / "dinat" / "oneformer"
    return folder, load_file(str(folder / "inputs.safetensors")), load_file(str(folder / "outputs.safetensors"))


@pytest.fixture(scope="module")
def segmenter(fixture):
    with pytest.warns(UserWarning, match="has 6 classes but oneformer-coco-dinat-l expects 133"):
        return segkit.load("oneformer-coco-dinat-l", weights=fixture[0], device="cpu")


def test_logits_match_natten_reference(segmenter, fixture):
    from transformers import OneFormerForUniversalSegmentation

    _, inputs, outputs = fixture
    assert type(segmenter.model) is OneFormerForUniversalSegmentation
    assert segmenter.model.config.backbone_config.model_type == "dinat"
    for row, task in enumerate(("semantic", "instance", "panoptic")):
        assert torch.equal(segmenter.task_inputs[task][0], inputs["task_inputs"][row])
        with torch.inference_mode():
            out = segmenter.model(pixel_values=inputs["pixel_values"], task_inputs=segmenter.task_inputs[task])
        for name in ("class_queries_logits", "masks_queries_logits"):
            torch.testing.assert_close(getattr(out, name), outputs[f"{task}.{name}"], rtol=0, atol=1e-4)
        # The task token comes from token ids of ~5e4 through a linear layer: large terms cancel.
        torch.testing.assert_close(out.task_token, outputs[f"{task}.task_token"], rtol=1e-4, atol=1e-3)


def test_three_tasks_through_predict(fixture, examples_dir):
    spec = get_spec("oneformer-coco-dinat-l")
    spec = dataclasses.replace(spec, options={**spec.options, "min_size_test": 96, "max_size_test": 160,
                                              "object_mask_threshold": 0.0, "detections_per_image": 20})
    with pytest.warns(UserWarning):
        seg = oneformer.load(spec, weights=fixture[0], device=torch.device("cpu"))
    rgb = read_image(examples_dir / "cat.jpg")
    semantic = seg.predict(rgb, task="semantic")
    assert semantic.label_map.shape == rgb.shape[:2] and set(np.unique(semantic.label_map)) <= set(range(6))
    panoptic = seg.predict(rgb, task="panoptic")
    assert len(panoptic) >= 1 and set(np.unique(panoptic.label_map)) <= {0, *panoptic.segment_ids.tolist()}
    instance = seg.predict(rgb, task="instance")
    assert 1 <= len(instance) <= 20 and np.all(np.diff(instance.scores) <= 0)
    np.testing.assert_array_equal(instance.boxes, boxes_from_masks(instance.masks))
