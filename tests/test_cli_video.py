"""Videos through the CLI, mixed with images in one batch: every command takes them (tiny CLIPSeg here)."""

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from segkit.cli import main
from test_video import decoded, make_video


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_videos_and_images_in_one_batch(tmp_path, tiny_clipseg):
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "clip.mp4", n=9)
    Image.fromarray(np.full((40, 50, 3), 80, np.uint8)).save(folder / "photo.png")
    (folder / "broken.mkv").write_text("not a video")
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["clipseg", str(folder), "-p", "cat", "--weights", str(tiny_clipseg), "-o", str(out),
                                    "--device", "cpu", "--stride", "2", "--batch-size", "2"])
    assert run.exit_code == 1, run.output  # the broken video failed; the rest went on
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mkv" in errors[0]
    assert run.stdout.strip().splitlines()[-1].startswith("1 image and 2 videos, 1 failed")
    lines = _jsonl(out / "clip.jsonl")
    assert lines[0]["options"]["prompts"] == ["cat"] and lines[0]["stride"] == 2
    assert [line["frame"] for line in lines[1:-1]] == [0, 2, 4, 6, 8]
    assert lines[-1]["done"] is True and lines[-1]["frames"] == 5
    assert len(decoded(out / "clip_overlay.mp4")) == 5
    assert not (out / "clip_frames").exists()  # the image defaults (labels, heatmaps) do not apply to videos
    assert (out / "photo_overlay.png").is_file() and (out / "photo_cat_heat.png").is_file()


def test_frame_files_only_when_named(tmp_path, tiny_clipseg):
    make_video(tmp_path / "clip.mp4", n=3)
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["clipseg", str(tmp_path / "clip.mp4"), "-p", "cat", "--weights", str(tiny_clipseg),
                                    "-o", str(out), "--device", "cpu", "--save", "heatmaps"])
    assert run.exit_code == 0, run.output
    assert len(list((out / "clip_frames").glob("*_heat.png"))) == 3
    assert run.stdout.strip().splitlines()[-1].startswith("1 video, 0 failed")


def test_bad_ranges_are_usage_errors(tmp_path, tiny_clipseg):
    make_video(tmp_path / "clip.mp4", n=3)
    run = CliRunner().invoke(main, ["clipseg", str(tmp_path / "clip.mp4"), "-p", "cat", "--weights", str(tiny_clipseg),
                                    "-o", str(tmp_path / "o"), "--start", "2", "--end", "1"])
    assert run.exit_code == 2 and "end (1.0 s) must be after start (2.0 s)" in run.stderr
