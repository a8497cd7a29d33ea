"""The runner on its own (no click): outcomes in input order, the per-input error policy, what stops
a batch, and batching without computing an image twice."""

import errno
import json
import os
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from segkit import imageio, png, runner
from segkit.backends.base import Segmenter
from segkit.errors import DiskFullError, OptionError
from segkit.options import Option
from segkit.registry import get_spec
from segkit.result import Result, boxes_from_masks
from segkit.runner import run
from segkit.writer import OutputWriter
from system import missing


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the runner recognises by name."""


class LeftHalf(Segmenter):
    """Marks the left half of each image; 13-pixel-wide images run out of memory; batches when asked."""

    OPTIONS = (Option("threshold", "float", 0.5, "", min=0, max=1),)

    def __init__(self, batches=False):
        super().__init__(get_spec("cutler"), model=None, device="cpu", dtype=None)
        self.calls = []
        self._batches = batches

    @property
    def batches(self):
        return self._batches

    def _predict_batch(self, rgbs, threshold):
        self.calls.append([rgb.shape[1] for rgb in rgbs])
        if any(rgb.shape[1] == 13 for rgb in rgbs):
            raise OutOfMemoryError("CUDA out of memory")
        results = []
        for rgb in rgbs:
            h, w = rgb.shape[:2]
            mask = np.zeros((1, h, w), bool)
            mask[0, :, : w // 2] = True
            results.append(Result("instance", mask, ["object"], [0.9], boxes_from_masks(mask), class_names=["object"]))
        return results


def _img(path, w=20, h=10):
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def test_outcomes_in_input_order_with_errors_in_place(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG garbage")
    inputs = [_img(tmp_path / "a.png"), broken, _img(tmp_path / "big.png", w=13), np.zeros((8, 6, 3), np.uint8),
              _img(tmp_path / "b.png", w=22)]
    seen = []
    writer = OutputWriter(tmp_path / "out")
    outcomes = list(run(LeftHalf(), inputs, {"threshold": 0.2}, writer, progress=lambda d, t: seen.append((d, t))))
    writer.close()
    assert [str(o.source) for o in outcomes] == [str(inputs[0]), str(broken), str(inputs[2]), "image-4",
                                                 str(inputs[4])]
    assert [o.ok for o in outcomes] == [True, False, False, True, True]
    assert "not an image file" in outcomes[1].error or "decode" in outcomes[1].error
    assert outcomes[2].error == f"{inputs[2]}: out of GPU memory; use a smaller batch_size= or device='cpu'"
    assert [p.name for p in outcomes[0].files] == ["a_overlay.png", "a_labels.png", "a.json"]
    assert [p.name for p in outcomes[3].files] == ["image-4_overlay.png", "image-4_labels.png", "image-4.json"]
    record = json.loads((tmp_path / "out" / "b.json").read_text())
    assert record["options"] == {"threshold": 0.2} and record["width"] == 22
    assert seen == [(k, 5) for k in range(1, 6)]


def test_a_failed_batch_is_retried_image_by_image_and_nothing_runs_twice(tmp_path):
    seg = LeftHalf(batches=True)
    inputs = [_img(tmp_path / "a.png"), _img(tmp_path / "big.png", w=13), _img(tmp_path / "b.png", w=24)]
    outcomes = list(run(seg, inputs, {}, None, batch_size=3))
    assert [o.ok for o in outcomes] == [True, False, True]
    assert seg.calls == [[20, 13, 24], [20], [13], [24]]
    assert outcomes[0].files == [] and outcomes[0].result.masks.shape == (1, 10, 20)


def test_a_bad_option_stops_before_any_image(tmp_path):
    seg = LeftHalf()
    with pytest.raises(OptionError, match=r"threshold=2 is out of range"):
        list(run(seg, [_img(tmp_path / "a.png")], {"threshold": 2}, None))
    with pytest.raises(OptionError, match="unknown option 'colour'"):
        list(run(seg, [_img(tmp_path / "a.png")], {"colour": "red"}, None))
    assert seg.calls == []


def test_a_full_disk_stops_the_batch_and_leaves_nothing_partial(tmp_path, monkeypatch):
    inputs = [_img(tmp_path / f"{k}.png") for k in "abc"]
    writer = OutputWriter(tmp_path / "out")
    real_write = png.write_png
    count = {"n": 0}

    def write_png(image, file, **kwargs):
        count["n"] += 1
        if count["n"] == 3:  # the first PNG of the second image
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(image, file, **kwargs)

    monkeypatch.setattr(png, "write_png", write_png)
    done = []
    with pytest.raises(DiskFullError, match="disk is full"):
        for outcome in run(LeftHalf(), inputs, {}, writer):
            done.append(outcome)
    writer.close()
    assert [o.source.name for o in done] == ["a.png"]
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert left == ["a.json", "a_labels.png", "a_overlay.png"]  # b: nothing, not even a temporary file


def test_reading_and_writing_run_below_the_models_priority(tmp_path, monkeypatch):
    """The model's thread keeps its priority; the reader, the writer and the encoders the writer
    starts run BACKGROUND_NICE nicer (they fill idle cores instead of slowing the model)."""
    if not sys.platform.startswith("linux"):
        missing("thread nice values are Linux's")
    def nice():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen = {}

    def noting(role, func):
        def call(*args, **kwargs):
            seen[role] = nice()
            return func(*args, **kwargs)
        return call

    seg = LeftHalf()
    monkeypatch.setattr(seg, "_predict_batch", noting("model", seg._predict_batch))
    monkeypatch.setattr(imageio, "read_image", noting("read", imageio.read_image))
    monkeypatch.setattr(png, "write_png", noting("encode", png.write_png))
    writer = OutputWriter(tmp_path / "out")
    monkeypatch.setattr(writer, "write", noting("write", writer.write))
    base = nice()
    if base >= 19:
        missing("the tests run at nice 19 already: no lower priority to see")
    outcomes = list(run(seg, [_img(tmp_path / "a.png"), _img(tmp_path / "b.png")], {}, writer))
    writer.close()
    assert all(o.ok for o in outcomes)
    lowered = min(19, base + runner.BACKGROUND_NICE)
    assert seen == {"model": base, "read": lowered, "write": lowered, "encode": lowered}
