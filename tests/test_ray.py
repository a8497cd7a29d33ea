"""The Ray engine against local runs, on one local 2-CPU Ray started once for the module.

``--engine ray`` must write the same files as a local run (JSON equal apart from timings, PNGs
pixel-equal, videos frame-equal) for every backend, bad images and videos included; a worker
killed mid-job must still leave every input written exactly once; ``segkit.ray.segment`` returns
one row per image.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import segkit
import segkit.ray
from segkit.cli import main
from segkit.labels import load_labels
from segkit.runner import describe
from conftest import FIXTURES, tiny_model_args
from test_video import _noise, decoded, make_video
from tiny_models import tiny_oneformer
from system import missing

try:
    import ray
except ImportError:
    missing('ray is not installed: pip install -e ".[ray]"', module=True)

TESTS = Path(__file__).resolve().parent
DIE_ON = "die-once.png"
DIE_ON_VIDEO = "die-once.mp4"


@pytest.fixture(scope="module")
def died(tmp_path_factory):
    """A local Ray for the whole module, whose workers die once on DIE_ON and once part way through
    DIE_ON_VIDEO; yields the folder where a marker file named after the input records each death."""
    markers = tmp_path_factory.mktemp("ray_faults")
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a local test cluster needs no tokens
    python_path = os.pathsep.join([str(TESTS), str(TESTS.parent)] + [os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"worker_process_setup_hook": "ray_faults.die_once",
                          "env_vars": {"PYTHONPATH": python_path, "SEGKIT_TEST_DIE_ON": f"{DIE_ON},{DIE_ON_VIDEO}",
                                       "SEGKIT_TEST_DIE_MARKERS": str(markers)}})
    yield markers
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


def images(folder, count, size=(72, 96), bad=True, names=None):
    """``count`` small photos-like images (smooth colour fields with edges), plus an unreadable one."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(count):
        centre = rng.uniform([0, 0], [h, w])
        blob = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (min(h, w) / 3) ** 2
        rgb = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 40 * k)], -1).astype(np.uint8)
        rgb[blob] = rng.integers(0, 255, 3)
        name = names[k] if names else f"img{k}.png"
        Image.fromarray(rgb).save(folder / name)
    if bad:
        (folder / "broken.png").write_bytes(b"not an image")
    return folder


def run_both(tmp_path, args):
    """The same command locally and with --engine ray: (local result, local folder, ray result, ray folder)."""
    runs = []
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--engine", "ray", "--workers", "1"] if engine == "ray" else []
        coco = ["--coco", str(tmp_path / f"{engine}_coco.json")]
        result = CliRunner().invoke(main, args + ["-o", str(out), "--device", "cpu"] + coco + extra)
        runs += [result, out]
    return runs


def error_lines(result):
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def assert_same_outputs(local, remote):
    """Same file names; JSON equal apart from timings, S.jsonl equal; PNGs pixel-equal; videos equal
    frame by frame (timestamps and pixels)."""
    names = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(remote) for p in remote.rglob("*") if p.is_file())
    assert any(n.suffix == ".json" for n in names) and any(n.suffix == ".png" for n in names)
    for name in names:
        a, b = local / name, remote / name
        if name.suffix == ".jsonl":
            assert a.read_text().splitlines() == b.read_text().splitlines(), name
        elif name.suffix == ".mp4":
            frames_a, frames_b = decoded(a), decoded(b)
            assert [t for t, _, _ in frames_a] == [t for t, _, _ in frames_b] and frames_a, name
            assert all(np.array_equal(x, y) for (_, x, _), (_, y, _) in zip(frames_a, frames_b)), name
        elif name.suffix == ".json":
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            if "timings" in ja:
                timings = jb.pop("timings")
                assert timings["engine"] == "ray" and timings.keys() - {"engine", "worker"} == ja.pop("timings").keys()
            assert ja == jb, name
        else:
            ia, ib = Image.open(a), Image.open(b)
            assert ia.mode == ib.mode and np.array_equal(np.asarray(ia), np.asarray(ib)), name


def assert_same_runs(tmp_path, local, local_out, remote, remote_out, failed):
    assert local.exit_code == remote.exit_code == (1 if failed else 0), (local.output, remote.output)
    assert error_lines(local) == error_lines(remote) and len(error_lines(local)) == failed
    assert_same_outputs(local_out, remote_out)
    assert json.loads((tmp_path / "local_coco.json").read_text()) == json.loads((tmp_path / "ray_coco.json").read_text())


