"""The batch loop every front end shares: read, predict, write, report — one Outcome per input.

The CLI, ``segkit eval``, the web demo and the Ray engine are thin layers over :func:`run`. It never
exits the process: an input that fails becomes an Outcome with its reason and the batch goes on;
only errors that every next input would share (a bad option, a full disk) and interrupts stop it,
as exceptions. Images are read one batch ahead and written one image behind, in background
threads at a lower priority than the model's, so the model rarely waits for decoding, drawing or
PNG encoding and is never slowed by them (see background_priority).
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DiskFullError, RequestError, SegkitError

PENDING_WRITES = 1  # results written behind the model, at most (each holds an image and its masks)
BACKGROUND_NICE = 10  # how much nicer (Linux) the reading and writing threads are than the model's


def background_priority() -> None:
    """Lower the calling thread's priority below the model's (Linux and Windows; threads it starts
    inherit it on Linux).

    On a CPU the model's threads use every core and each of its parallel steps waits for the
    slowest of them: a reading or writing thread at the same priority that takes a core from one
    of them delays every step, which cost a 12 MP CutLER batch twice the writer's own CPU time.
    Below the model, reading and writing fill the moments the model leaves a core idle, and when
    they fall behind the model waits for them (PENDING_WRITES), which frees the cores they need.
    """
    if sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):  # a sandbox may forbid it: the threads then keep the model's
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICE))
    elif sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        kernel32.SetThreadPriority(kernel32.GetCurrentThread(), -1)  # THREAD_PRIORITY_BELOW_NORMAL


@dataclass(frozen=True)
class VideoSettings:
    """How videos among the inputs are read and what they write besides S_overlay.mp4 and S.jsonl:
    every ``stride``-th frame from ``start`` to ``end`` seconds; ``save`` the per-frame PNGs
    (labels, heatmaps, masks) the user asked for by name."""

    stride: int = 1
    start: float | None = None
    end: float | None = None
    save: tuple[str, ...] = ()


@dataclass
class Outcome:
    """What became of one input: its result and files, or the one-line reason it failed."""

    source: Path | str
    result: object = None
    files: list[Path] = field(default_factory=list)
    error: str | None = None
    exception: BaseException | None = None
    seconds: float = 0.0
    frames: int | None = None  # for a video: the frames processed

    @property
    def ok(self) -> bool:
        return self.error is None


def describe(source, exc: BaseException, for_cli: bool = False) -> str:
    """A failure as one line that names the input (and the fix where segkit knows it), in the API's
    words or, ``for_cli``, the command line's."""
    if isinstance(exc, SegkitError):
        text = exc.for_cli() if for_cli else str(exc)
        return text if text.startswith(str(source)) else f"{source}: {text}"
    if type(exc).__name__ == "OutOfMemoryError":
        fix = "a smaller --batch-size or --device cpu" if for_cli else "a smaller batch_size= or device='cpu'"
        return f"{source}: out of GPU memory; use {fix}"
    debug = " (rerun with --debug for the traceback)" if for_cli else ""
    return f"{source}: {type(exc).__name__}: {exc}{debug}"


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError"


def _release_gpu_memory() -> None:
    import torch

    torch.cuda.empty_cache()


def run(segmenter, inputs, options=None, writer=None, *, batch_size: int = 1, max_pixels: int | None = None,
        progress=None, video: VideoSettings | None = None, frame_progress=None):
    """Segment every input in order and yield one :class:`Outcome` per input, in input order.

    ``inputs`` are paths (or arrays / PIL images, named ``image-N``); ``options`` the predict
    options, checked before the first image (an OptionError is raised at once); ``writer`` an
    OutputWriter (or None: results only). ``progress(done, total)`` is called after each input.
    A path that is a video is streamed through ``segkit.video.write_video`` with ``video``'s
    settings (``frame_progress(source, frames_done, frames_expected)`` as it goes). A DiskFullError
    or an interrupt stops the batch; files of the image being written then are removed, never left
    partial, and a video's files are closed with what was done.
    """
    options = dict(options or {})
    segmenter.options(**options)  # a bad option fails before any image is read
    named = [(value if isinstance(value, (str, Path)) else f"image-{k}", value) for k, value in enumerate(inputs, 1)]
    total = len(named)
    done = 0
    for kind, items in _groups(named):
        if kind == "video":
            outcomes = [_video(segmenter, items[0][1], options, writer, video or VideoSettings(), batch_size,
                               frame_progress)]
        else:
            outcomes = _images(segmenter, items, options, writer, batch_size, max_pixels)
        for outcome in outcomes:
            done += 1
            if progress is not None:
                progress(done, total)
            yield outcome


def batch_plan(paths, batch_size: int) -> list[tuple[str, list[int]]]:
    """How :func:`run` batches ``paths``: ("video", [its index]) for each video, ("images", indices)
    for each batch of consecutive images. The Ray engine hands its workers the same batches, so a
    model that batches computes alike on both engines."""
    plan = []
    for kind, items in _groups(list(enumerate(paths))):
        indices = [index for index, _ in items]
        plan += [(kind, indices)] if kind == "video" else [(kind, batch) for batch in _chunks(indices, batch_size)]
    return plan


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _groups(named):
    """Runs of consecutive images, and each video on its own, in input order."""
    from .video import is_video

    group = []
    for item in named:
        if isinstance(item[1], (str, Path)) and is_video(item[1]):
            if group:
                yield "images", group
                group = []
            yield "video", [item]
        else:
            group.append(item)
    if group:
        yield "images", group


