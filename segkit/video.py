"""Video in, video out: frames decoded ahead and results encoded behind, in threads, through
bounded queues, so the model never waits for I/O and memory does not grow with the video's length.

Runner-level: this module knows files; segmenters only ever see uint8 RGB arrays. PyAV (FFmpeg in
its wheels) reads and writes. Frames come out as displayed (rotation metadata applied, as EXIF is
for photos) and keep their own timestamps (variable frame rates, ``stride``).
"""

from __future__ import annotations

import json
import math
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import RequestError, SegkitError, VideoReadError, first_line
from .imageio import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
FRAME_FILE_CHOICES = ("labels", "heatmaps", "masks")  # what S_frames/ may hold, only when asked for
_IMAGE_DEMUXERS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif")
_QUEUE_POLL_S = 0.1


def _av():
    try:
        import av
    except ImportError:
        raise SegkitError("video input needs PyAV (FFmpeg in its wheels): pip install 'av>=14.2'") from None
    return av


def is_video(path) -> bool:
    """Whether ``path`` is read as a video: by suffix, else (for a file whose suffix is not an image
    suffix) by whether FFmpeg finds a video stream in a container that is not an image format."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix in IMAGE_SUFFIXES or not path.is_file():
        return False
    try:
        av = _av()
        with av.open(str(path)) as container:
            return bool(container.streams.video) and container.format.name not in _IMAGE_DEMUXERS
    except Exception:  # not a container FFmpeg knows (or no PyAV): not a video
        return False


@dataclass(frozen=True)
class VideoInfo:
    """What the runner needs to know before the first frame: sizes are as displayed (after rotation)."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float | None
    frames: int | None  # from the container's index; None when it has none (mkv, webm)
    rotation: int  # degrees counter-clockwise applied to the coded frames (PyAV's frame.rotation)
    codec: str
    time_base: Fraction
    start_pts: int

    def to_json(self) -> dict:
        return {"source": str(self.path), "width": self.width, "height": self.height, "fps": self.fps,
                "duration_s": self.duration_s, "frames": self.frames, "rotation": self.rotation,
                "codec": self.codec}

    def expected_frames(self, stride: int = 1, start: float | None = None, end: float | None = None) -> int | None:
        """About how many frames a run with these bounds processes (for a progress bar); None if unknown."""
        if self.duration_s is None and self.frames is None:
            return None
        total = self.frames if self.frames else self.duration_s * self.fps
        if start is not None or end is not None:
            stop = self.duration_s if end is None or self.duration_s is None else min(end, self.duration_s)
            if stop is None:
                return None
            total = min(total, max(0.0, stop - (start or 0.0)) * self.fps)
        return max(0, math.ceil(round(total, 6) / stride))


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without PyAV's errno prefix and file name."""
    return str(getattr(exc, "strerror", None) or first_line(exc))


def _open(av, path: Path):
    """The container and its first video stream, or VideoReadError naming the file."""
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: file is empty")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoReadError(f"{path}: cannot read it as a video ({_reason(exc)}); the file may be truncated, "
                             "corrupt or not a video") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: has no video stream")
    return container, container.streams.video[0]


def probe(path) -> VideoInfo:
    """Open ``path`` and decode its first frame (rotation lives in frame side data); VideoReadError if
    it is not a readable video."""
    av = _av()
    path = Path(path)
    container, stream = _open(av, path)
    with container:
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise VideoReadError(f"{path}: no frame could be decoded ({_reason(exc)}); the file may be truncated "
                                 "or corrupt") from None
        if first is None:
            raise VideoReadError(f"{path}: no frame could be decoded; the file may be truncated or corrupt")
        rotation = _quarter_turns(first.rotation) * 90
        width, height = (first.height, first.width) if rotation % 180 else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = _duration_s(container, stream)
        return VideoInfo(path=path, width=width, height=height, fps=float(rate) if rate else 25.0,
                         duration_s=duration, frames=stream.frames or None, rotation=rotation,
                         codec=stream.codec_context.name, time_base=stream.time_base or Fraction(1, 90000),
                         start_pts=stream.start_time or 0)