def test_clipseg_ray_writes_what_a_local_run_writes(tmp_path, died, tiny_clipseg):
    folder = images(tmp_path / "in", 3)
    args = ["clipseg", str(folder), "-p", "cat", "-p", "grass", "--weights", str(tiny_clipseg),
            "--save", "labels,json,heatmaps,masks,panoptic", "--batch-size", "2"]
    assert_same_runs(tmp_path, *run_both(tmp_path, args), failed=1)


def test_cutler_ray_writes_what_a_local_run_writes(tmp_path, died, cutler_dir):
    folder = images(tmp_path / "in", 2, size=(120, 160))
    args = ["cutler", str(folder), str(tmp_path / "missing.png"), "--weights", str(cutler_dir / "cascade_tiny.pth"),
            "--config", str(cutler_dir / "cascade_tiny.yaml"), "--threshold", "0.05", "--save", "labels,json,masks"]
    local, local_out, remote, remote_out = run_both(tmp_path, args)
    assert_same_runs(tmp_path, local, local_out, remote, remote_out, failed=2)
    assert json.loads((remote_out / "img0.json").read_text())["segments"]  # detections to compare


def test_oneformer_ray_writes_what_a_local_run_writes(tmp_path, died):
    weights = tmp_path / "oneformer"
    tiny_oneformer(load_labels("ade20k_150").names, seed=2).save_pretrained(weights)
    folder = images(tmp_path / "in", 2)
    args = ["panoptic", str(folder), "--dataset", "ade20k", "--backbone", "swin-l", "--weights", str(weights),
            "--save", "labels,json,panoptic"]
    local, local_out, remote, remote_out = run_both(tmp_path, args)
    assert_same_runs(tmp_path, local, local_out, remote, remote_out, failed=1)
    assert (remote_out / "panoptic.json").is_file()


