"""OneFormer pre/post-processing against the original pipeline's outputs (tests/fixtures/oneformer_post)."""

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.backends.oneformer.processing import (
    PIXEL_MEAN,
    PIXEL_STD,
    instance_inference,
    panoptic_inference,
    preprocess,
    semantic_inference,
)
from segkit.backends.oneformer.upsample import MaskUpsampler, bilinear
from segkit.backends.image_input import normalize_and_pad, padded_size, resize_bilinear, shortest_edge_size
from segkit.imageio import read_image
from segkit.labels import load_labels
from segkit.result import boxes_from_masks

RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def post_dir(fixtures_dir):
    return fixtures_dir / "oneformer_post"


def _cases(fixtures_dir_path):
    return json.loads((fixtures_dir_path / "oneformer_post" / "cases.json").read_text())


CASE_NAMES = [
    "coco_demo_odd_333x517", "coco_demo_tall_517x201", "coco_realsize_480x640", "coco_small_full_37x53",
    "coco_eval_60x45", "ade20k_demo_wide_90x500", "ade20k_eval_instance_97x131", "cityscapes_demo_161x323",
    "cityscapes_eval_full_40x75", "edge_overlap_exact_coco_70x90", "toy_dinat_tiny_333x250",
]


class Case:
    def __init__(self, post_dir, name):
        self.details = json.loads((post_dir / "post" / f"{name}.json").read_text())
        self.meta = self.details["meta"]
        self.arrays = np.load(post_dir / "post" / f"{name}.npz")
        self.class_logits = torch.from_numpy(self.arrays["mask_cls"])
        self.num_classes = self.meta["num_classes"]
        self.isthing = np.zeros(self.num_classes, dtype=bool)
        self.isthing[self.meta["thing_class_indices"]] = True
        self.hw = tuple(self.meta["original_hw"])

    def upsampler(self):
        return MaskUpsampler(torch.from_numpy(self.arrays["mask_pred"]), self.meta["padded_hw"],
                             self.meta["resized_hw"], self.hw)


@pytest.fixture(scope="module", params=CASE_NAMES)
def case(request, post_dir):
    return Case(post_dir, request.param)


def test_all_cases_listed(fixtures_dir):
    assert sorted(c["name"] for c in _cases(fixtures_dir)) == sorted(CASE_NAMES)


def test_resize_table(post_dir):
    rows = json.loads((post_dir / "resize_table.json").read_text())
    assert len(rows) >= 80
    for row in rows:
        got = shortest_edge_size(*row["original_hw"], row["short_edge"], row["max_size"])
        assert list(got) == row["resized_hw"], row
        assert list(padded_size(*got, 32)) == row["padded_hw"], row


def test_preprocessing_is_bit_exact(post_dir):
    cases = json.loads((post_dir / "pre" / "cases.json").read_text())
    assert len(cases) == 4
    for c in cases:
        rgb = read_image(post_dir / c["image"])
        size = shortest_edge_size(*rgb.shape[:2], c["test_short_edge"], c["test_max_size"])
        assert list(size) == c["resized_hw"]
        resized = resize_bilinear(rgb, size)
        assert hashlib.sha256(resized.tobytes()).hexdigest() == c["resized_sha256_uint8_hwc"], c["key"]
        pixels = normalize_and_pad(resized, PIXEL_MEAN, PIXEL_STD, 32)
        assert list(pixels.shape[1:]) == c["padded_hw"]
        assert hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest() == \
            c["normalized_sha256_float32_chw"], c["key"]
        whole, whole_size = preprocess(rgb, c["test_short_edge"], c["test_max_size"], 32)
        assert whole_size == size and np.array_equal(whole, pixels)
        checks = np.load(post_dir / c["normalized_npz"])
        np.testing.assert_array_equal(pixels[:, ::16, ::16], checks["subsample_every16"])


def test_mask_upsampling(case):
    a = case.arrays
    padded = bilinear(torch.from_numpy(a["mask_pred"]), case.meta["padded_hw"]).numpy()
    yx = a["sample_yx_padded"]
    np.testing.assert_allclose(padded[:, yx[:, 0], yx[:, 1]], a["mask_pred_padded_samples"], rtol=RTOL, atol=ATOL)
    full = case.upsampler().rows(0, case.hw[0]).numpy()
    yx = a["sample_yx"]
    np.testing.assert_allclose(full[:, yx[:, 0], yx[:, 1]], a["mask_pred_orig_samples"], rtol=RTOL, atol=ATOL)
    if "mask_pred_orig" in a:
        np.testing.assert_allclose(full, a["mask_pred_orig"], rtol=RTOL, atol=ATOL)


def test_semantic(case):
    a = case.arrays
    label_map, share_sums, counts = semantic_inference(case.class_logits, case.upsampler())
    np.testing.assert_array_equal(label_map.numpy(), a["sem_seg_argmax"])
    np.testing.assert_array_equal(counts.numpy(), np.bincount(a["sem_seg_argmax"].ravel(), minlength=case.num_classes))
    if "sem_seg" in a:
        scores = a["sem_seg"].astype(np.float64)
        share = np.take_along_axis(scores, a["sem_seg_argmax"][None].astype(np.int64), 0)[0] / scores.sum(0)
        expected = np.bincount(a["sem_seg_argmax"].ravel(), weights=share.ravel(), minlength=case.num_classes)
        np.testing.assert_allclose(share_sums.numpy(), expected, rtol=RTOL)


