"""CutLER end to end through the CLI on the tiny reference checkpoint: files equal the reference."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

from segkit.cli import main


def test_cutler_cli_matches_detectron2_outputs(tmp_path, cutler_dir):
    out = tmp_path / "out"
    args = ["cutler", str(cutler_dir / "img1.png"), "--weights", str(cutler_dir / "cascade_tiny.pth"),
            "--config", str(cutler_dir / "cascade_tiny.yaml"), "--threshold", "0.05", "-o", str(out), "--save",
            "labels,json,masks"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ref = np.load(cutler_dir / "cascade_tiny_img1_outputs.npz")
    record = json.loads((out / "img1.json").read_text())
    assert record["kind"] == "instance" and record["options"] == {"threshold": 0.05, "max_detections": 50}
    segments = record["segments"]
    assert len(segments) == len(ref["scores"])
    for seg, box, score, mask in zip(segments, ref["pred_boxes"], ref["scores"], ref["pred_masks"]):
        assert seg["label"] == "object"
        assert seg["score"] == pytest.approx(float(score), abs=1e-4)
        x, y, w, h = seg["bbox"]
        assert np.allclose([x, y, x + w, y + h], box, atol=1e-2)
        decoded = mask_utils.decode(seg["segmentation"]).astype(bool)
        assert (decoded != mask).mean() <= 1e-3
    ids = np.asarray(Image.open(out / "img1_labels.png"))
    assert ids.dtype == np.uint16 and ids.shape == (360, 480)
    assert set(np.unique(ids)) <= {0} | {s["id"] for s in segments}
    assert len(list((out / "img1_masks").iterdir())) == len(segments)


def test_cutler_cli_bad_checkpoint_is_one_line(tmp_path, cutler_dir):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["cutler", str(cutler_dir / "img1.png"), "--weights", str(bogus),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(bogus) in errors[0] and "Traceback" not in result.output
