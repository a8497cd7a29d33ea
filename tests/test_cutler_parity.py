"""CutLER against detectron2 + CutLER's own outputs (tests/fixtures/cutler, see its README).

Final outputs go through the public API (folded norms, channels-last: what users run); the
intermediate tensors are checked on both the folded and the unfolded model, so a divergence is
located, not just detected. Tolerances are the issue's: boxes 1e-2 px, scores 1e-4, masks <= 0.1 %
of pixels, features 1e-4 of the tensor's largest value.
"""

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import segkit
from segkit.backends.cutler.config import load_config
from segkit.backends.cutler.model import build_model
from segkit.backends.cutler.checkpoint import read_state_dict
from segkit.backends.cutler.postprocess import rescale_boxes
from segkit.imageio import read_image

MODELS = {"cascade": "cutler-cascade", "mrcnn": "cutler-mrcnn"}
IMAGES = ("img1", "img2")
BOX_ATOL = 1e-2
SCORE_ATOL = 1e-4
MASK_PIXEL_FRACTION = 1e-3
FEATURE_RTOL = 1e-4


@pytest.fixture(scope="module")
def segmenters(cutler_dir):
    return {name: segkit.load(model, weights=cutler_dir / f"{name}_tiny.pth", config=cutler_dir / f"{name}_tiny.yaml")
            for name, model in MODELS.items()}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("image", IMAGES)
def test_outputs_match_detectron2(segmenters, cutler_dir, name, image):
    segmenter = segmenters[name]
    ref = np.load(cutler_dir / f"{name}_tiny_{image}_outputs.npz")
    result = segmenter.predict(cutler_dir / f"{image}.png",
                               threshold=segmenter.config.MODEL.ROI_HEADS.SCORE_THRESH_TEST)

    assert len(result) == len(ref["scores"])
    np.testing.assert_allclose(result.scores, ref["scores"], rtol=0, atol=SCORE_ATOL)
    np.testing.assert_allclose(result.boxes, ref["pred_boxes"], rtol=0, atol=BOX_ATOL)
    assert np.array_equal(result.class_ids, ref["pred_classes"])
    assert result.masks.shape == ref["pred_masks"].shape
    differing = (result.masks != ref["pred_masks"]).reshape(len(result), -1).mean(axis=1)
    assert differing.max() <= MASK_PIXEL_FRACTION
    assert result.labels == ["object"] * len(result)


def _intermediates(run_recording, cutler_dir, name, fold):
    cfg = load_config(cutler_dir / f"{name}_tiny.yaml")
    model = build_model(cfg, read_state_dict(cutler_dir / f"{name}_tiny.pth"), fold=fold)
    with torch.inference_mode():
        _, found = run_recording(model, read_image(cutler_dir / "img1.png"),
                                 score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                                 max_detections=cfg.TEST.DETECTIONS_PER_IMAGE)
    return {k: v.float().numpy() for k, v in found.items()}


@pytest.fixture(scope="module", params=[False, True], ids=["unfolded", "folded"])
def traces(request, run_recording, cutler_dir):
    return {name: _intermediates(run_recording, cutler_dir, name, request.param) for name in MODELS}


def _close(ours, ref, key):
    assert ours.shape == ref.shape, key
    scale = max(float(np.abs(ref).max()), 1e-6)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=FEATURE_RTOL * scale, err_msg=key)


def test_backbone_input_is_exact(traces, cutler_dir):
    ref = np.load(cutler_dir / "img1_backbone_input.npz")
    for trace in traces.values():
        assert np.array_equal(trace["backbone_input"], ref["backbone_input"])
        assert tuple(trace["image_size_resized"]) == tuple(ref["image_size_resized"])


def test_backbone_fpn_and_rpn_maps(traces, cutler_dir):
    ref = np.load(cutler_dir / "cascade_tiny_img1_intermediates.npz")
    keys = [k for k in ref.files if k.startswith(("bottom_up_", "fpn_", "rpn_objectness_", "rpn_deltas_"))]
    assert len(keys) == 3 + 5 + 5 + 5
    for key in keys + ["cell_anchors"]:
        _close(traces["cascade"][key], ref[key], key)


def _match(ours_boxes, ours_logits, ref_boxes, ref_logits):
    """Index of our box for each reference box (proposal lists may swap near-tied neighbours)."""
    iou = box_iou(torch.from_numpy(ref_boxes), torch.from_numpy(ours_boxes)).numpy()
    best = iou.argmax(axis=1)
    assert iou[np.arange(len(best)), best].min() > 0.999
    assert len(set(best.tolist())) == len(best)
    np.testing.assert_allclose(ours_logits[best], ref_logits, rtol=0,
                               atol=FEATURE_RTOL * np.abs(ref_logits).max())
    return best


@pytest.mark.parametrize("name", MODELS)
def test_rpn_proposals_and_box_stages(traces, cutler_dir, name):
    ref = np.load(cutler_dir / f"{name}_tiny_img1_intermediates.npz")
    trace = traces[name]
    order = _match(trace["rpn_proposals"], trace["rpn_proposal_logits"], ref["rpn_proposals"],
                   ref["rpn_proposal_logits"])
    stages = sorted({k.split("_")[0] for k in ref.files if k.startswith("stage")})
    assert stages == (["stage0", "stage1", "stage2"] if name == "cascade" else ["stage0"])
    for stage in stages:
        for part in ("proposals", "cls_logits", "box_deltas", "pred_boxes"):
            key = f"{stage}_{part}"
            _close(trace[key][order], ref[key], key)
    if name == "cascade":
        _close(trace["cascade_avg_probs"][order], ref["cascade_avg_probs"], "cascade_avg_probs")


@pytest.mark.parametrize("name", MODELS)
def test_mask_head(traces, cutler_dir, name):
    ref = np.load(cutler_dir / f"{name}_tiny_img1_intermediates.npz")
    outputs = np.load(cutler_dir / f"{name}_tiny_img1_outputs.npz")
    trace = traces[name]
    _close(trace["mask_logits"], ref["mask_logits"], "mask_logits")
    probs = 1 / (1 + np.exp(-trace["mask_logits"][:, 0]))  # one class: every detection's own map
    np.testing.assert_allclose(probs, outputs["mask_probs_28"], rtol=0, atol=1e-4)
    # The fixtures' "boxes_resized" holds original-image boxes: detectron2's detector_postprocess
    # scales the Boxes tensor in place, overwriting the array before it was saved. So check that
    # the boxes the mask head pooled from rescale to the final boxes.
    boxes, _ = rescale_boxes(torch.from_numpy(trace["boxes_resized"]), tuple(outputs["image_size_resized"]),
                             tuple(outputs["image_hw"]))
    np.testing.assert_allclose(boxes.numpy(), outputs["pred_boxes"], rtol=0, atol=BOX_ATOL)