def test_panoptic(case):
    m = case.meta
    id_map, segments = panoptic_inference(case.class_logits, case.upsampler(), case.isthing,
                                          m["object_mask_threshold"], m["overlap_threshold"])
    np.testing.assert_array_equal(id_map.numpy(), case.arrays["panoptic_seg"])
    expected = case.details["segments_info"]
    assert [(s.id, s.category_id, s.isthing) for s in segments] == \
        [(e["id"], e["category_id"], e["isthing"]) for e in expected]
    query_scores = {q["query"]: q["score"] for q in case.details["queries"]}
    for s in segments:
        assert s.score == pytest.approx(query_scores[s.query], rel=RTOL)
        assert case.details["queries"][s.query]["segment_id"] == s.id


def test_instance(case):
    a, m = case.arrays, case.meta
    threshold = m["object_mask_threshold"] if m["is_demo"] else None
    got = instance_inference(case.class_logits, case.upsampler(), case.isthing, m["test_topk_per_image"], threshold)
    classes = a["inst_class_index_before_remap"] if "inst_class_index_before_remap" in a else a["inst_classes"]
    expected = {(int(q), int(c)): i for i, (q, c) in enumerate(zip(a["inst_query"], classes))}
    found = {(int(q), int(c)): i for i, (q, c) in enumerate(zip(got.queries, got.classes))}
    assert len(found) == len(got.queries) and found.keys() == expected.keys()
    order = [found[key] for key in expected]
    h, w = case.hw
    masks = np.unpackbits(a["inst_masks_packed"], axis=1, count=h * w).reshape(-1, h, w).astype(bool)
    np.testing.assert_array_equal(got.masks[order], masks)
    np.testing.assert_allclose(got.scores[order], a["inst_scores"], rtol=RTOL, atol=ATOL)
    class_probs = case.class_logits.softmax(-1).numpy()[got.queries, got.classes]  # each pair's own probability
    np.testing.assert_allclose(class_probs[order], a["inst_class_prob"], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(boxes_from_masks(got.masks[order]), a["inst_boxes_from_masks"])
    if "inst_class_index_before_remap" in a:
        remap = load_labels("ade20k_150").thing_index
        np.testing.assert_array_equal(remap[got.classes[order]], a["inst_classes"])


@pytest.mark.parametrize("name", ["coco_eval_60x45", "edge_overlap_exact_coco_70x90"])
def test_band_size_does_not_change_results(post_dir, name):
    case = Case(post_dir, name)
    m = case.meta
    runs = []
    for band_rows in (None, 1, 7):
        up = case.upsampler()
        semantic = semantic_inference(case.class_logits, up, band_rows)
        id_map, segments = panoptic_inference(case.class_logits, up, case.isthing, m["object_mask_threshold"],
                                              m["overlap_threshold"], band_rows)
        inst = instance_inference(case.class_logits, up, case.isthing, m["test_topk_per_image"], None,
                                  band_rows=band_rows)
        runs.append((semantic, id_map, segments, inst))
    first = runs[0]
    for other in runs[1:]:
        assert torch.equal(first[0][0], other[0][0]) and torch.equal(first[0][2], other[0][2])
        # Per-class float64 sums are added band by band: equal up to float64 rounding.
        torch.testing.assert_close(first[0][1], other[0][1], rtol=1e-12, atol=0)
        assert torch.equal(first[1], other[1]) and first[2] == other[2]
        assert np.array_equal(first[3].masks, other[3].masks)
        assert np.array_equal(first[3].scores, other[3].scores)


def test_upsampler_matches_torch_on_large_maps():
    """Same values as F.interpolate on the two-step resize of a real-size case, any band split."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 200, 272, generator=gen) * 6
    up = MaskUpsampler(logits, (800, 1088), (800, 1067), (1500, 2001))
    padded = F.interpolate(logits[None], size=(800, 1088), mode="bilinear", align_corners=False)
    expected = F.interpolate(padded[:, :, :800, :1067], size=(1500, 2001), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(up.rows(0, 1500), expected, rtol=1e-6, atol=1e-5)
    assert torch.equal(up.rows(700, 713), up.rows(0, 1500)[:, 700:713])
    assert torch.equal(up.rows(0, 1500, torch.tensor([2])), up.rows(0, 1500)[2:])


def test_labels_match_fixture_thing_sets(post_dir):
    for case in _cases(post_dir.parent):
        style = case["dataset_style"]
        if style == "toy":
            continue
        labels = load_labels({"coco": "coco_panoptic", "ade20k": "ade20k_150", "cityscapes": "cityscapes_19"}[style])
        assert len(labels) == case["num_classes"]
        assert np.flatnonzero(labels.isthing).tolist() == case["thing_class_indices"]
