"""Past one machine: segkit jobs on a Ray cluster, through Ray Data (``pip install "segkit[ray]"``).

The driver lists the inputs and resolves the weights once; a pool of Ray actors (one model each,
loaded once, GPUs assigned by Ray) reads and segments the inputs with segkit's own runner, so a
bad image fails alike on both engines. Two front ends:

- :func:`segment` returns a lazy Ray Dataset, one row per image, for pipelines of your own (a
  video there is a row with an error that points to :func:`run`).
- :func:`run` (``segkit <command> --engine ray``, ``segkit eval … --engine ray``) yields the local
  runner's Outcomes in input order and writes every input in the driver with the same code as a
  local run (OutputWriter, segkit.video's sink), so the files, their names, S.json and S.jsonl are
  those of a local run (timings also say ``"engine": "ray"`` and which worker ran it). The
  workers get the local runner's batches (runner.batch_plan), so batched models compute alike.

A video is one task, streamed by one actor: it decodes the frames (``--stride/--start/--end``),
segments them ``batch_size`` at a time and yields their results as it goes, each batch its own
Ray Data block, so they reach the driver while the video is still being segmented. The driver
decodes the same frames itself to draw them (pixels never travel back, as for images) and writes
S_overlay.mp4, S.jsonl and S_frames/ through segkit.video's own sink, counting frames for the
progress bars as it writes them. A video that cannot be read, or stops decoding part way, ends
as locally: the same error, the same partial (playable) files, and the job goes on.

Guarantees of :func:`run`:

- Every input gets exactly one Outcome and is written at most once: output names are claimed by
  the one driver, in input order, and a result that arrives twice (a retried task) is dropped;
  so is a video frame that arrives again: each frame is written once, in frame order.
- A worker lost mid-job (a crash, a killed process, a lost node) is restarted by Ray and its
  in-flight images are computed again: Ray Data's actor pools restart actors and retry their
  tasks without limit (``max_restarts=-1``, ``max_task_retries=-1``; Ray 2.60 deprecates the
  ``ray_remote_args`` that would change them), so an image that kills every worker it meets
  stalls the job rather than failing alone. A task Ray gives up on for another reason becomes
  failed Outcomes ("lost") and the job goes on.
- A video whose worker is lost is segmented again from its first frame on the restarted worker;
  the frames the driver already wrote stay written and it goes on from the next one (Ray replays
  the task's blocks after those it had delivered). So the files equal an uninterrupted run's
  when the model is deterministic; otherwise the frames after the restart hold the second
  computation's results. Where a replay's frames do not line up with those written, the video
  fails (its files keep what was written) rather than skip or repeat a frame; a video whose task
  Ray gives up on fails ("lost"), its files closed likewise.
- What is written stays written: results are written by the driver as they arrive, so a driver
  interrupted or lost leaves only whole images and playable videos (as locally); the job is not
  resumable by Ray.
- Inputs are computed at least once, not exactly once: a retry recomputes what the lost worker
  held (a whole video, from its first frame).
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import RequestError, SegkitError

INSTALL_HINT = 'pip install "segkit[ray]"'
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "SEGKIT_CACHE",
                 "XDG_CACHE_HOME")
STREAMED_BLOCK_BYTES = 1  # Ray Data's target block size: every batch a worker yields travels at once


class RayUnavailableError(RequestError):
    """Ray is not installed where the driver runs."""


class WorkerError(SegkitError):
    """What went wrong on the workers, in the words a local run would use: the model did not load,
    an image's exception could not travel back, or Ray gave up on a task."""


