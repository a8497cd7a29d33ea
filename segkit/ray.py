"""Past one machine: segkit jobs on a Ray cluster, through Ray Data (``pip install "segkit[ray]"``).

The driver lists the inputs and resolves the weights once; a pool of Ray actors (one model each,
loaded once, GPUs assigned by Ray) reads and segments the images with segkit's own runner, so a
bad image fails alike on both engines. Two front ends:

- :func:`segment` returns a lazy Ray Dataset, one row per image, for pipelines of your own.
- :func:`run` (``segkit <command> --engine ray``) yields the local runner's Outcomes in input order
  and writes every image in the driver with the same OutputWriter, so the files, their names and
  S.json are those of a local run (timings also say ``"engine": "ray"`` and which worker ran it).

Guarantees of :func:`run`:

- Every input gets exactly one Outcome and is written at most once: output names are claimed by
  the one driver, in input order, and a result that arrives twice (a retried task) is dropped.
- A worker lost mid-job (a crash, a killed process, a lost node) is restarted by Ray and its
  in-flight images are computed again: Ray Data's actor pools restart actors and retry their
  tasks without limit (``max_restarts=-1``, ``max_task_retries=-1``; Ray 2.60 deprecates the
  ``ray_remote_args`` that would change them), so an image that kills every worker it meets stalls the job rather than failing alone.
  A task Ray gives up on for another reason becomes failed Outcomes ("lost") and the job goes on.
- What is written stays written: results are written by the driver as they arrive, so a driver
  interrupted or lost leaves only whole images (as locally); the job is not resumable by Ray.
- Images are computed at least once, not exactly once: a retry recomputes what the lost worker
  held.

Videos are not handled here yet (the video engine is being built separately): they fail with a
one-line error naming the local engine.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
import traceback
import zlib
from pathlib import Path

from .errors import RequestError, SegkitError

INSTALL_HINT = 'pip install "segkit[ray]"'
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "SEGKIT_CACHE",
                 "XDG_CACHE_HOME")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


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
        show_progress: bool = True):
    """Like :func:`segkit.runner.run`, on Ray: one Outcome per input path, in input order.

    ``load_kwargs`` are segkit.load's (weights, config, device, dtype); the weights are resolved
    here, once (a local path stays as it is). ``address``: a Ray cluster (``ray://…`` or ``host:port``);
    none starts a local one (shut down at the end) unless Ray is already initialised. ``workers``
    actors (default: one per GPU share, else one per node) each hold ``gpus_per_worker`` GPUs and
    ``cpus_per_worker`` CPUs (default: the node's CPUs shared among the workers).
    A RequestError from the workers (an impossible option) and a WorkerError (the model does not
    load) stop the job, as they stop a local run.
    """
    import segkit

    from .runner import Outcome, describe

    ray = require_ray()
    inputs = [Path(p) for p in inputs]
    total = len(inputs)
    segkit.check(model_name, device=load_kwargs.get("device", "auto"), dtype=load_kwargs.get("dtype"),
                 **dict(options or {}))
    if not inputs:
        return
    load_kwargs = _for_workers(model_name, load_kwargs)
    started_here = not ray.is_initialized()
    _connect(address)
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    if not show_progress:
        data_logger.setLevel(logging.ERROR)  # nor the notice that progress bars are off
    try:
        dataset = ray.data.from_items([{"index": i, "path": str(p), "absolute": str(p.absolute())}
                                       for i, p in enumerate(inputs)],
                                      override_num_blocks=max(1, -(-total // batch_size)))
        dataset.context.execution_options.preserve_order = True
        dataset.context.max_errored_blocks = -1  # a task Ray gives up on: its images fail, the job goes on
        dataset.context.enable_progress_bars = show_progress
        dataset = _map(dataset, _Worker, dict(model_name=model_name, load_kwargs=load_kwargs,
                                              options=dict(options or {}), batch_size=batch_size,
                                              max_pixels=max_pixels, rows=False, folder=os.getcwd()),
                       batch_size=batch_size, workers=workers, gpus_per_worker=gpus_per_worker,
                       cpus_per_worker=cpus_per_worker)
        expected = 0
        done = 0

        def lost_until(index):
            nonlocal expected
            while expected < index:
                source = inputs[expected]
                expected += 1
                lost = WorkerError(f"{source}: lost: its Ray task failed (see the Ray logs)")
                yield Outcome(source, error=str(lost), exception=lost)

        def finished(outcome):
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)
            return outcome

        for row in dataset.iter_rows():
            index = int(row["index"])
            if index < expected:
                continue  # a retried task's second answer: already written
            if row["fatal"] is not None:
                raise pickle.loads(row["fatal"])
            for outcome in lost_until(index):
                yield finished(outcome)
            expected = index + 1
            yield finished(_outcome(inputs[index], row, writer, max_pixels, Outcome, describe))
        for outcome in lost_until(total):
            yield finished(outcome)
    finally:
        data_logger.setLevel(saved_level)
        if started_here:
            ray.shutdown()


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
    """One Ray actor: loads the model once and segments batches of paths with segkit's runner."""

    def __init__(self, model_name, load_kwargs, options, batch_size, max_pixels, rows, folder=None):
        import segkit

        self.options, self.batch_size, self.max_pixels, self.rows = options, batch_size, max_pixels, rows
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
        from .runner import run

        named = [str(p) for p in batch["path"]]
        paths = named if self.rows or self.in_driver_folder else [str(p) for p in batch["absolute"]]
        if self.load_error is not None:
            return self._fatal_rows(batch, paths, self.load_error)
        start = time.perf_counter()
        video = [Path(p).suffix.lower() in VIDEO_SUFFIXES for p in paths]
        try:
            computed = run(self.segmenter, [Path(p) for p, v in zip(paths, video) if not v], self.options, None,
                           batch_size=self.batch_size, max_pixels=self.max_pixels)
            outcomes = [_video_outcome(p) if v else next(computed) for p, v in zip(paths, video)]
        except RequestError as exc:
            return self._fatal_rows(batch, paths, exc)
        seconds = (time.perf_counter() - start) / max(1, len(paths))
        for outcome in outcomes:
            if outcome.ok:
                outcome.result.meta.setdefault("timings", {}).update(engine="ray", worker=self.where)
        if self.rows:
            return _rows(paths, outcomes)
        errors = [o.error and o.error.replace(p, n) for o, p, n in zip(outcomes, paths, named)]
        return {"index": batch["index"], "fatal": [None] * len(paths), "error": errors,
                "exception": [_pickled_exception(o.exception) for o in outcomes],
                "result": [_pack(o.result) if o.ok else None for o in outcomes], "seconds": [seconds] * len(paths)}

    def _fatal_rows(self, batch, paths, exc):
        """Every row of the batch carries the error that stops the job (the driver raises it)."""
        if self.rows:
            raise exc
        return {"index": batch["index"], "fatal": [pickle.dumps(exc)] * len(paths), "error": [None] * len(paths),
                "exception": [None] * len(paths), "result": [None] * len(paths), "seconds": [0.0] * len(paths)}


def _video_outcome(path):
    from .errors import ImageReadError
    from .runner import Outcome, describe

    exc = ImageReadError(f"{path}: videos are not supported with --engine ray yet; run them with --engine local")
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