def _duration_s(container, stream) -> float | None:
    """The video stream's own duration; the container's only when the video is its one stream
    (an audio track may run longer)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def _quarter_turns(rotation: float) -> int:
    """Display rotation (degrees counter-clockwise) as quarter turns, 0..3. Phones write multiples
    of 90; a mirror in the display matrix is not applied (PyAV exposes the rotation only)."""
    return int(round(rotation / 90)) % 4


@dataclass
class Frame:
    """One decoded frame as displayed: ``index`` counts every frame of the file from its start."""

    index: int
    time_s: float
    pts: int  # in the stream's time base, counted from the video's start
    rgb: np.ndarray


@dataclass
class _End:
    error: BaseException | None = None


class _Stop(Exception):
    """The consumer went away: the producer thread ends quietly."""


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    """A blocking put that gives up when ``stop`` is set (so no thread waits forever)."""
    while True:
        if stop.is_set():
            raise _Stop
        try:
            q.put(item, timeout=_QUEUE_POLL_S)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, alive: Callable[[], bool]):
    """A blocking get that stays interruptible (Ctrl-C) and notices a producer that died."""
    while True:
        try:
            return q.get(timeout=_QUEUE_POLL_S)
        except queue.Empty:
            if not alive():
                return q.get_nowait() if not q.empty() else _End(VideoReadError("video decoder stopped unexpectedly"))


class FrameReader:
    """Frames of a video decoded ahead in a thread, at most ``ahead`` of them waiting.

    ``stride`` keeps every N-th frame of the ones in ``[start, end)`` (seconds from the video's
    start). A decoding error, or a file that ends well before its declared length, ends the
    iteration with a VideoReadError that says how far it got. Use as a context manager.
    """

    def __init__(self, path, *, info: VideoInfo | None = None, stride: int = 1, start: float | None = None,
                 end: float | None = None, ahead: int = 8):
        check_range(stride, start, end)
        self.info = info or probe(path)
        self.path = Path(path)
        self.stride, self.start, self.end = stride, start, end
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name=f"segkit-decode {self.path.name}", daemon=True)

    def __enter__(self) -> FrameReader:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop decoding and wait for the thread (it gives up within one queue poll)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __iter__(self) -> Iterator[Frame]:
        if self._thread.ident is None:  # iterated without ``with``: the iteration owns the thread
            self._thread.start()
        try:
            while True:
                item = _get(self._queue, self._thread.is_alive)
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            self.close()

    def _decode(self) -> None:
        av = _av()
        self._last = None  # (index, time_s) of the last frame decoded
        try:
            container, stream = _open(av, self.path)
            with container:
                stream.thread_type = "AUTO"
                error = None if self._decode_stream(container, stream) else self._shortfall()
        except _Stop:
            return
        except av.FFmpegError as exc:
            error = self._stopped(exc)
        except BaseException as exc:  # VideoReadError, or a bug: raised again in the consumer's thread
            error = exc
        try:
            _put(self._queue, _End(error), self._stop)
        except _Stop:
            pass

    def _decode_stream(self, container, stream) -> bool:
        """Queue the frames wanted; True if decoding stopped at ``end`` rather than the file's end."""
        info = self.info
        first_kept = None
        for index, frame in enumerate(container.decode(stream)):
            pts = (frame.pts - info.start_pts) if frame.pts is not None else round(index / info.fps / info.time_base)
            time_s = float(pts * info.time_base)
            if self.end is not None and time_s >= self.end:
                return True
            self._last = (index, time_s)
            if self.start is not None and time_s < self.start:
                continue
            first_kept = index if first_kept is None else first_kept
            if (index - first_kept) % self.stride == 0:
                _put(self._queue, Frame(index, time_s, pts, _display_rgb(frame, info.rotation)), self._stop)
        if self._last is None:
            raise VideoReadError(f"{self.path}: no frame could be decoded; the file may be truncated or corrupt")
        return False

    def _shortfall(self) -> VideoReadError | None:
        """An error if the decoder ran out of frames well before the file's declared length (FFmpeg
        often just stops at a truncation); None if it got to the end."""
        index, time_s = self._last
        info = self.info
        if info.frames:
            missing = info.frames - (index + 1)
            if missing <= 2:
                return None
            expected = f"{info.frames} frames"
        elif info.duration_s is not None:
            # One frame interval for the last frame's own duration, two more of tolerance.
            if info.duration_s - time_s <= 3 / info.fps:
                return None
            expected = f"{info.duration_s:.2f} s"
        else:
            return None
        return VideoReadError(f"{self.path}: decoding stopped after frame {index} ({time_s:.2f} s) of {expected}; "
                              "the file is probably truncated")

    def _stopped(self, exc) -> VideoReadError:
        last = self._last
        where = "before the first frame" if last is None else f"after frame {last[0]} ({last[1]:.2f} s)"
        return VideoReadError(f"{self.path}: decoding stopped {where}: {_reason(exc)}; the file may be truncated "
                              "or corrupt")