def _video(segmenter, path, options, writer, settings: VideoSettings, batch_size, frame_progress) -> Outcome:
    """One video through the streamed pipeline; a video that cannot be read is its Outcome's error."""
    from .video import write_video

    def write(progress):
        return write_video(segmenter, path, writer.folder, writer.video_stem(path), options=options,
                           save=settings.save, alpha=writer.alpha, stride=settings.stride, start=settings.start,
                           end=settings.end, batch_size=batch_size, model_info=writer.model_info.get("weights"),
                           progress=progress)

    return video_outcome(path, writer, write, frame_progress)


def video_outcome(path, writer, write, frame_progress=None) -> Outcome:
    """The Outcome of one video whose files ``write(progress)`` writes with ``writer`` and describes
    (a segkit.video.VideoOutcome), for this runner and the Ray engine's driver alike: a video that
    cannot be read, or stops part way, is its Outcome's error; a bad option or a full disk stops
    the batch. ``frame_progress(path, frames_done, frames_expected)`` as it goes."""
    from .errors import VideoReadError

    if writer is None:
        return Outcome(path, error=f"{path}: a video needs an output folder; use segkit.segment_video for results")
    started = time.perf_counter()
    progress = None if frame_progress is None else (lambda frames, expected: frame_progress(path, frames, expected))
    try:
        outcome = write(progress)
    except (RequestError, DiskFullError):
        raise
    except SegkitError as exc:  # not readable as a video, or its encoder failed
        return Outcome(path, error=describe(path, exc), exception=exc, seconds=time.perf_counter() - started)
    failure = None if outcome.done else VideoReadError(outcome.error or f"{path}: stopped early")
    return Outcome(path, files=outcome.files, error=failure and describe(path, failure), exception=failure,
                   seconds=time.perf_counter() - started, frames=outcome.frames)


def _images(segmenter, named, options, writer, batch_size, max_pixels):
    """Images read one batch ahead, predicted in batches, written one image behind (threads)."""
    from .imageio import as_rgb_array, read_image

    aborted = threading.Event()

    def read(item):
        source, value = item
        start = time.perf_counter()
        try:
            rgb = read_image(value, max_pixels=max_pixels) if isinstance(value, (str, Path)) else as_rgb_array(value)
            return source, rgb, time.perf_counter() - start, None
        except Exception as exc:
            return source, None, 0.0, exc

    def write(source, rgb, result, started):
        files = writer.write(source, rgb, result, abort=aborted.is_set) if writer is not None else []
        return Outcome(source, result, files, seconds=time.perf_counter() - started)

    batches = _chunks(named, batch_size)
    pending = collections.deque()  # (outcome or future) in input order

    def drain(keep: int):
        while len(pending) > keep or (pending and _ready(pending[0])):
            item = pending.popleft()
            yield item if isinstance(item, Outcome) else item.result()

    reader = ThreadPoolExecutor(1, thread_name_prefix="segkit-read", initializer=background_priority)
    writer_pool = ThreadPoolExecutor(1, thread_name_prefix="segkit-write", initializer=background_priority)
    try:
        next_batch = reader.submit(lambda b=batches[0]: [read(i) for i in b])
        for index in range(len(batches)):
            loaded = next_batch.result()
            if index + 1 < len(batches):
                next_batch = reader.submit(lambda b=batches[index + 1]: [read(i) for i in b])
            started = time.perf_counter()
            good = []
            for source, rgb, read_s, exc in loaded:
                if exc is not None:
                    pending.append(Outcome(source, error=describe(source, exc), exception=exc))
                else:
                    good.append((source, rgb, read_s))
            for source, rgb, result, exc in _predict(segmenter, good, options):
                if exc is not None:
                    if _is_oom(exc):
                        _release_gpu_memory()
                    pending.append(Outcome(source, error=describe(source, exc), exception=exc))
                    continue
                pending.append(writer_pool.submit(_guard, write, source, rgb, result, started))
                yield from drain(PENDING_WRITES)
            yield from drain(PENDING_WRITES)
        yield from drain(0)
    except BaseException:
        aborted.set()
        raise
    finally:
        for item in pending:
            if not isinstance(item, Outcome):
                item.cancel()
        writer_pool.shutdown(wait=True)
        reader.shutdown(wait=True, cancel_futures=True)


def _ready(item) -> bool:
    return isinstance(item, Outcome) or item.done()


def _guard(write, source, rgb, result, started) -> Outcome:
    """Run one write; a failure of this image becomes its Outcome, a full disk stops the batch."""
    try:
        return write(source, rgb, result, started)
    except (DiskFullError, KeyboardInterrupt):
        raise
    except Exception as exc:
        return Outcome(source, result, error=describe(source, exc), exception=exc)


def _predict(segmenter, batch, options):
    """Yield (source, rgb, result, error) for each image of ``batch``.

    Backends that batch get the whole batch, retried image by image if it fails; the others run
    image by image from the start, so no image is computed twice. A RequestError (the options
    themselves are impossible) stops the run.
    """
    if len(batch) > 1 and not segmenter.batches:
        for item in batch:
            yield from _predict(segmenter, [item], options)
        return
    if not batch:
        return
    try:
        results = segmenter.predict_batch([rgb for _, rgb, _ in batch], **options)
    except RequestError:
        raise
    except Exception as exc:
        if len(batch) == 1 or isinstance(exc, SegkitError):
            for source, rgb, _ in batch:
                yield source, rgb, None, exc
            return
        if _is_oom(exc):
            _release_gpu_memory()
        for item in batch:
            yield from _predict(segmenter, [item], options)
        return
    for (source, rgb, read_s), result in zip(batch, results):
        result.meta.setdefault("timings", {})["read_s"] = read_s
        yield source, rgb, result, None
