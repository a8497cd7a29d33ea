"""The ``eval`` click group on the fixture: tables, --json equal to the API, exit codes and error lines."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from segkit.commands.eval import eval_group
from segkit.evaluation.report import metrics_document

FIXTURE = Path(__file__).parent / "fixtures" / "eval"
REFERENCE = json.loads((FIXTURE / "metrics.json").read_text())
GT, PRED = FIXTURE / "gt", FIXTURE / "pred"

INSTANCE = ["instance", "--gt", str(GT / "instances.json"), "--pred", str(PRED / "instances_results.json")]
PANOPTIC = ["panoptic", "--gt", str(GT / "panoptic.json"), "--gt-dir", str(GT / "panoptic"),
            "--pred", str(PRED / "panoptic.json"), "--pred-dir", str(PRED / "panoptic")]
SEMANTIC = ["semantic", "--gt-dir", str(GT / "semantic"), "--pred-dir", str(PRED / "semantic"),
            "--classes", str(GT / "semantic_classes.json")]


def invoke(args):
    return CliRunner().invoke(eval_group, [str(a) for a in args])


def test_instance_table_and_json(tmp_path):
    out = tmp_path / "metrics.json"
    result = invoke(INSTANCE + ["--iou-type", "both", "--json", out])
    assert result.exit_code == 0, result.output
    assert "mask AP" in result.output and "box AP" in result.output
    assert "51.6" in result.output and "21.4" in result.output  # AP and person AP, x100
    written = json.loads(out.read_text())
    assert written["instance_segm"]["stats"] == pytest.approx(REFERENCE["instance_segm"]["stats"], rel=1e-9)
    assert written["units"]["instance_segm"] == "fraction"


def test_instance_class_agnostic_flag():
    plain, agnostic = invoke(INSTANCE), invoke(INSTANCE + ["--class-agnostic"])
    assert plain.exit_code == agnostic.exit_code == 0
    assert "person" in plain.output and "person" not in agnostic.output
    assert "46.6" in agnostic.output  # class-agnostic AP, x100


def test_panoptic_table_and_json(tmp_path):
    out = tmp_path / "pq.json"
    result = invoke(PANOPTIC + ["--workers", 2, "--json", out])
    assert result.exit_code == 0, result.output
    assert "66.3" in result.output and "200 road" in result.output
    written = json.loads(out.read_text())
    assert set(written) == {"panoptic", "units"}
    assert written["panoptic"]["All"] == pytest.approx(REFERENCE["panoptic"]["All"], rel=1e-12)
    assert "%|" not in result.output  # no progress bar when stderr is not a terminal


def test_semantic_table_and_json(tmp_path):
    out = tmp_path / "sem.json"
    result = invoke(SEMANTIC + ["--json", out])
    assert result.exit_code == 0, result.output
    assert "81.9" in result.output
    written = json.loads(out.read_text())
    assert written == metrics_document({"semantic": written["semantic"]})
    assert written["semantic"]["mIoU"] == pytest.approx(REFERENCE["semantic"]["mIoU"], rel=1e-12)
    assert written["units"] == {"semantic": "percent"}


@pytest.mark.parametrize("args", [
    ["instance", "--gt", GT / "instances.json"],
    INSTANCE + ["--iou-type", "keypoints"],
    SEMANTIC + ["--layout", "voc"],
    PANOPTIC + ["--workers", 0],
])
def test_usage_errors_exit_2(args):
    assert invoke(args).exit_code == 2


def _one_error_line(result, *names):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for name in names:
        assert name in lines[0]


def test_bad_input_files_exit_1_with_one_line(tmp_path):
    results = json.loads((PRED / "instances_results.json").read_text())
    results[0]["image_id"] = 1234
    broken = tmp_path / "results.json"
    broken.write_text(json.dumps(results))
    _one_error_line(invoke(["instance", "--gt", GT / "instances.json", "--pred", broken]), str(broken), "1234")

    (tmp_path / "bad.json").write_text("{not json")
    _one_error_line(invoke(["instance", "--gt", tmp_path / "bad.json", "--pred", broken]), "bad.json")

    pred_dir = tmp_path / "panoptic"
    shutil.copytree(PRED / "panoptic", pred_dir)
    (pred_dir / "img04.png").unlink()
    args = PANOPTIC[:-1] + [pred_dir]
    _one_error_line(invoke(args), "img04.png", "no such file")

    _one_error_line(invoke(SEMANTIC[:-1] + [tmp_path / "missing.json"]), "missing.json")