def _display_rgb(frame, rotation: int) -> np.ndarray:
    """A decoded frame as uint8 RGB, rotated to be upright as a player shows it."""
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _batches(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_range(stride: int = 1, start: float | None = None, end: float | None = None) -> None:
    """RequestError for a stride/start/end that no video could honour (checked before any model loads)."""
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise RequestError(f"stride must be a whole number >= 1, not {stride!r}")
    if start is not None and start < 0:
        raise RequestError(f"start must be >= 0 seconds, not {start}")
    if start is not None and end is not None and end <= start:
        raise RequestError(f"end ({end} s) must be after start ({start} s)")


def check_bounds(info: VideoInfo, stride: int, start, end) -> None:
    """check_range, and VideoReadError for a start past this video's end."""
    check_range(stride, start, end)
    if start is not None and info.duration_s is not None and start >= info.duration_s:
        raise VideoReadError(f"{info.path}: start {start} s is past the video's end ({info.duration_s:.2f} s)")


def predicted_batches(segmenter, info, *, stride, start, end, batch_size, options):
    """Lists of (frame, result), one per ``predict_batch`` call, predicted while the next frames decode."""
    with FrameReader(info.path, info=info, stride=stride, start=start, end=end,
                     ahead=max(8, 2 * batch_size)) as frames:
        for batch in _batches(iter(frames), batch_size):
            yield list(zip(batch, segmenter.predict_batch([frame.rgb for frame in batch], **options)))


def segment_video(segmenter, path, *, stride: int = 1, start: float | None = None, end: float | None = None,
                  batch_size: int = 1, **options) -> Iterator[tuple[int, float, object]]:
    """Yield ``(frame_index, time_s, Result)`` for the frames of a video, lazily.

    The options are checked once, before the first frame; frames decode ahead in a thread and go
    to ``segmenter.predict_batch`` ``batch_size`` at a time. ``frame_index`` counts every frame of
    the file, ``time_s`` is the frame's own timestamp (seconds from the video's start).
    """
    segmenter.options(**options)
    info = probe(path)
    check_bounds(info, stride, start, end)
    for batch in predicted_batches(segmenter, info, stride=stride, start=start, end=end,
                                    batch_size=batch_size, options=options):
        for frame, result in batch:
            yield frame.index, frame.time_s, result


class OverlayEncoder:
    """An H.264 (else MPEG-4) video at a fixed size whose frames keep their source timestamps.

    Written to a unique hidden name beside ``path`` and renamed into place by ``close()``, which
    always finalizes the container (so a stopped run leaves a playable file, never a corrupt one).
    """

    def __init__(self, path, width: int, height: int, fps: float, time_base: Fraction):
        av = _av()
        self.path = Path(path)
        self.frames = 0
        self._last_pts = None
        handle, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".mp4.part")
        os.close(handle)
        self._tmp = Path(tmp)
        try:
            self._container = av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"})
            self._stream = self._add_stream(av, width, height, fps, time_base)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _add_stream(self, av, width, height, fps, time_base):
        rate = Fraction(fps).limit_denominator(1001)
        if "libx264" in av.codec.codecs_available:
            stream = self._container.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "20"})
            # 4:2:0 needs even sizes; 4:4:4 keeps an odd-sized input's exact size.
            stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        else:
            # Constant quantiser 3 (ffmpeg's -q:v 3; 118 is FFmpeg's FF_QP2LAMBDA), not the 200 kb/s default.
            stream = self._container.add_stream("mpeg4", rate=rate, options={"flags": "+qscale",
                                                                             "global_quality": str(3 * 118)})
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = width, height
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        self._time_base = time_base
        return stream

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one RGB frame at ``pts`` (in the time base given); a pts that does not increase is
        nudged forward, since the muxer refuses it."""
        av = _av()
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = pts, self._time_base
        self._container.mux(self._stream.encode(frame))
        self._last_pts = pts
        self.frames += 1

    def close(self) -> Path | None:
        """Flush the encoder and finalize the file; returns its path (None, nothing left, when no
        frame was written: an mp4 without frames plays nowhere)."""
        try:
            if self.frames:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
        if not self.frames:
            self._tmp.unlink(missing_ok=True)
            return None
        os.replace(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close without keeping anything (an error in the encoder itself)."""
        try:
            self._container.close()
        except Exception:
            pass
        self._tmp.unlink(missing_ok=True)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _dumps(record: dict) -> str:
    return json.dumps(record, default=_json_default, separators=(",", ":"))


@dataclass
class VideoOutcome:
    """What ``write_video`` left behind: ``done`` False with ``error`` set when it stopped early
    (the files still hold every frame processed before that)."""

    files: list[Path] = field(default_factory=list)
    frames: int = 0
    error: str | None = None
    done: bool = False


