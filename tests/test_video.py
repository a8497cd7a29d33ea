"""Video in, video out (segkit.video): every test makes its own small video with PyAV.

The segmenter is a tiny fake whose result is a pure function of the frame (mask = red channel
above a threshold), so each S.jsonl line can be checked against the very frame it belongs to.
"""

from __future__ import annotations

import json
import struct
import threading
from fractions import Fraction

import numpy as np
import pytest

import av  # noqa: E402

from pycocotools import mask as mask_utils  # noqa: E402

import segkit  # noqa: E402
from segkit import video  # noqa: E402
from segkit.backends.base import Segmenter  # noqa: E402
from segkit.errors import OptionError, RequestError, SegkitError, VideoReadError  # noqa: E402
from segkit.options import Option  # noqa: E402
from segkit.registry import ModelSpec  # noqa: E402
from segkit.result import Result, boxes_from_masks  # noqa: E402

W, H = 64, 48


class RedSegmenter(Segmenter):
    """One prompted segment: pixels whose red channel is above ``threshold`` (0..1)."""

    OPTIONS = (Option("threshold", "float", 0.5, "red level", min=0, max=1),)

    def __init__(self):
        super().__init__(ModelSpec("red", "fake", ("prompted",), {}), model=None, device="cpu", dtype=None)
        self.calls = []

    def _predict_batch(self, rgbs, threshold):
        self.calls.append(len(rgbs))
        return [self._predict(rgb, threshold) for rgb in rgbs]

    def _predict(self, rgb, threshold):
        heat = rgb[..., 0].astype(np.float32)[None] / 255
        masks = heat > threshold
        return Result(kind="prompted", masks=masks, labels=["red"], scores=heat.reshape(1, -1).max(axis=1),
                      boxes=boxes_from_masks(masks), heatmaps=heat, class_names=["red"], class_ids=[0])


class InterruptedSegmenter(RedSegmenter):
    """Ctrl-C arrives while the model runs on frame number ``after`` (counted from 0)."""

    def __init__(self, after):
        super().__init__()
        self.after, self.seen = after, 0

    def _predict(self, rgb, threshold):
        if self.seen == self.after:
            raise KeyboardInterrupt
        self.seen += 1
        return super()._predict(rgb, threshold)


