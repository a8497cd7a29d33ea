"""One process pool for scoring images: workers return small per-image sums, the parent adds them."""

from __future__ import annotations

import multiprocessing
import os
import threading

# Below this many tasks a pool's start-up (about half a second) costs more than it saves.
POOL_MIN_TASKS = 16


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


def map_images(function, tasks, *, workers: int | None = None, progress=None):
    """Yield ``function(task)`` for each task, in order, on ``workers`` processes.

    Results stream back as they are ready, so the parent holds one image's sums at a time, never
    every image's masks. ``function`` may be a ``functools.partial`` carrying what all tasks share.
    ``progress`` (a tqdm-like object or None) is advanced once per task. With one
    worker, one task, or (with ``workers=None``) fewer than POOL_MIN_TASKS tasks, everything runs in
    this process. Scripts that call this must guard their top level with ``if __name__ == "__main__":``,
    as for any multiprocessing code.
    """
    tasks = list(tasks)
    if workers is None:
        workers = default_workers() if len(tasks) >= POOL_MIN_TASKS else 1
    workers = min(workers, len(tasks))
    if workers <= 1:
        for task in tasks:
            yield function(task)
            if progress is not None:
                progress.update(1)
        return
    context = multiprocessing.get_context(_start_method())
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    with context.Pool(workers) as pool:
        for result in pool.imap(function, tasks, chunksize=chunk):
            yield result
            if progress is not None:
                progress.update(1)
