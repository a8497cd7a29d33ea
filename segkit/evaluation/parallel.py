"""One process pool for scoring images: workers return small sums, the parent adds them."""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading

# Below this many tasks a pool's start-up (about half a second) costs more than it saves.
POOL_MIN_TASKS = 16
# Tasks a worker takes at once: enough to make each message's cost (pickling, a wake-up of the
# parent) small beside the images' own, few enough that the last chunks still spread over the workers.
MAX_CHUNK = 64


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _start_method() -> str:
    """fork (quick) while this process has one thread; with more (torch, tqdm) forking can deadlock,
    so then forkserver; spawn where neither exists."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def map_chunks(function, tasks, *, workers: int | None = None, progress=None):
    """Yield ``function(chunk)`` for consecutive chunks (lists) of the tasks, in order, on ``workers``
    processes.

    ``function`` should reduce its chunk to one small result (the sum of its images' counts): the
    parent then receives one message per chunk instead of one per image, and holds one chunk's sums
    at a time, never every image's masks. ``function`` may be a ``functools.partial`` carrying what
    all tasks share. ``progress`` (a tqdm-like object or None) is advanced by each chunk's length.
    With one worker, one task, or (with ``workers=None``) fewer than POOL_MIN_TASKS tasks,
    everything runs in this process. Scripts that call this must guard their top level with
    ``if __name__ == "__main__":``, as for any multiprocessing code.
    """
    tasks = list(tasks)
    if workers is None:
        workers = default_workers() if len(tasks) >= POOL_MIN_TASKS else 1
    workers = min(workers, len(tasks))
    size = 1 if workers <= 1 else max(1, min(MAX_CHUNK, len(tasks) // (workers * 8)))
    chunks = [tasks[start:start + size] for start in range(0, len(tasks), size)]
    # Results first in zip: reading past the last one closes the pool.
    for result, chunk in zip(_results(function, chunks, workers), chunks):
        yield result
        if progress is not None:
            progress.update(len(chunk))


def _results(function, chunks, workers: int):
    if workers <= 1:
        yield from map(function, chunks)
        return
    context = multiprocessing.get_context(_start_method())
    with context.Pool(workers) as pool:
        yield from pool.imap(function, chunks)


def _each(function, chunk) -> list:
    return [function(task) for task in chunk]


def map_images(function, tasks, *, workers: int | None = None, progress=None):
    """Yield ``function(task)`` for each task, in order, on ``workers`` processes (as ``map_chunks``):
    for results the parent must add in image order, as float sums, to get the same numbers
    whatever the number of workers."""
    for results in map_chunks(functools.partial(_each, function), tasks, workers=workers, progress=progress):
        yield from results
