"""The CLI under faults, as a user meets them: Ctrl-C, SIGTERM, two runs into one folder, bad requests
refused before any weights load. Real subprocesses of ``python -m segkit`` with a tiny CLIPSeg."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

PHOTOS = 24


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for k in range(PHOTOS):
        Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(folder / f"img{k:02d}.png")
    return folder


def _start(args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


def _wait_for(folder, pattern, count=1, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.glob(pattern))) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} in {folder} after {timeout} s")


def _assert_whole(folder):
    """Every file is complete: PNGs decode, JSON parses, no temporary file is left."""
    assert not [p.name for p in folder.rglob(".segkit-tmp-*")]
    for path in folder.glob("*.png"):
        with Image.open(path) as image:
            image.load()
    for path in folder.glob("*.json"):
        json.loads(path.read_text())


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_cleanly(tmp_path, photos, tiny_clipseg, sig, code, word):
    out = tmp_path / "out"
    proc = _start(["clipseg", str(photos), "-p", "cat", "-p", "grass", "--weights", str(tiny_clipseg), "-o", str(out),
                   "--device", "cpu", "--save", "labels,json,heatmaps,panoptic"])
    _wait_for(out, "img*.json", count=2)  # not the hidden temporary files
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {word} after ") and last.endswith(f" of {PHOTOS} images"), stderr
    done = int(last.split(" after ")[1].split(" of ")[0])
    assert 2 <= done < PHOTOS and "Traceback" not in stderr
    _assert_whole(out)
    assert len(list(out.glob("img*.json"))) == done  # every image fully written or not at all
    assert len(list(out.glob("*_overlay.png"))) == done
    panoptic = json.loads((out / "panoptic.json").read_text())  # the batch file holds the images finished
    assert len(panoptic["annotations"]) == done
    assert not list(out.glob(".segkit-run-*"))


def test_an_interrupt_counts_the_videos_already_done(tmp_path, photos, tiny_clipseg):
    """A video finished before Ctrl-C is among the inputs the summary counts as done."""
    from test_video import make_video

    clip = make_video(tmp_path / "clip.mp4", n=3)
    out = tmp_path / "out"
    proc = _start(["clipseg", str(clip), str(photos), "-p", "cat", "--weights", str(tiny_clipseg), "-o", str(out),
                   "--device", "cpu"])
    _wait_for(out, "img*.json", count=2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.endswith(f" of {PHOTOS} images and 1 video"), stderr
    done = int(last.split(" after ")[1].split(" of ")[0])
    assert done == len(list(out.glob("img*.json"))) + 1 and (out / "clip_overlay.mp4").is_file()


def test_two_runs_into_one_folder_keep_every_result(tmp_path, photos, tiny_clipseg):
    out = tmp_path / "common"
    subset = [str(photos / f"img{k:02d}.png") for k in range(PHOTOS)]
    common = ["--weights", str(tiny_clipseg), "-o", str(out), "--device", "cpu", "-q"]
    first = _start(["clipseg", *subset, "-p", "cat", *common])
    _wait_for(out, "img*.json")
    first.send_signal(signal.SIGSTOP)  # still live (holding its claims) while the second runs from start to end
    try:
        second = _start(["clipseg", *subset, "-p", "dog", *common])
        assert second.wait(180) == 0, second.stderr.read()
    finally:
        first.send_signal(signal.SIGCONT)  # and it goes on after the second has finished
    assert first.wait(180) == 0, first.stderr.read()
    _assert_whole(out)
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    prompts = sorted(r["options"]["prompts"][0] for r in records)
    assert prompts == ["cat"] * PHOTOS + ["dog"] * PHOTOS  # neither run replaced the other's files
    for record in records:
        for segment in record["segments"]:
            assert (out / segment["heatmap_file"]).is_file()
            assert segment["label"] == record["options"]["prompts"][0]
    rerun = _start(["clipseg", subset[0], "-p", "cow", *common])  # after both finished: replaces, atomically
    assert rerun.wait(180) == 0
    assert json.loads((out / "img00.json").read_text())["options"]["prompts"] == ["cow"]


@pytest.mark.parametrize("command", [["clipseg", "-p", "cat"], ["panoptic"], ["cutler"]])
def test_bad_requests_are_refused_before_any_weights(tmp_path, photos, command):
    env = {"HF_HOME": str(tmp_path / "hf"), "SEGKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "segkit", command[0], str(photos / "img00.png"), *command[1:],
                           "--dtype", "float16", "--device", "cpu", "--offline", "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --dtype float16 is not supported on the CPU; use float32 or bfloat16"


def test_models_download_offline_says_what_to_do(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "SEGKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "segkit", "models", "download", "cutler-mrcnn"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert "\n" not in line and "on a machine with internet access" in line and str(tmp_path / "cache") in line
    assert "--weights PATH to the segmenting command" in line
    proc = subprocess.run([sys.executable, "-m", "segkit", "models", "download", "no-such-model"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "unknown model" in proc.stderr
