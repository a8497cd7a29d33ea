"""``segkit eval ... --model``: a tiny OneFormer run over the fixture dataset (COCO layout, COCO category
ids), its predictions written, then scored; re-scoring what it wrote gives the same numbers."""

import json

import pytest
from click.testing import CliRunner

from segkit.cli import main
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
    assert set(metrics["instance_segm"]["stats"]) >= {"AP", "AP50", "AR100"}


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


def test_model_and_saved_predictions_are_exclusive():
    run = CliRunner().invoke(main, ["eval", "instance", "--gt", str(EVAL / "gt" / "instances.json")])
    assert run.exit_code == 2 and "--model and --images" in run.output
    run = CliRunner().invoke(main, ["eval", "instance", "--gt", str(EVAL / "gt" / "instances.json"), "--model",
                                    "cutler"])
    assert run.exit_code == 2 and "--images" in run.output
