"""Weights that do not fit are refused in one line, pickled code never runs, and published-style
checkpoints (with the extra tensors the hub files carry) still load."""

import argparse
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import segkit
from segkit.cli import main
from segkit.errors import CheckpointError, PickledCodeError
from tiny_models import make_tiny_clipseg


@pytest.fixture
def tiny_clipseg(tmp_path):
    return make_tiny_clipseg(tmp_path / "clipseg")


def _rewrite(folder, change):
    path = folder / "model.safetensors"
    state = load_file(path)
    save_file(change(dict(state)), path)


def test_wrong_tensors_are_refused_in_one_quiet_line(tiny_clipseg, capfd):
    _rewrite(tiny_clipseg, lambda s: {(k + "_renamed" if "decoder.layers.0" in k else k): v for k, v in s.items()})
    with pytest.raises(CheckpointError) as err:
        segkit.load("clipseg", weights=tiny_clipseg, device="cpu")
    message = str(err.value)
    assert "\n" not in message and "do not fit this CLIPSeg model" in message
    assert "missing (e.g. decoder.layers.0." in message and "unexpected (e.g. decoder.layers.0." in message
    out, errors = capfd.readouterr()
    assert "LOAD REPORT" not in out + errors and "MISSING" not in out + errors


def test_a_mis_shaped_tensor_is_refused(tiny_clipseg):
    _rewrite(tiny_clipseg, lambda s: {**s, "decoder.film_add.weight": torch.zeros(3, 3)})
    with pytest.raises(CheckpointError, match="decoder.film_add.weight"):
        segkit.load("clipseg", weights=tiny_clipseg, device="cpu")


def test_missing_tensors_are_refused(tiny_clipseg):
    _rewrite(tiny_clipseg, lambda s: {k: v for k, v in s.items() if not k.startswith("decoder.reduces")})
    with pytest.raises(CheckpointError, match=r"\d+ missing \(e\.g\. decoder\.reduces\.0\.bias"):
        segkit.load("clipseg", weights=tiny_clipseg, device="cpu")


def test_hub_style_extra_buffers_still_load(tiny_clipseg):
    """Older published checkpoints carry position_ids buffers the model rebuilds itself."""
    reference = segkit.load("clipseg", weights=tiny_clipseg, device="cpu")
    image = np.full((40, 50, 3), 120, np.uint8)
    expected = reference.predict(image, prompts=["cat"]).heatmaps
    _rewrite(tiny_clipseg, lambda s: {**s, "clip.text_model.embeddings.position_ids": torch.arange(77)[None],
                                      "clip.vision_model.embeddings.position_ids": torch.arange(17)[None]})
    seg = segkit.load("clipseg", weights=tiny_clipseg, device="cpu")
    np.testing.assert_allclose(seg.predict(image, prompts=["cat"]).heatmaps, expected, rtol=0, atol=1e-6)


def test_pickled_code_is_never_run(tiny_clipseg):
    state = load_file(tiny_clipseg / "model.safetensors")
    os.remove(tiny_clipseg / "model.safetensors")
    torch.save({**state, "extra": argparse.Namespace(a=1)}, tiny_clipseg / "pytorch_model.bin")
    with pytest.raises(PickledCodeError) as err:
        segkit.load("clipseg", weights=tiny_clipseg, device="cpu")
    message = str(err.value)
    assert "contains pickled Python code" in message and "segkit does not run" in message
    assert "weights_only=False" in message and "model.safetensors" in message  # how to convert, where trusted
    assert "Re-running" not in message  # none of torch's advice to just turn the check off


def test_cli_refuses_wrong_weights_with_exit_1(tiny_clipseg, tmp_path, examples_dir):
    _rewrite(tiny_clipseg, lambda s: {k: v for k, v in list(s.items())[5:]})
    run = CliRunner().invoke(main, ["clipseg", str(examples_dir / "cat.jpg"), "-p", "cat", "--weights",
                                    str(tiny_clipseg), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert run.exit_code == 1
    errors = run.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and "do not fit" in errors[0]
    assert not list((tmp_path / "out").glob("*.png"))
