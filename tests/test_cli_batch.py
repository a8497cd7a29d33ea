"""Batch behaviour of the CLI with a stand-in segmenter: bad files, OOM, exit codes, outputs."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import segkit
from segkit.backends.cutler.segmenter import CutLERSegmenter
from segkit.backends.base import Segmenter
from segkit.cli import main
from segkit.registry import get_spec
from segkit.result import Result, boxes_from_masks


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the CLI recognises by name."""


class HalfMasks(Segmenter):
    """Marks the left half of each image; fails on images 13 pixels wide."""

    calls: list
    OPTIONS = CutLERSegmenter.OPTIONS

    def _predict(self, rgb, **options):
        self.calls.append((rgb.shape, options))
        if rgb.shape[1] == 13:
            raise OutOfMemoryError("CUDA out of memory")
        h, w = rgb.shape[:2]
        mask = np.zeros((1, h, w), bool)
        mask[0, :, : w // 2] = True
        return Result("instance", mask, ["object"], [0.8], boxes_from_masks(mask), class_names=["object"])


@pytest.fixture
def fake_load(monkeypatch):
    seg = HalfMasks(get_spec("cutler"), model=None, device="cpu", dtype=None)
    seg.calls = []
    monkeypatch.setattr(segkit, "load", lambda name, **kw: seg)
    return seg


def _img(path, w=20, h=10):
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def test_batch_goes_on_past_bad_files(tmp_path, fake_load):
    good = [_img(tmp_path / "a.png"), _img(tmp_path / "b.jpg")]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    oom = _img(tmp_path / "big.png", w=13)
    out = tmp_path / "out"
    args = ["cutler", str(good[0]), str(broken), str(tmp_path / "missing.png"), str(oom), str(good[1]),
            "-o", str(out), "--threshold", "0.5", "--batch-size", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 3
    assert any(str(broken) in e for e in errors)
    assert any("missing.png" in e for e in errors)
    assert any("--batch-size" in e and "--device cpu" in e for e in errors)
    assert "Traceback" not in result.output
    assert result.stdout.strip().splitlines()[-1].startswith("5 images, 3 failed,"), result.stdout
    for stem in ("a", "b"):
        assert (out / f"{stem}_overlay.png").is_file()
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        assert labels.dtype == np.uint16 and (labels[:, :10] == 1).all() and (labels[:, 10:] == 0).all()
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["options"] == {"threshold": 0.5, "max_detections": None}  # every option, defaults too
        assert record["segments"][0]["bbox"] == [0, 0, 10, 10]
        assert {"total_s", "read_s"} <= set(record["timings"])
    assert all(opts == {"threshold": 0.5, "max_detections": None} for _, opts in fake_load.calls)
    assert len(fake_load.calls) == 3  # a, big, b: each computed once, none again after big failed


def test_model_must_fit_the_command(tmp_path, fake_load):
    image = _img(tmp_path / "a.png")
    for model, hint in (("clipseg-rd64", "segkit clipseg"), ("no-such-model", "unknown model")):
        result = CliRunner().invoke(main, ["cutler", str(image), "--model", model, "-o", str(tmp_path / "o")])
        assert result.exit_code == 2 and hint in result.output
    assert not fake_load.calls


def test_rerun_into_output_folder_skips_its_outputs(tmp_path, fake_load):
    _img(tmp_path / "a.png")
    for _ in range(2):
        result = CliRunner().invoke(main, ["cutler", str(tmp_path), "--recursive", "-o", str(tmp_path / "out")])
        assert result.exit_code == 0, result.output
    assert len(fake_load.calls) == 2  # a.png twice; never a_overlay.png


def test_all_good_exit_0_and_folder_input(tmp_path, fake_load):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _img(folder / "x.png")
    _img(folder / "y.png")
    (folder / "readme.txt").write_text("not an image")
    result = CliRunner().invoke(main, ["cutler", str(folder), "-o", str(tmp_path / "o"), "--save", "masks"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "x_masks" / "000_object.png").is_file()
    assert not (tmp_path / "o" / "x.json").exists()  # --save chose masks only (plus the overlay)


def test_debug_shows_each_traceback_and_the_batch_goes_on(tmp_path, fake_load):
    oom = _img(tmp_path / "big.png", w=13)
    good = _img(tmp_path / "good.png")
    result = CliRunner().invoke(main, ["cutler", str(oom), str(good), "-o", str(tmp_path / "o"), "--debug"])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" in result.stderr and "OutOfMemoryError: CUDA out of memory" in result.stderr
    assert (tmp_path / "o" / "good_overlay.png").is_file()
