"""CLIPSeg end to end through the CLI, with a tiny model built by the test."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

import segkit
from segkit.cli import main


@pytest.fixture(scope="session")
def photos(examples_dir):
    return examples_dir


def test_cli_outputs_match_api(tmp_path, tiny_clipseg, photos):
    out = tmp_path / "out"
    args = ["clipseg", str(photos / "cat.jpg"), str(photos / "coffee.jpg"), "-p", "cat", "-p", "../../grass",
            "--weights", str(tiny_clipseg), "-o", str(out), "--threshold", "0.5", "--save", "labels,json,heatmaps,grid"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("2 images, 0 failed")
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(["cat_overlay.png", "cat_cat_heat.png", "cat_grass_heat.png", "cat.json", "cat_grid.png",
                               "coffee_overlay.png", "coffee_cat_heat.png", "coffee_grass_heat.png", "coffee.json",
                               "coffee_grid.png"])

    expected = segkit.load("clipseg", weights=tiny_clipseg).predict(
        photos / "cat.jpg", prompts=["cat", "../../grass"], threshold=0.5)
    record = json.loads((out / "cat.json").read_text())
    assert record["model"] == "clipseg-rd64-refined" and record["kind"] == "prompted"
    assert (record["height"], record["width"]) == (300, 451)
    assert len(record["segments"]) == len(expected) == 2  # one segment per prompt
    for i, seg in enumerate(record["segments"]):
        assert seg["label"] == expected.labels[i]
        assert seg["score"] == pytest.approx(float(expected.scores[i]), abs=1e-6)
        mask = mask_utils.decode(seg["segmentation"]).astype(bool)
        assert (mask == expected.masks[i]).all() and seg["area"] == mask.sum()
    heat = np.asarray(Image.open(out / "cat_cat_heat.png"))
    assert heat.shape == (300, 451) and heat.dtype == np.uint8
    assert np.abs(heat.astype(float) - expected.heatmaps[0] * 255).max() <= 0.5 + 1e-3


def test_cli_combine_writes_label_map(tmp_path, tiny_clipseg, photos):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["clipseg", str(photos / "cat.jpg"), "-p", "cat", "-p", "sky", "--combine",
                                       "--threshold", "0.3", "--weights", str(tiny_clipseg), "-o", str(out)])
    assert result.exit_code == 0, result.output
    labels = Image.open(out / "cat_labels.png")
    assert labels.mode == "P"
    res = segkit.load("clipseg", weights=tiny_clipseg).predict(photos / "cat.jpg", prompts=["cat", "sky"],
                                                               threshold=0.3, combine=True)
    assert (np.asarray(labels) == res.label_map).all()


def test_cli_prompt_image_label_is_stem(tmp_path, tiny_clipseg, photos):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["clipseg", str(photos / "cat.jpg"), "--prompt-image", str(photos / "coffee.jpg"),
                                       "-p", "cat", "--weights", str(tiny_clipseg), "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "cat.json").read_text())
    assert sorted(s["label"] for s in record["segments"]) == ["cat", "coffee"]


def test_console_script_subprocess(tmp_path, tiny_clipseg, photos):
    exe = shutil.which("segkit", path=os.path.dirname(sys.executable)) or shutil.which("segkit")
    assert exe, "the segkit console script is not installed"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    proc = subprocess.run([exe, "clipseg", str(photos / "rocket.jpg"), str(broken), "-p", "rocket",
                           "--weights", str(tiny_clipseg), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 1
    assert f"error: {broken}:" in proc.stderr and "Traceback" not in proc.stderr
    assert "2 images, 1 failed" in proc.stdout
    assert (tmp_path / "out" / "rocket_overlay.png").is_file()


def test_bad_prompt_image_is_one_usage_error(tmp_path, tiny_clipseg, photos):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("not an image")
    result = CliRunner().invoke(main, ["clipseg", str(photos / "cat.jpg"), str(photos / "coffee.jpg"),
                                       "--prompt-image", str(bogus), "--weights", str(tiny_clipseg),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count(str(bogus)) == 1
    assert not (tmp_path / "out").exists()