class VideoSink:
    """The render + encode side of a video's outputs: a thread that draws each overlay, encodes it,
    writes its S.jsonl line (and S_frames/ PNGs if asked) from a bounded queue. Made by
    :func:`video_sink`."""

    def __init__(self, out_dir: Path, stem: str, info: VideoInfo, header: dict, save, alpha: float, behind: int,
                 expected: int | None):
        self.save = set(save)
        self.alpha = alpha
        self.expected = expected  # frames, about (for progress), or None
        self.frames = 0
        self.error: BaseException | None = None
        self._first_pts = None
        self.jsonl_path = out_dir / f"{stem}.jsonl"
        self.video_path = out_dir / f"{stem}_overlay.mp4"
        self.frames_dir = out_dir / f"{stem}_frames"
        handle, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{stem}.", suffix=".jsonl.part")
        self._jsonl_tmp = Path(tmp)
        self._jsonl = os.fdopen(handle, "w", encoding="utf-8")
        self._jsonl.write(_dumps(header) + "\n")
        try:
            self._encoder = OverlayEncoder(self.video_path, info.width, info.height, info.fps, info.time_base)
        except BaseException:
            self._jsonl.close()
            self._jsonl_tmp.unlink(missing_ok=True)
            raise
        self._queue: queue.Queue = queue.Queue(maxsize=behind)
        self._thread = threading.Thread(target=self._run, name=f"segkit-encode {stem}", daemon=True)
        self._thread.start()

    def submit(self, frame: Frame, result) -> None:
        """Queue one frame; a SegkitError at once if the encoder thread has failed (disk full...)."""
        while True:
            if self.error is not None:
                raise SegkitError(f"{self.video_path}: writing stopped: {first_line(self.error)}") from self.error
            try:
                self._queue.put((frame, result), timeout=_QUEUE_POLL_S)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # keep draining so submit() never blocks on a dead thread
            try:
                self._write(*item)
            except BaseException as exc:  # reported to the main thread by submit()/close()
                self.error = exc

    def _write(self, frame: Frame, result) -> None:
        from . import render

        # The first frame written starts at 0 (a --start video does not open on a frozen frame).
        self._first_pts = frame.pts if self._first_pts is None else self._first_pts
        self._encoder.write(render.overlay(frame.rgb, result, alpha=self.alpha), frame.pts - self._first_pts)
        record = {"frame": frame.index, "time_s": round(frame.time_s, 6), "segments": result.to_coco()}
        record.update(self._write_frame_files(frame, result))
        self._jsonl.write(_dumps(record) + "\n")
        self.frames += 1

    def _write_frame_files(self, frame: Frame, result) -> dict:
        """S_frames/ PNGs for this frame, named by frame index; their names for the jsonl line."""
        if not self.save:
            return {}
        from . import render
        from .files import safe_name
        from .png import write_png

        self.frames_dir.mkdir(exist_ok=True)
        names = {}
        prefix = f"{frame.index:06d}"

        def put(name, image):
            write_png(image, self.frames_dir / name)
            return f"{self.frames_dir.name}/{name}"

        if "labels" in self.save:
            labels = render.label_image(result)
            if labels is not None:
                names["labels_file"] = put(f"{prefix}_labels.png", labels)
        if "heatmaps" in self.save and result.heatmaps is not None:
            names["heatmap_files"] = [put(f"{prefix}_{i:02d}_{safe_name(label, 'prompt', 100)}_heat.png",
                                          render.heatmap_gray(result.heatmaps[i]))
                                      for i, label in enumerate(result.labels)]
        if "masks" in self.save:
            names["mask_files"] = [put(f"{prefix}_{i:03d}_{safe_name(label, 'segment', 100)}_mask.png",
                                       result.masks[i].astype(np.uint8) * 255)
                                   for i, label in enumerate(result.labels)]
        return names

    def close(self, done: bool, error: str | None) -> VideoOutcome:
        """Finish the queued frames, finalize the video and S.jsonl (last line: how far it got).
        A second Ctrl-C while the last frames encode waits for them, then is raised."""
        self._queue.put(None)
        interrupted = False
        while self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt:
                interrupted, done, error = True, False, error or "interrupted (Ctrl-C)"
        if self.error is not None and error is None:
            done, error = False, f"{self.video_path}: writing stopped: {first_line(self.error)}"
        try:
            video = self._encoder.close()
        except Exception as exc:
            self._encoder.discard()
            video, done = None, False
            error = error or f"{self.video_path}: could not finish the video: {first_line(exc)}"
        self._jsonl.write(_dumps({"done": done, "frames": self.frames, "error": error}) + "\n")
        self._jsonl.close()
        os.replace(self._jsonl_tmp, self.jsonl_path)
        if interrupted:
            raise KeyboardInterrupt
        files = [path for path in (video, self.jsonl_path, self.frames_dir) if path is not None and path.exists()]
        return VideoOutcome(files=files, frames=self.frames, error=error, done=done)