def frame_image(i, w=W, h=H):
    """Frame ``i``: red level 20*i in the left half, a white block in the top-left quadrant."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 0] = min(255, 20 * i)
    img[: h // 2, : w // 4] = 255
    return img


def make_video(path, n=10, w=W, h=H, rate=10, rotation=None, pts_ms=None, codec="libx264", options=None,
               fmt=None, image=frame_image):
    """A small test video; ``pts_ms`` gives each frame's timestamp in milliseconds (variable rate)."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "1", "preset": "ultrafast"}  # near-lossless: pixel checks stay tight
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(image(i, w, h), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def decoded(path):
    """(pts seconds, RGB array as coded, rotation) of every frame, read plainly with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24"), f.rotation)
                for f in container.decode(stream)]


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def rle_mask(segment):
    return mask_utils.decode({"size": segment["segmentation"]["size"],
                              "counts": segment["segmentation"]["counts"].encode()}).astype(bool)


@pytest.fixture
def seg():
    return RedSegmenter()


def test_probe_reports_size_rate_duration_and_codec(tmp_path):
    info = video.probe(make_video(tmp_path / "a.mp4", n=10))
    assert (info.width, info.height, info.rotation, info.codec) == (W, H, 0, "h264")
    assert info.fps == pytest.approx(10)
    assert info.frames == 10
    assert info.duration_s == pytest.approx(1.0)
    assert info.expected_frames() == 10
    assert info.expected_frames(stride=3) == 4
    assert info.expected_frames(start=0.2, end=0.6) == 4


def test_is_video_by_suffix_or_content(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", n=3)
    no_suffix = tmp_path / "clip"
    no_suffix.write_bytes(clip.read_bytes())
    text = tmp_path / "notes"
    text.write_text("hello")
    from PIL import Image

    Image.fromarray(frame_image(1)).save(tmp_path / "photo.png")
    (tmp_path / "photo.data").write_bytes((tmp_path / "photo.png").read_bytes())
    assert video.is_video(clip) and video.is_video(tmp_path / "missing.MKV")
    assert video.is_video(no_suffix)
    assert not video.is_video(text)
    assert not video.is_video(tmp_path / "photo.png")
    assert not video.is_video(tmp_path / "photo.data")  # FFmpeg opens a PNG as an image, not a video


def test_write_video_outputs_and_jsonl(tmp_path, seg):
    source = make_video(tmp_path / "street.mp4", n=10)
    seen = []
    outcome = video.write_video(seg, source, tmp_path / "out", "street", options={"threshold": 0.3},
                                progress=lambda done, total: seen.append((done, total)))
    out = tmp_path / "out"
    assert outcome.done and outcome.error is None and outcome.frames == 10
    assert outcome.files == [out / "street_overlay.mp4", out / "street.jsonl"]
    assert not (out / "street_frames").exists()  # per-frame PNGs only when asked for
    assert sorted(p.name for p in out.iterdir()) == ["street.jsonl", "street_overlay.mp4"]  # no temp files left
    lines = jsonl(out / "street.jsonl")
    head, frames, last = lines[0], lines[1:-1], lines[-1]
    assert head["video"]["source"] == str(source)
    assert (head["video"]["width"], head["video"]["height"], head["video"]["fps"]) == (W, H, 10)
    assert head["model"] == {"model": "red"} and head["options"] == {"threshold": 0.3}
    assert last == {"done": True, "frames": 10, "error": None}
    assert [f["frame"] for f in frames] == list(range(10))
    assert [f["time_s"] for f in frames] == pytest.approx([i / 10 for i in range(10)])
    for line, (_, rgb, _) in zip(frames, decoded(source)):
        assert len(line["segments"]) == 1 and line["segments"][0]["label"] == "red"
        np.testing.assert_array_equal(rle_mask(line["segments"][0]), rgb[..., 0] > 0.3 * 255)
    assert seen[-1] == (10, 10) and [d for d, _ in seen] == list(range(1, 11))
    written = decoded(out / "street_overlay.mp4")
    assert len(written) == 10
    assert written[0][1].shape == (H, W, 3)
    with av.open(str(out / "street_overlay.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_overlay_frames_are_the_renderer_output(tmp_path, seg):
    """The encoded frames are render.overlay of each frame and its result (to H.264's rounding)."""
    from segkit import render

    source = make_video(tmp_path / "a.mp4", n=4)
    video.write_video(seg, source, tmp_path, "a", options={})
    for (_, rgb, _), (_, out, _) in zip(decoded(source), decoded(tmp_path / "a_overlay.mp4")):
        expected = render.overlay(rgb, seg.predict(rgb), alpha=0.5)
        assert np.abs(out.astype(int) - expected).mean() < 4
        assert not np.array_equal(expected, rgb)  # the overlay really changes the frame


def test_stride_start_end_and_batches(tmp_path, seg):
    source = make_video(tmp_path / "a.mp4", n=12)
    got = list(video.segment_video(seg, source, stride=2, start=0.3, end=1.0, batch_size=3))
    assert [index for index, _, _ in got] == [3, 5, 7, 9]
    assert [t for _, t, _ in got] == pytest.approx([0.3, 0.5, 0.7, 0.9])
    assert seg.calls == [3, 1]
    outcome = video.write_video(seg, source, tmp_path, "a", options={}, stride=5)
    assert outcome.frames == 3
    with av.open(str(tmp_path / "a_overlay.mp4")) as container:
        stream = container.streams.video[0]
        times = [float(f.pts * f.time_base) for f in container.decode(stream)]
    assert times == pytest.approx([0.0, 0.5, 1.0])  # stride 5 still plays at real speed


def test_segment_video_is_lazy_and_checks_options_first(tmp_path, seg):
    text = tmp_path / "broken.mp4"
    text.write_text("not a video")
    with pytest.raises(OptionError, match="unknown option 'colour'"):
        next(video.segment_video(seg, text, colour=1))  # the options first, before the file is read
    source = make_video(tmp_path / "a.mp4", n=10)
    frames = segkit.segment_video(seg, source)
    assert seg.calls == []  # nothing runs before the first frame is asked for
    index, time_s, result = next(frames)
    assert (index, time_s, seg.calls) == (0, 0.0, [1])
    assert result.meta["options"] == {"threshold": 0.5}
    frames.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("segkit-decode")]


@pytest.mark.parametrize("rotation,turns", [(90, 1), (-90, 3), (180, 2)])
def test_rotation_metadata_is_honoured(tmp_path, seg, rotation, turns):
    source = make_video(tmp_path / "phone.mp4", n=4, rotation=rotation)
    info = video.probe(source)
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((H, W) if rotation % 180 else (W, H))
    raw = decoded(source)
    assert raw[0][2] % 360 == rotation % 360  # PyAV reports the rotation the test wrote
    got = list(video.FrameReader(source))
    for frame, (_, coded, _) in zip(got, raw):
        np.testing.assert_array_equal(frame.rgb, np.rot90(coded, turns))
    # Where the coded top-left white block ends up once upright (rotation is counter-clockwise).
    upright = got[0].rgb
    rows, cols = upright.shape[:2]
    corner = {1: (slice(rows - 8, rows), slice(0, 8)), 3: (slice(0, 8), slice(cols - 8, cols)),
              2: (slice(rows - 8, rows), slice(cols - 8, cols))}[turns]
    assert upright[corner].min() > 240
    assert upright[:8, :8].max() < 30  # frame 0 is black but for the block
    video.write_video(seg, source, tmp_path, "phone", options={})
    out = decoded(tmp_path / "phone_overlay.mp4")
    assert out[0][1].shape == upright.shape and out[0][2] == 0  # written upright, no rotation tag


def test_phone_video_matrix_turns_frames_clockwise(tmp_path):
    """An independent check of the direction: the track-header matrix a phone writes for a portrait
    clip, (0, 1, -1, 0) in QuickTime's row-vector convention, means 'turn 90 degrees clockwise'."""
    data = bytearray(make_video(tmp_path / "a.mp4", n=2).read_bytes())
    tkhd = data.find(b"tkhd")
    assert tkhd > 0 and data[tkhd + 4] == 0  # version 0: the matrix starts 44 bytes after the type
    matrix = tkhd + 44
    assert struct.unpack(">9i", data[matrix:matrix + 36]) == (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, H << 16, 0, 0x40000000)
    phone = tmp_path / "phone.mp4"
    phone.write_bytes(bytes(data))
    upright = next(iter(video.FrameReader(phone))).rgb
    assert upright.shape == (W, H, 3)
    assert upright[:8, -8:].min() > 240  # the coded top-left block is now top-right
    assert upright[:8, :8].max() < 30 and upright[-8:, :8].max() < 30


def test_variable_frame_rate_keeps_timestamps(tmp_path, seg):
    pts_ms = [0, 100, 150, 400, 450, 460, 700, 1000, 1100, 1500]
    source = make_video(tmp_path / "vfr.mp4", n=10, pts_ms=pts_ms)
    got = list(video.segment_video(seg, source))
    assert [t for _, t, _ in got] == pytest.approx([ms / 1000 for ms in pts_ms])
    outcome = video.write_video(seg, source, tmp_path, "vfr", options={}, stride=2)
    assert outcome.frames == 5
    times = [t for t, _, _ in decoded(tmp_path / "vfr_overlay.mp4")]
    assert times == pytest.approx([ms / 1000 for ms in pts_ms[::2]], abs=1e-6)
    assert [line["time_s"] for line in jsonl(tmp_path / "vfr.jsonl")[1:-1]] == pytest.approx(
        [ms / 1000 for ms in pts_ms[::2]])


def test_odd_size_video_keeps_its_size(tmp_path, seg):
    source = make_video(tmp_path / "odd.avi", n=3, w=65, h=47, codec="mpeg4")
    video.write_video(seg, source, tmp_path, "odd", options={})
    out = decoded(tmp_path / "odd_overlay.mp4")
    assert len(out) == 3 and out[0][1].shape == (47, 65, 3)


def test_mpeg4_when_libx264_is_missing(tmp_path, seg, monkeypatch):
    monkeypatch.setattr(av.codec, "codecs_available", av.codec.codecs_available - {"libx264"})
    source = make_video(tmp_path / "a.mp4", n=3)
    video.write_video(seg, source, tmp_path, "a", options={})
    with av.open(str(tmp_path / "a_overlay.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert len(list(container.decode(video=0))) == 3


def test_frame_files_only_for_labels_heatmaps_masks(tmp_path, seg):
    source = make_video(tmp_path / "a.mp4", n=3)
    video.write_video(seg, source, tmp_path, "a", options={}, save=("overlay", "json", "heatmaps", "masks"))
    names = sorted(p.name for p in (tmp_path / "a_frames").iterdir())
    assert names == [f"{i:06d}_{kind}" for i in range(3) for kind in ("000_red_mask.png", "00_red_heat.png")]
    line = jsonl(tmp_path / "a.jsonl")[2]
    assert line["heatmap_files"] == ["a_frames/000001_00_red_heat.png"]
    assert line["mask_files"] == ["a_frames/000001_000_red_mask.png"]


@pytest.mark.parametrize("content", ["text", "truncated", "header only"])
def test_unreadable_video_is_one_clear_error_and_writes_nothing(tmp_path, seg, content):
    path = tmp_path / ("bad.mkv" if content == "header only" else "bad.mp4")
    if content == "text":
        path.write_text("this is not a video\n" * 10)
    elif content == "truncated":  # an mp4's index (moov) comes last: cut it off
        data = make_video(tmp_path / "good.mp4", n=10).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # a normal duration in the header, then not one frame
        path.write_bytes(make_video(tmp_path / "good.mkv", n=10).read_bytes()[:700])
        with av.open(str(path)) as container:
            assert container.duration == 1_000_000 and not list(container.decode(video=0))
    with pytest.raises(VideoReadError) as err:
        video.write_video(seg, path, tmp_path / "out", "bad", options={})
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "truncated" in message
    assert ("no frame could be decoded" if content == "header only" else "not a video") in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    with pytest.raises(VideoReadError):
        video.probe(path)


def _check_partial(tmp_path, stem, frames_kept):
    """The files a video stopped part way leaves; returns the error its jsonl's last line gives."""
    out_video = tmp_path / f"{stem}_overlay.mp4"
    assert len(decoded(out_video)) == frames_kept  # a finished, playable file holding every frame done
    lines = jsonl(tmp_path / f"{stem}.jsonl")
    assert len(lines) == frames_kept + 2
    assert lines[-1]["done"] is False and lines[-1]["frames"] == frames_kept and lines[-1]["error"]
    assert not list(tmp_path.glob(".*part"))
    return lines[-1]["error"]


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_video_that_stops_decoding_half_way(tmp_path, seg, container):
    """mkv: FFmpeg just stops early (the duration says more); mp4 with its index first: it raises."""
    good = make_video(tmp_path / f"good.{container}", n=12, image=_noise,
                      options={"movflags": "faststart"} if container == "mp4" else None)
    data = good.read_bytes()
    cut = tmp_path / f"cut.{container}"
    cut.write_bytes(data[: len(data) // 2])
    info = video.probe(cut)
    assert info.duration_s == pytest.approx(1.2)  # a normal duration is reported ...
    readable = 0
    with av.open(str(cut)) as plain:  # ... but only some frames decode
        try:
            for _ in plain.decode(video=0):
                readable += 1
        except av.FFmpegError:
            pass
    assert 0 < readable < 12
    outcome = video.write_video(seg, cut, tmp_path, "cut", options={})
    assert outcome.frames == readable > 0 and not outcome.done
    error = _check_partial(tmp_path, "cut", readable)
    assert error == outcome.error and error.startswith(f"{cut}: decoding stopped after frame {readable - 1}")
    assert "\n" not in error
    with pytest.raises(VideoReadError, match="decoding stopped"):
        list(video.segment_video(seg, cut))


def _noise(i, w, h):
    """Incompressible frames, so a cut half way through the file is half way through the frames."""
    return np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_keyboard_interrupt_leaves_playable_video_and_incomplete_jsonl(tmp_path):
    source = make_video(tmp_path / "a.mp4", n=12)
    seg = InterruptedSegmenter(after=5)
    with pytest.raises(KeyboardInterrupt):
        video.write_video(seg, source, tmp_path, "a", options={}, batch_size=2)
    assert _check_partial(tmp_path, "a", 4) == "interrupted (Ctrl-C)"
    assert not [t for t in threading.enumerate() if t.name.startswith("segkit-")]


def test_encoder_failure_is_one_error_with_the_frames_done_kept(tmp_path, seg, monkeypatch):
    from segkit import render

    drawn = []

    def overlay(image, result, alpha):
        if len(drawn) == 3:
            raise OSError(28, "No space left on device")
        drawn.append(1)
        return image

    monkeypatch.setattr(render, "overlay", overlay)
    source = make_video(tmp_path / "a.mp4", n=12)
    with pytest.raises(SegkitError, match=r"a_overlay.mp4: writing stopped: .*No space left on device"):
        video.write_video(seg, source, tmp_path, "a", options={})
    assert _check_partial(tmp_path, "a", 3).startswith("stopped: ")


def test_never_overwrites_the_input(tmp_path, seg):
    source = make_video(tmp_path / "a_overlay.mp4", n=3)
    before = source.read_bytes()
    with pytest.raises(SegkitError, match="refusing to overwrite the input video"):
        video.write_video(seg, source, tmp_path, "a", options={})
    assert source.read_bytes() == before


@pytest.mark.parametrize("bounds,message", [(dict(stride=0), "stride must be a whole number >= 1"),
                                            (dict(start=-1), "start must be >= 0"),
                                            (dict(start=0.5, end=0.5), r"end \(0.5 s\) must be after start")])
def test_bad_range_is_a_request_error(tmp_path, seg, bounds, message):
    source = make_video(tmp_path / "a.mp4", n=3)
    with pytest.raises(RequestError, match=message):
        video.write_video(seg, source, tmp_path / "out", "a", options={}, **bounds)
    assert not (tmp_path / "out").exists()
    with pytest.raises(VideoReadError, match=r"start 5 s is past the video's end \(0.30 s\)"):
        next(video.segment_video(seg, source, start=5))


def test_abandoned_frame_iteration_stops_its_thread(tmp_path):
    frames = iter(video.FrameReader(make_video(tmp_path / "a.mp4", n=30)))
    next(frames)
    frames.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("segkit-decode")]


_MEASURE = """
import resource, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
from test_video import RedSegmenter
from segkit import video
tracemalloc.start()
outcome = video.write_video(RedSegmenter(), sys.argv[2], sys.argv[3], "run", options={})
try:  # this process's own high-water mark (ru_maxrss can inherit the parent's after fork + exec)
    rss = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
except OSError:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(outcome.frames, tracemalloc.get_traced_memory()[1], rss)
"""


def _peak_memory(source, out_dir) -> tuple[int, int, int]:
    """(frames, peak Python-allocated bytes, peak RSS bytes) of write_video in a fresh process."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", _MEASURE, str(Path(__file__).parent), str(source), str(out_dir)],
                          capture_output=True, text=True, check=True)
    frames, traced, rss = (int(v) for v in done.stdout.split())
    return frames, traced, rss


def test_memory_does_not_grow_with_the_video_length(tmp_path):
    """600 frames peak no higher than 60: bounded queues, nothing kept per frame but a jsonl line.

    Holding the decoded frames would cost 600 x 230 kB = 138 MB more RSS (PyAV's frame buffers
    are not Python allocations, hence RSS as well as tracemalloc); the bounds allow 40 MB and 3 MB."""
    size = dict(w=320, h=240, rate=30, image=lambda i, w, h: frame_image(i % 12, w, h))
    short = _peak_memory(make_video(tmp_path / "short.mp4", n=60, **size), tmp_path / "s")
    long = _peak_memory(make_video(tmp_path / "long.mp4", n=600, **size), tmp_path / "l")
    assert (short[0], long[0]) == (60, 600)
    assert long[1] < short[1] + 3_000_000, (short, long)
    assert long[2] < short[2] + 40_000_000, (short, long)


def test_clipseg_on_a_video_equals_clipseg_on_its_frames(tmp_path):
    """A real (tiny) backend through the pipeline, batched: each frame's result is exactly what
    predict gives for that decoded frame alone, and S.jsonl records the backend's options."""
    from tiny_models import make_tiny_clipseg

    seg = segkit.load("clipseg", weights=make_tiny_clipseg(tmp_path / "model"), device="cpu")
    source = make_video(tmp_path / "a.mp4", n=5, image=_noise)
    frames = [rgb for _, rgb, _ in decoded(source)]
    got = list(segkit.segment_video(seg, source, batch_size=2, prompts=["a cat", "grass"], threshold=0.5))
    assert [index for index, _, _ in got] == list(range(5))
    for (_, _, result), rgb in zip(got, frames):
        alone = seg.predict(rgb, prompts=["a cat", "grass"], threshold=0.5)
        np.testing.assert_allclose(result.heatmaps, alone.heatmaps, atol=1e-6)
        assert result.labels == ["a cat", "grass"]
    outcome = video.write_video(seg, source, tmp_path, "a", options={"prompts": ["a cat", "grass"]}, batch_size=2)
    head = jsonl(tmp_path / "a.jsonl")[0]
    assert outcome.done and outcome.frames == 5
    assert head["options"]["prompts"] == ["a cat", "grass"] and head["options"]["prompt_images"] == []
    assert head["model"] == seg.source