def require_ray():
    """The ray module, or a one-line RayUnavailableError with the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError(f"--engine ray needs Ray; install it with: {INSTALL_HINT}") from None
    return ray


def resolve_weights(model_name: str, weights=None):
    """Resolve the weights once, on the driver: (local path the workers load, what S.json records)."""
    from .registry import get_spec
    from .weights import describe, resolve

    spec = get_spec(model_name)
    path = resolve(spec, weights)
    return str(path.resolve()), describe(spec, weights)


def segment(dataset_or_paths, model: str, *, weights=None, config=None, device="auto", dtype=None,
            workers: int | None = None, gpus_per_worker: float = 0, cpus_per_worker: float | None = None,
            batch_size: int = 1, max_pixels: int | None = None, **options):
    """A lazy Ray Dataset with one row per image: ``path``, ``width``, ``height``, ``segments``
    (Result.to_coco(): COCO RLE masks, boxes, ids), ``scores``, ``labels``, ``timings`` and
    ``error`` (None, or the one-line reason the image failed, as a local run words it).

    ``dataset_or_paths``: a Ray Dataset with a ``path`` column, or paths (rows then name them by
    their absolute paths). Connects to Ray (or starts
    a local one) if it is not initialised yet. Options are checked here, before anything runs.
    """
    import segkit

    segkit.check(model, device=device, dtype=dtype, **options)
    ray = _connect(None)
    if isinstance(dataset_or_paths, (str, Path)):
        dataset_or_paths = [dataset_or_paths]
    if isinstance(dataset_or_paths, ray.data.Dataset):
        dataset = dataset_or_paths
    else:
        dataset = ray.data.from_items([{"path": str(Path(p).absolute())} for p in dataset_or_paths])
    load_kwargs = _for_workers(model, {"weights": weights, "config": config, "device": device, "dtype": dtype})
    return _map(dataset, _Worker, dict(model_name=model, load_kwargs=load_kwargs, options=options,
                                       batch_size=batch_size, max_pixels=max_pixels, rows=True),
                batch_size=batch_size, workers=workers, gpus_per_worker=gpus_per_worker,
                cpus_per_worker=cpus_per_worker)


def run(model_name: str, load_kwargs: dict, inputs, options, writer, *, batch_size: int = 1,
        max_pixels: int | None = None, address: str | None = None, workers: int | None = None,
        gpus_per_worker: float = 0, cpus_per_worker: float | None = None, progress=None,
        video=None, frame_progress=None, show_progress: bool = True):
    """Like :func:`segkit.runner.run`, on Ray: one Outcome per input path, in input order.

    ``load_kwargs`` are segkit.load's (weights, config, device, dtype); the weights are resolved
    here, once (a local path stays as it is). ``address``: a Ray cluster (``ray://…`` or ``host:port``);
    none starts a local one (shut down at the end) unless Ray is already initialised. ``workers``
    actors (default: one per GPU share, else one per node) each hold ``gpus_per_worker`` GPUs and
    ``cpus_per_worker`` CPUs (default: the node's CPUs shared among the workers).
    Videos are read with ``video``'s settings (a runner.VideoSettings) and report
    ``frame_progress(source, frames_done, frames_expected)`` as their frames are written.
    A RequestError from the workers (an impossible option) and a WorkerError (the model does not
    load) stop the job, as they stop a local run.
    """
    import segkit

    from .runner import Outcome, VideoSettings, background_priority, batch_plan, describe

    ray = require_ray()
    inputs = [Path(p) for p in inputs]
    total = len(inputs)
    video = video or VideoSettings()
    segkit.check(model_name, device=load_kwargs.get("device", "auto"), dtype=load_kwargs.get("dtype"),
                 **dict(options or {}))
    if not inputs:
        return
    load_kwargs = _for_workers(model_name, load_kwargs)
    started_here = not ray.is_initialized()
    _connect(address)
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    writing = None
    if not show_progress:
        data_logger.setLevel(logging.ERROR)  # nor the notice that progress bars are off
    try:
        # One row per batch of a local run (each video alone), so that batches compute alike.
        plan = [{"indices": indices, "paths": [str(inputs[i]) for i in indices],
                 "absolute": [str(inputs[i].absolute()) for i in indices], "video": kind == "video"}
                for kind, indices in batch_plan(inputs, batch_size)]
        dataset = ray.data.from_items(plan, override_num_blocks=len(plan))
        dataset.context.execution_options.preserve_order = True
        dataset.context.max_errored_blocks = -1  # a task Ray gives up on: its images fail, the job goes on
        dataset.context.enable_progress_bars = show_progress
        dataset.context.target_max_block_size = STREAMED_BLOCK_BYTES
        dataset = _map(dataset, _Worker, dict(model_name=model_name, load_kwargs=load_kwargs,
                                              options=dict(options or {}), batch_size=batch_size,
                                              max_pixels=max_pixels, rows=False, folder=os.getcwd(), video=video),
                       batch_size=1, workers=workers, gpus_per_worker=gpus_per_worker,
                       cpus_per_worker=cpus_per_worker)
        expected = 0
        done = 0

        def lost_until(index):
            nonlocal expected
            while expected < index:
                source = inputs[expected]
                expected += 1
                lost = _lost(source)
                yield Outcome(source, error=str(lost), exception=lost)

        def finished(outcome):
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)
            return outcome

        rows = _Rows(dataset.iter_rows())
        # The driver draws and encodes below the workers' priority, as the local runner's writer does
        # (on one machine they share the cores; see runner.background_priority).
        writing = ThreadPoolExecutor(1, thread_name_prefix="segkit-write", initializer=background_priority)
        for row in rows:
            index = int(row["index"])
            if index < expected:
                continue  # a retried task's second answer: already written
            if row["fatal"] is not None:
                raise pickle.loads(row["fatal"])
            for outcome in lost_until(index):
                yield finished(outcome)
            expected = index + 1
            if row["part"] == "image":
                outcome = writing.submit(_outcome, inputs[index], row, writer, max_pixels, Outcome, describe).result()
            else:
                try:
                    outcome = _video(inputs[index], index, row, rows, writer, video, batch_size, frame_progress)
                except _Fatal as fatal:
                    raise fatal.error from None
            yield finished(outcome)
        for outcome in lost_until(total):
            yield finished(outcome)
    finally:
        if writing is not None:
            writing.shutdown(wait=True)  # an image being written is finished whole
        data_logger.setLevel(saved_level)
        if started_here:
            ray.shutdown()


class _Rows:
    """The job's rows in order; a video's stream hands back the first row of the next input."""

    def __init__(self, rows):
        self._rows = iter(rows)
        self._back = []

    def __iter__(self):
        return self

    def __next__(self):
        return self._back.pop() if self._back else next(self._rows)

    def put_back(self, row) -> None:
        self._back.append(row)


class _Fatal(Exception):
    """An error that stops the job, met inside a video's stream: it passes the per-video handling
    untouched and :func:`run` raises ``error`` itself."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _lost(source) -> WorkerError:
    return WorkerError(f"{source}: lost: its Ray task failed (see the Ray logs)")


def _for_workers(model_name, load_kwargs) -> dict:
    """segkit.load's arguments as every worker can use them: the weights resolved once, here, and
    local paths made absolute (workers do not share the driver's working folder)."""
    kwargs = dict(load_kwargs)
    kwargs["weights"], _ = resolve_weights(model_name, kwargs.get("weights"))
    if kwargs.get("config") is not None and Path(kwargs["config"]).exists():
        kwargs["config"] = str(Path(kwargs["config"]).resolve())
    return kwargs


def _connect(address):
    """The ray module, connected: to ``address``, to the Ray already initialised, or a local one."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    return ray


def _map(dataset, worker, worker_kwargs, *, batch_size, workers, gpus_per_worker, cpus_per_worker):
    """``dataset.map_batches`` through a pool of ``workers`` actors that each hold one model."""
    import ray

    if workers is None:
        gpus = ray.cluster_resources().get("GPU", 0)
        workers = int(gpus // gpus_per_worker) if gpus_per_worker else len([n for n in ray.nodes() if n["Alive"]])
    workers = max(1, workers)
    if cpus_per_worker is None:
        node_cpus = max(n["Resources"].get("CPU", 1) for n in ray.nodes() if n["Alive"])
        cpus_per_worker = max(1, min(node_cpus, ray.cluster_resources().get("CPU", 1) // workers))
    env = {key: os.environ[key] for key in FORWARDED_ENV if key in os.environ}  # offline mode, caches
    return dataset.map_batches(
        worker, fn_constructor_kwargs=worker_kwargs, batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus_per_worker or None,
        num_cpus=cpus_per_worker, runtime_env={"env_vars": env} if env else None)


class _Worker:
    """One Ray actor: loads the model once and segments batches of paths with segkit's runner, each
    video streamed frame batch by frame batch."""

    def __init__(self, model_name, load_kwargs, options, batch_size, max_pixels, rows, folder=None, video=None):
        import segkit

        self.options, self.batch_size, self.max_pixels, self.rows = options, batch_size, max_pixels, rows
        self.video = video
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        # In the driver's working folder where this node has it (one machine, a shared file system),
        # inputs and messages name the files exactly as the user did; elsewhere, absolute paths.
        self.in_driver_folder = folder is not None and os.path.isdir(folder)
        if self.in_driver_folder:
            os.chdir(folder)
        self.load_error = None
        self._threads()
        try:
            self.segmenter = segkit.load(model_name, **load_kwargs)
        except SegkitError as exc:
            self.load_error = exc
        except Exception as exc:
            self.load_error = WorkerError(f"could not load {model_name}: {type(exc).__name__}: {exc} "
                                          "(rerun with --debug for details)")

    @staticmethod
    def _threads():
        """As many torch threads as CPUs Ray gave this actor (a local run uses the machine's)."""
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:
            torch.set_num_threads(max(1, int(cpus)))

    def __call__(self, batch):
        """:func:`segment`'s rows for a batch of paths; for :func:`run`, the rows of each planned batch
        in input order: an image's row, a video's rows as its frames are segmented (a generator, so
        Ray Data sends each batch of rows on at once)."""
        if self.rows:
            yield self._public_rows([str(p) for p in batch["path"]])
            return
        for indices, named, absolute, video in zip(batch["indices"], batch["paths"], batch["absolute"],
                                                   batch["video"]):
            indices, named = [int(i) for i in indices], [str(p) for p in named]
            paths = named if self.in_driver_folder else [str(p) for p in absolute]
            if self.load_error is not None:
                yield _fatal_rows(indices, self.load_error)
            elif video:
                yield from self._video_rows(indices[0], paths[0], named[0])
            else:
                yield self._image_rows(indices, paths, named)

    def _segment_images(self, paths):
        """The runner's Outcomes for image paths, each result's timings saying where it ran."""
        from .runner import run

        outcomes = list(run(self.segmenter, [Path(p) for p in paths], self.options, None,
                            batch_size=self.batch_size, max_pixels=self.max_pixels))
        for outcome in outcomes:
            if outcome.ok:
                outcome.result.meta.setdefault("timings", {}).update(engine="ray", worker=self.where)
        return outcomes

    def _public_rows(self, paths):
        """:func:`segment`'s rows: one per image (a video is an error there)."""
        from .video import is_video

        if self.load_error is not None:
            raise self.load_error
        video = [is_video(p) for p in paths]
        computed = iter(self._segment_images([p for p, v in zip(paths, video) if not v]))
        return _rows(paths, [_unsupported_video(p) if v else next(computed) for p, v in zip(paths, video)])

    def _image_rows(self, indices, paths, named):
        start = time.perf_counter()
        try:
            outcomes = self._segment_images(paths)
        except RequestError as exc:
            return _fatal_rows(indices, exc)
        seconds = (time.perf_counter() - start) / len(paths)
        return _job_rows(indices, "image", error=[o.error and o.error.replace(p, n)
                                                  for o, p, n in zip(outcomes, paths, named)],
                         exception=[_pickled_exception(o.exception) for o in outcomes],
                         result=[_pack(o.result) if o.ok else None for o in outcomes], seconds=[seconds] * len(paths))

    def _video_rows(self, index, path, name):
        """A video's rows: "video" (it opened: the options as recorded), then "frame" rows (a frame's
        index and result) a predicted batch at a time, then "end" (the error that stopped it, if any)."""
        from .video import check_bounds, predicted_batches, probe

        settings = self.video
        try:
            used = self.segmenter.options(**self.options)
            info = probe(path)
            check_bounds(info, settings.stride, settings.start, settings.end)
        except Exception as exc:
            yield _end_row(index, exc, path, name)
            return
        yield _job_rows([index], "video", options=[pickle.dumps(self.segmenter.recorded_options(used))])
        batches = predicted_batches(self.segmenter, info, stride=settings.stride, start=settings.start,
                                    end=settings.end, batch_size=self.batch_size, options=self.options)
        error = None
        try:
            for predicted in batches:
                yield _job_rows([index] * len(predicted), "frame", frame=[frame.index for frame, _ in predicted],
                                result=[_pack(result) for _, result in predicted])
        except Exception as exc:  # a decoding error part way (VideoReadError), or the model's
            error = exc
        finally:
            batches.close()
        yield _end_row(index, error, path, name)


JOB_COLUMNS = ("frame", "fatal", "error", "exception", "result", "options", "seconds")


def _job_rows(indices, part, **columns) -> dict:
    """Rows of :func:`run`'s job for the inputs ``indices``: every column, None where not given.
    ``part`` says what they carry: "image", or a video's "video", "frame" and "end" rows."""
    rows = {"index": list(indices), "part": [part] * len(indices)}
    for key in JOB_COLUMNS:
        rows[key] = columns.get(key, [None] * len(indices))
    return rows


def _fatal_rows(indices, exc) -> dict:
    """Every row carries the error that stops the job (the driver raises it)."""
    return _job_rows(indices, "image", fatal=[pickle.dumps(exc)] * len(indices))


def _end_row(index, exc, path, name) -> dict:
    """A video's last row: how it ended, its error naming the file as the driver does."""
    error = None if exc is None else str(exc).replace(path, name)
    return _job_rows([index], "end", error=[error], exception=[_pickled_exception(exc)])


def _unsupported_video(path):
    from .errors import ImageReadError
    from .runner import Outcome, describe

    exc = ImageReadError(f"{path}: segkit.ray.segment gives one row per image; segment videos with "
                         "segkit.ray.run (--engine ray) or segkit.segment_video")
    return Outcome(path, error=describe(path, exc), exception=exc)


def _rows(paths, outcomes):
    """The public rows of :func:`segment`: plain values (COCO RLE, lists, dicts) Arrow can hold."""
    from .writer import jsonable

    out = {key: [] for key in ("path", "width", "height", "segments", "scores", "labels", "timings", "error")}
    for path, outcome in zip(paths, outcomes):
        result = outcome.result
        height, width = result.image_size if outcome.ok else (None, None)
        out["path"].append(path)
        out["width"].append(width)
        out["height"].append(height)
        out["segments"].append(result.to_coco() if outcome.ok else [])
        out["scores"].append([float(s) for s in result.scores] if outcome.ok else [])
        out["labels"].append(list(result.labels) if outcome.ok else [])
        out["timings"].append(jsonable(result.meta.get("timings", {})) if outcome.ok else None)
        out["error"].append(outcome.error)
    return out


def _pack(result) -> bytes:
    """A Result as compressed bytes, bit-exact: masks as packed bits, every other field as is."""
    import dataclasses

    import numpy as np

    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    masks = fields.pop("masks")
    fields["masks_packed"] = (masks.shape, np.packbits(masks, axis=None))
    return zlib.compress(pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL), 1)


def _unpack(data: bytes):
    import numpy as np

    from .result import Result

    fields = pickle.loads(zlib.decompress(data))
    shape, bits = fields.pop("masks_packed")
    count = int(np.prod(shape))
    fields["masks"] = np.unpackbits(bits, count=count).reshape(shape).astype(bool)
    return Result(**fields)


def _pickled_exception(exc):
    """The exception with its remote traceback as a note (for --debug), or None if it won't pickle
    (the driver then raises the error's text as a WorkerError)."""
    if exc is None:
        return None
    text = "".join(traceback.format_exception(exc))
    try:
        exc.add_note(f"(on the Ray worker {socket.gethostname()}:{os.getpid()})\n{text}")
        return pickle.dumps(exc)
    except Exception:
        return None


def _outcome(source, row, writer, max_pixels, Outcome, describe):
    """The Outcome of one row: the worker's error, or its Result written by the driver's writer."""
    from .errors import DiskFullError, ImageReadError
    from .imageio import read_image

    if row["error"] is not None:
        exception = pickle.loads(row["exception"]) if row["exception"] is not None else WorkerError(row["error"])
        return Outcome(source, error=row["error"], exception=exception)
    start = time.perf_counter()
    result = _unpack(row["result"])
    try:
        files = []
        if writer is not None:
            rgb = read_image(source, max_pixels=max_pixels)  # for the overlay: pixels never travel back
            if rgb.shape[:2] != result.image_size:
                raise ImageReadError(f"{source}: the file changed while it was segmented; run it again")
            files = writer.write(source, rgb, result)
    except (DiskFullError, KeyboardInterrupt):
        raise
    except Exception as exc:
        return Outcome(source, result, error=describe(source, exc), exception=exc)
    return Outcome(source, result, files, seconds=row["seconds"] + time.perf_counter() - start)


def _worker_exception(row) -> BaseException:
    """The exception a worker's row reports; a video's read error in the driver's words."""
    from .errors import VideoReadError

    exc = pickle.loads(row["exception"]) if row["exception"] is not None else WorkerError(row["error"])
    return VideoReadError(row["error"]) if isinstance(exc, VideoReadError) else exc


def _video(source, index, first, rows, writer, settings, batch_size, frame_progress):
    """The Outcome of a video a worker streams (``first`` is its first row): its files written here,
    by segkit.video's own sink, from the worker's frame results and the driver's own decoded frames."""
    from .runner import video_outcome
    from .video import check_bounds, probe, video_sink, write_frames

    def write(progress):
        if first["part"] == "end":
            raise _worker_exception(first)  # it did not open there: the error a local run gives
        info = probe(source)
        check_bounds(info, settings.stride, settings.start, settings.end)
        sink = video_sink(source, info, writer.folder, writer.video_stem(source),
                          model_info=writer.model_info.get("weights"), options=pickle.loads(first["options"]),
                          save=settings.save, alpha=writer.alpha, stride=settings.stride, start=settings.start,
                          end=settings.end, batch_size=batch_size)
        return write_frames(sink, _streamed(source, index, info, settings, rows, batch_size), progress)

    return video_outcome(source, writer, write, frame_progress)


def _streamed(source, index, info, settings, rows, batch_size):
    """Lists of (Frame, Result) for video ``index``: each result the worker sent with the frame the
    driver decodes itself (pixels never travel). The worker's error, if it stopped, is raised at
    the end; rows that arrive again from a retried task are skipped."""
    from .errors import VideoReadError
    from .video import FrameReader

    with FrameReader(source, info=info, stride=settings.stride, start=settings.start, end=settings.end,
                     ahead=max(8, 2 * batch_size)) as reader:
        frames = iter(reader)
        last = -1
        for row in rows:
            at = int(row["index"])
            if at > index:  # the next input's first row: this video's task was lost
                rows.put_back(row)
                break
            if at < index or row["part"] == "video" or (row["part"] == "frame" and row["frame"] <= last):
                continue  # sent again by a retried task: written already
            if row["fatal"] is not None:
                raise _Fatal(pickle.loads(row["fatal"]))
            if row["part"] == "end":
                if row["error"] is not None:
                    raise _worker_exception(row)
                return
            result = _unpack(row["result"])
            frame = next(frames, None)
            if frame is None or frame.index != row["frame"] or frame.rgb.shape[:2] != result.image_size:
                raise VideoReadError(f"{source}: the frames read here are not those segmented (the file changed "
                                     "while it was segmented, or a retried task's frames do not line up); "
                                     "run it again")
            last = frame.index
            yield [(frame, result)]
        raise _lost(source)