def test_videos_mixed_with_images_write_what_a_local_run_writes(tmp_path, died, tiny_clipseg):
    folder = images(tmp_path / "in", 2)
    make_video(folder / "clip.mp4", n=9)
    good = make_video(tmp_path / "good.mkv", n=12, image=_noise).read_bytes()
    (folder / "cut.mkv").write_bytes(good[: len(good) // 2])  # decodes part way, then stops
    (folder / "text.mkv").write_text("not a video")
    args = ["clipseg", str(folder), "-p", "cat", "-p", "grass", "--weights", str(tiny_clipseg),
            "--save", "json,masks", "--stride", "2", "--batch-size", "2"]
    local, local_out, remote, remote_out = run_both(tmp_path, args)
    assert_same_runs(tmp_path, local, local_out, remote, remote_out, failed=3)
    assert remote.stdout.strip().splitlines()[-1].startswith("3 images and 3 videos, 3 failed")
    lines = [json.loads(line) for line in (remote_out / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines[1:-1]] == [0, 2, 4, 6, 8] and lines[-1]["done"] is True
    assert len(decoded(remote_out / "clip_overlay.mp4")) == 5 and (remote_out / "clip_frames").is_dir()
    cut = [json.loads(line) for line in (remote_out / "cut.jsonl").read_text().splitlines()]
    assert cut[-1]["done"] is False and "decoding stopped" in cut[-1]["error"]
    assert len(decoded(remote_out / "cut_overlay.mp4")) == cut[-1]["frames"] > 0  # partial, playable
    assert not (remote_out / "text.jsonl").exists()


def test_workers_killed_mid_job_leave_every_input_written_once(tmp_path, died, tiny_clipseg):
    """One worker dies reading DIE_ON, one part way through DIE_ON_VIDEO, after two batches of its
    frames reached the driver: every image and every frame is still written once."""
    names = ["a.png", "b.png", DIE_ON, "d.png", "e.png"]
    folder = images(tmp_path / "in", len(names), bad=False, names=names)
    make_video(folder / DIE_ON_VIDEO, n=12)  # between d.png and DIE_ON in input order
    args = ["clipseg", str(folder), "-p", "cat", "--weights", str(tiny_clipseg), "--save", "json"]
    local, local_out, remote, remote_out = run_both(tmp_path, args)
    assert (died / DIE_ON_VIDEO).is_file() and (died / DIE_ON).is_file()  # (the local run has no such faults)
    assert_same_runs(tmp_path, local, local_out, remote, remote_out, failed=0)
    lines = (remote_out / "die-once.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines[1:-1]] == list(range(12))
    pids = {n: json.loads((remote_out / f"{Path(n).stem}.json").read_text())["timings"]["worker"].split(":")[1]
            for n in names}
    dead = {(died / name).read_text() for name in (DIE_ON_VIDEO, DIE_ON)}
    assert pids["a.png"] in dead and pids[DIE_ON] not in dead  # written once each, before and after the restarts
    assert remote.stdout.strip().splitlines()[-1].startswith("5 images and 1 video, 0 failed")


def test_eval_with_the_ray_engine_scores_what_the_local_engine_scores(tmp_path, died):
    """test_eval_model's tiny COCO-layout dataset, semantic (the model's labels read on the driver
    choose the classes kept and the train ids): the same predictions, the same metrics."""
    gt = FIXTURES / "eval" / "gt"
    weights = tiny_model_args("oneformer", tmp_path)["weights"]
    args = ["eval", "semantic", "--gt-dir", str(gt / "semantic"), "--classes", str(gt / "semantic_classes.json"),
            "--model", "oneformer-coco-swin-l", "--weights", str(weights), "--images",
            str(FIXTURES / "eval" / "images"), "--device", "cpu", "--workers", "1", "--limit", "2", "--batch-size", "2"]
    for engine in ("local", "ray"):
        run = CliRunner().invoke(main, args + ["--engine", engine, "--ray-workers", "1", "-o", str(tmp_path / engine),
                                               "--json", str(tmp_path / f"{engine}.json")])
        assert run.exit_code == 0, run.output
        assert "2 of 2 images predicted" in run.stderr
    assert json.loads((tmp_path / "local.json").read_text()) == json.loads((tmp_path / "ray.json").read_text())
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")  # the predictions too, _trainids.png included


def test_segment_returns_one_row_per_image(tmp_path, died, tiny_clipseg):
    folder = images(tmp_path / "in", 2)
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    paths = sorted(folder.iterdir())
    dataset = segkit.ray.segment(paths, model="clipseg", weights=tiny_clipseg, device="cpu", prompts=["cat", "sky"],
                                 threshold=0.3)
    rows = sorted(dataset.take_all(), key=lambda row: row["path"])
    assert [row["path"] for row in rows] == [str(p.absolute()) for p in paths]
    segmenter = segkit.load("clipseg", weights=tiny_clipseg, device="cpu")
    for path, row in zip(paths, rows):
        if path.suffix == ".mp4":  # rows are images': a clear error, not a crash
            assert row["error"] == f"{path.absolute()}: segkit.ray.segment gives one row per image; segment " \
                                   "videos with segkit.ray.run (--engine ray) or segkit.segment_video"
            continue
        if path.name == "broken.png":
            with pytest.raises(Exception) as caught:
                segmenter.predict(path, prompts=["cat", "sky"], threshold=0.3)
            assert row["error"] == describe(path.absolute(), caught.value) and row["segments"] == []
            continue
        expected = segmenter.predict(path, prompts=["cat", "sky"], threshold=0.3)
        assert row["error"] is None and (row["height"], row["width"]) == (72, 96)
        assert row["labels"] == expected.labels == ["cat", "sky"]
        assert row["scores"] == pytest.approx(expected.scores.tolist(), abs=1e-6)
        assert [dict(s) for s in row["segments"]] == expected.to_coco()
        assert row["timings"]["engine"] == "ray"


def test_ray_missing_is_one_line_exit_2(tmp_path, monkeypatch, tiny_clipseg):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    folder = images(tmp_path / "in", 1, bad=False)
    result = CliRunner().invoke(main, ["clipseg", str(folder), "-p", "cat", "--weights", str(tiny_clipseg),
                                       "--engine", "ray", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert error_lines(result) == ['error: --engine ray needs Ray; install it with: pip install "segkit[ray]"']
    evaluated = CliRunner().invoke(main, ["eval", "instance", "--gt", str(FIXTURES / "eval" / "gt" / "instances.json"),
                                          "--model", "cutler", "--images", str(FIXTURES / "eval" / "images"),
                                          "--engine", "ray", "-o", str(tmp_path / "eval")])
    assert evaluated.exit_code == 2 and 'needs Ray; install it with: pip install "segkit[ray]"' in evaluated.stderr


def test_a_model_that_does_not_load_fails_as_locally(tmp_path, died):
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    folder = images(tmp_path / "in", 1, bad=False)
    local, _, remote, _ = run_both(tmp_path, ["cutler", str(folder), "--weights", str(bogus)])
    assert local.exit_code == remote.exit_code == 1
    assert error_lines(local) == error_lines(remote) and len(error_lines(local)) == 1
    assert str(bogus) in error_lines(remote)[0] and "Traceback" not in remote.output