def video_sink(path, info: VideoInfo, out_dir, stem: str, *, model_info, options: dict, save=(),
               alpha: float = 0.5, stride: int = 1, start: float | None = None, end: float | None = None,
               batch_size: int = 1) -> VideoSink:
    """Open ``S_overlay.mp4`` and ``S.jsonl`` (``S_frames/`` for the names in ``save``) of the video
    ``path`` for frames and their results as they come, whoever computes them: S.jsonl's first
    line records the video, ``model_info``, the ``options`` as recorded and the frame range.
    Refuses (SegkitError) to overwrite the input."""
    out_dir = Path(out_dir)
    for name in (f"{stem}_overlay.mp4", f"{stem}.jsonl"):
        target = out_dir / name
        if target.exists() and os.path.samefile(target, path):
            raise SegkitError(f"{target}: refusing to overwrite the input video; choose another -o")
    out_dir.mkdir(parents=True, exist_ok=True)
    save = [name for name in save if name in FRAME_FILE_CHOICES]
    header = {"video": info.to_json(), "model": model_info, "options": options, "stride": stride, "start": start,
              "end": end}
    return VideoSink(out_dir, stem, info, header, save, alpha, behind=max(8, 2 * batch_size),
                     expected=info.expected_frames(stride, start, end))


def write_frames(sink: VideoSink, batches, progress: Callable[[int, int | None], None] | None = None
                 ) -> VideoOutcome:
    """Write ``batches`` (lists of (Frame, Result), in frame order) through ``sink`` and close it.

    A VideoReadError from ``batches`` ends the video early: its files hold the frames done so far
    and S.jsonl's last line says why. Any other exception (Ctrl-C) finalizes the files the same
    way, then is raised. ``progress(frames_done, frames_expected)`` is called after every batch.
    """
    written = 0
    error = None
    try:
        try:
            for batch in batches:
                for frame, result in batch:
                    sink.submit(frame, result)
                written += len(batch)
                if progress is not None:
                    progress(written, sink.expected)
        finally:
            batches.close()  # stops the decoder thread whatever happened
    except VideoReadError as exc:
        error = str(exc)
    except BaseException as exc:
        sink.close(done=False, error="interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt)
                   else f"stopped: {first_line(exc)}")
        raise
    return sink.close(done=error is None, error=error)


def write_video(segmenter, path, out_dir, stem: str, *, options: dict, save=(), alpha: float = 0.5,
                stride: int = 1, start: float | None = None, end: float | None = None, batch_size: int = 1,
                model_info: dict | None = None, progress: Callable[[int, int | None], None] | None = None
                ) -> VideoOutcome:
    """Segment a video into ``S_overlay.mp4`` and ``S.jsonl`` (plus ``S_frames/`` PNGs for the
    labels/heatmaps/masks named in ``save``), with ``S`` = ``stem`` in ``out_dir``.

    ``save`` is what the user named explicitly (the image defaults do not apply to videos; names
    other than labels/heatmaps/masks are ignored). ``model_info`` goes into S.jsonl's first line
    (default: ``segmenter.source``).

    Decoding (thread) -> predict (this thread) -> render + encode (thread), bounded queues between.
    An unreadable video (VideoReadError) or a bad option or range (RequestError) raises before
    anything is written. A video that stops decoding part way returns an outcome with ``error``
    set; its files hold the frames done so far and S.jsonl's last line says so. Ctrl-C (or any
    other exception) finalizes the files the same way, then re-raises.
    ``progress(frames_done, frames_expected)`` is called after every batch.
    """
    used = segmenter.options(**options)
    info = probe(path)
    check_bounds(info, stride, start, end)
    sink = video_sink(path, info, out_dir, stem, model_info=model_info if model_info is not None else segmenter.source,
                      options=segmenter.recorded_options(used), save=save, alpha=alpha, stride=stride, start=start,
                      end=end, batch_size=batch_size)
    batches = predicted_batches(segmenter, info, stride=stride, start=start, end=end, batch_size=batch_size,
                                options=options)
    return write_frames(sink, batches, progress)
