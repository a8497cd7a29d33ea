"""``segkit eval ... --model``: a tiny OneFormer run over the fixture dataset (COCO layout, COCO category
ids), its predictions written, then scored; re-scoring what it wrote gives the same numbers."""

import json

import pytest
from click.testing import CliRunner

from segkit.cli import main
from segkit.evaluation.instance import evaluate_instances, segkit_results
from segkit.evaluation.panoptic import evaluate_panoptic
from segkit.evaluation.semantic import evaluate_semantic, load_classes

from conftest import FIXTURES, tiny_model_args

EVAL = FIXTURES / "eval"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_model_args("oneformer", tmp_path_factory.mktemp("oneformer"))["weights"]


def _eval(*args):
    run = CliRunner().invoke(main, ["eval", *map(str, args)])
    assert run.exit_code == 0, run.output
    return run


def test_panoptic_model_run_writes_predictions_that_rescore_alike(tmp_path, weights):
    out = tmp_path / "pred"
    _eval("panoptic", "--gt", EVAL / "gt" / "panoptic.json", "--gt-dir", EVAL / "gt" / "panoptic", "--model",
          "oneformer-coco-swin-l", "--weights", weights, "--images", EVAL / "images", "--device", "cpu", "-o", out,
          "--json", tmp_path / "model.json")
    exported = json.loads((out / "panoptic.json").read_text())
    assert len(exported["annotations"]) == 6 and all((out / a["file_name"]).is_file() for a in exported["annotations"])
    _eval("panoptic", "--gt", EVAL / "gt" / "panoptic.json", "--gt-dir", EVAL / "gt" / "panoptic", "--pred",
          out / "panoptic.json", "--pred-dir", out, "--json", tmp_path / "saved.json")
    model, saved = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("model", "saved"))
    assert model["panoptic"] == saved["panoptic"]
    # What panopticapi would be given: the same predictions under the ground truth's own image ids.
    gt = json.loads((EVAL / "gt" / "panoptic.json").read_text())
    ids = {image["file_name"]: image["id"] for image in gt["images"]}
    by_batch = {image["id"]: ids[image["file_name"].rsplit("/", 1)[-1]] for image in exported["images"]}
    renumbered = {"annotations": [{**a, "image_id": by_batch[a["image_id"]]} for a in exported["annotations"]]}
    (tmp_path / "renumbered.json").write_text(json.dumps(renumbered))
    direct = evaluate_panoptic(EVAL / "gt" / "panoptic.json", EVAL / "gt" / "panoptic", tmp_path / "renumbered.json",
                               out, workers=1)
    assert direct["All"] == model["panoptic"]["All"] and direct["per_class"] == model["panoptic"]["per_class"]


def test_instance_model_run_with_a_limit(tmp_path, weights):
    out = tmp_path / "pred"
    run = _eval("instance", "--gt", EVAL / "gt" / "instances.json", "--model", "oneformer-coco-swin-l", "--weights",
                weights, "--images", EVAL / "images", "--device", "cpu", "-o", out, "--limit", "3", "--json",
                tmp_path / "m.json")
    assert "3 of 3 images predicted" in run.stderr
    assert sorted(p.name for p in out.glob("*.json")) == ["img01.json", "img02.json", "img03.json"]
    metrics = json.loads((tmp_path / "m.json").read_text())
    # Scored on those three images only: what pycocotools gives for their predictions and image ids.
    gt = EVAL / "gt" / "instances.json"
    expected = evaluate_instances(gt, segkit_results(sorted(out.glob("img0?.json")), gt), image_ids=[1, 2, 3])
    assert metrics["instance_segm"] == json.loads(json.dumps(expected["instance_segm"]))


def test_semantic_model_run_scores_in_the_ground_truths_train_ids(tmp_path, weights):
    out = tmp_path / "pred"
    _eval("semantic", "--gt-dir", EVAL / "gt" / "semantic", "--classes", EVAL / "gt" / "semantic_classes.json",
          "--model", "oneformer-coco-swin-l", "--weights", weights, "--images", EVAL / "images", "--device", "cpu",
          "-o", out, "--json", tmp_path / "m.json")
    maps = sorted(out.glob("*_trainids.png"))
    assert len(maps) == 6
    classes = load_classes(EVAL / "gt" / "semantic_classes.json")
    pairs = [(EVAL / "gt" / "semantic" / p.name.replace("_trainids", ""), p) for p in maps]
    expected = evaluate_semantic(pairs, classes, workers=1)
    assert json.loads((tmp_path / "m.json").read_text())["semantic"]["mIoU"] == pytest.approx(expected["mIoU"],
                                                                                              rel=1e-12, abs=1e-12)


def test_semantic_model_run_refuses_a_missing_ground_truth_folder(tmp_path, weights):
    run = CliRunner().invoke(main, ["eval", "semantic", "--gt-dir", str(tmp_path / "nowhere"), "--classes",
                                    str(EVAL / "gt" / "semantic_classes.json"), "--model", "oneformer-coco-swin-l",
                                    "--weights", str(weights), "--images", str(EVAL / "images"), "--device", "cpu",
                                    "-o", str(tmp_path / "pred")])
    assert run.exit_code == 1 and f"{tmp_path / 'nowhere'}: no such folder (--gt-dir)" in run.output
    assert not (tmp_path / "pred").exists()


def test_model_and_saved_predictions_are_exclusive():
    run = CliRunner().invoke(main, ["eval", "instance", "--gt", str(EVAL / "gt" / "instances.json")])
    assert run.exit_code == 2 and "--model and --images" in run.output
    run = CliRunner().invoke(main, ["eval", "instance", "--gt", str(EVAL / "gt" / "instances.json"), "--model",
                                    "cutler"])
    assert run.exit_code == 2 and "--images" in run.output


def test_semantic_model_run_needs_a_model_with_classes(tmp_path):
    clipseg = tiny_model_args("clipseg", tmp_path)["weights"]
    run = CliRunner().invoke(main, ["eval", "semantic", "--gt-dir", str(EVAL / "gt" / "semantic"), "--classes",
                                    str(EVAL / "gt" / "semantic_classes.json"), "--model", "clipseg", "--weights",
                                    str(clipseg), "--images", str(EVAL / "images"), "--device", "cpu", "-o",
                                    str(tmp_path / "pred")])
    assert run.exit_code == 2 and "clipseg has no fixed classes to score against --classes" in run.output
