"""OneFormer's three tasks end to end through the CLI, with a tiny Swin model built by the test."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

import segkit
from segkit.cli import main
from segkit.labels import load_labels
from tiny_models import tiny_oneformer

ADE = load_labels("ade20k_150")


@pytest.fixture(scope="module")
def tiny_ade(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oneformer_ade")
    tiny_oneformer(ADE.names, seed=2).save_pretrained(folder)
    return folder


def run_cli(task, photo, weights, out):
    args = [task, str(photo), "--dataset", "ade20k", "--backbone", "swin-l", "--weights", str(weights),
            "-o", str(out), "--save", "labels,json", "--device", "cpu"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert run.stdout.strip().splitlines()[-1].startswith("1 image, 0 failed")
    record = json.loads((out / "cat.json").read_text())
    assert record["model"] == "oneformer-ade20k-swin-l" and record["kind"] == task
    masks = [mask_utils.decode(s["segmentation"]).astype(bool) for s in record["segments"]]
    return record, masks, np.asarray(Image.open(out / "cat_labels.png"))


def test_panoptic_cli_writes_what_the_api_returns(tmp_path, tiny_ade, examples_dir):
    photo = examples_dir / "cat.jpg"
    record, masks, labels = run_cli("panoptic", photo, tiny_ade, tmp_path)
    expected = segkit.load("oneformer-ade20k-swin-l", weights=tiny_ade, device="cpu").predict(photo, task="panoptic")
    assert [s["label"] for s in record["segments"]] == expected.labels and len(expected) >= 1
    assert [s["id"] for s in record["segments"]] == expected.segment_ids.tolist()
    for seg, mask, expected_mask, score in zip(record["segments"], masks, expected.masks, expected.scores):
        assert np.array_equal(mask, expected_mask) and seg["score"] == pytest.approx(float(score), abs=1e-6)
    np.testing.assert_array_equal(labels, expected.label_map)


def test_semantic_and_instance_cli(tmp_path, tiny_ade, examples_dir):
    photo = examples_dir / "cat.jpg"
    record, masks, labels = run_cli("semantic", photo, tiny_ade, tmp_path / "semantic")
    assert len(masks) >= 2
    for seg, mask in zip(record["segments"], masks):
        index = seg["category_id"] - 1  # ADE20K's evaluation numbers its classes 1..150
        assert seg["label"] == ADE.names[index] and np.array_equal(mask, labels == index)
    assert np.logical_or.reduce(masks).all()
    record, masks, labels = run_cli("instance", photo, tiny_ade, tmp_path / "instance")
    scores = [s["score"] for s in record["segments"]]
    assert len(masks) >= 1 and scores == sorted(scores, reverse=True)
    assert all(ADE.isthing[s["category_id"] - 1] for s in record["segments"])
    expected = segkit.load("oneformer-ade20k-swin-l", weights=tiny_ade, device="cpu").predict(photo, task="instance")
    assert [s["label"] for s in record["segments"]] == expected.labels
    np.testing.assert_allclose(scores, expected.scores, rtol=1e-6)
    for mask, expected_mask in zip(masks, expected.masks):
        assert np.array_equal(mask, expected_mask)


def test_label_mismatch_is_one_warning_line_and_label_set_filters(tmp_path, fixtures_dir, examples_dir):
    """The tiny DiNAT fixture model has 6 classes, not COCO's 133: one 'warning:' line, no source dump."""
    photo = examples_dir / "cat.jpg"
    second = examples_dir / "coffee.jpg"
    run = CliRunner().invoke(main, ["semantic", str(photo), str(second), "-o", str(tmp_path),
                                    "--weights", str(fixtures_dir / "dinat" / "oneformer"),
                                    "--label-set", "nonexistent-class"])
    warnings = [ln for ln in run.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "6 classes" in warnings[0]
    assert "UserWarning" not in run.stderr and "return backend.load" not in run.stderr
    assert run.exit_code == 2  # a usage error, reported once rather than per image
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "nonexistent-class" in errors[0]
