"""The same CutLER job locally and with the Ray engine, at equal cores: start-up and steady state.

The full-size CutLER cascade (R50-FPN) with random weights (see cutler_speed.py), 32 photos at
640x480 (the examples, repeated), written as a CLI run writes them (overlay, labels, S.json).
Locally: segkit's runner with ``--threads`` torch threads. Ray: a local Ray with ``--threads``
CPUs and one worker holding all of them (so both use the same cores), the driver writing.

Start-up is reported on its own (local: loading the model; Ray: starting the cluster, then the
actor and its model load up to the first image's result), and steady state is the time per image
after the first result: the median gap between consecutive results (and the mean, (last - first)
/ (images - 1)). The engines take turns for ``--rounds`` rounds and each figure is the best round's
(other processes on a shared machine only ever slow a round down, so the fastest is the least
disturbed); every round's steady state is printed too.

    python benchmarks/ray_scaling.py [--images 32] [--threads 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` PNGs of the example photos at 640x480, cycled."""
    from PIL import Image

    photos = sorted((REPO / "examples").glob("*.jpg"))
    paths = []
    for k in range(count):
        path = folder / f"photo{k:03d}.png"
        Image.open(photos[k % len(photos)]).convert("RGB").resize((640, 480), Image.BILINEAR).save(path)
        paths.append(path)
    return paths


def steady(times: list[float]) -> dict:
    """Seconds per image after the first result: the median gap and the mean."""
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"steady": statistics.median(gaps), "mean": (times[-1] - times[0]) / len(gaps)}


def run_local(weights, paths, out, threads):
    import torch

    import segkit
    from segkit.runner import run
    from segkit.writer import OutputWriter

    torch.set_num_threads(threads)
    start = time.perf_counter()
    segmenter = segkit.load("cutler", weights=weights, device="cpu")
    loaded = time.perf_counter() - start
    writer = OutputWriter(out, inputs=paths, model_info={"weights": segmenter.source})
    start = time.perf_counter()
    times = []
    for outcome in run(segmenter, paths, {}, writer):
        assert outcome.ok, outcome.error
        times.append(time.perf_counter() - start)
    writer.close()
    return {"startup": loaded, "first": times[0], **steady(times), "total": loaded + times[-1]}


def run_ray(weights, paths, out, threads):
    import ray

    import segkit.ray
    from segkit.writer import OutputWriter

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    start = time.perf_counter()
    ray.init(num_cpus=threads, include_dashboard=False, logging_level="WARNING")
    cluster = time.perf_counter() - start
    weights_path, source = segkit.ray.resolve_weights("cutler", weights)
    writer = OutputWriter(out, inputs=paths, model_info={"weights": source})
    start = time.perf_counter()
    times = []
    outcomes = segkit.ray.run("cutler", {"weights": weights_path, "device": "cpu"}, paths, {}, writer,
                              workers=1, show_progress=False)
    results = []
    for outcome in outcomes:
        assert outcome.ok, outcome.error
        times.append(time.perf_counter() - start)
        results.append(outcome.result)
    writer.close()
    ray.shutdown()
    per_image = steady(times)
    actor = times[0] - per_image["steady"]
    return {"cluster": cluster, "actor": actor, "startup": cluster + actor, "first": times[0], **per_image,
            "total": cluster + times[-1],
            "driver": driver_cost(paths, results, out.with_name(out.name + "-driver"), source)}


def driver_cost(paths, results, out, source) -> float:
    """The driver's own seconds per image (re-read, draw, write), timed alone after the run."""
    from segkit.imageio import read_image
    from segkit.writer import OutputWriter

    writer = OutputWriter(out, inputs=paths, model_info={"weights": source})
    start = time.perf_counter()
    for path, result in zip(paths, results):
        writer.write(path, read_image(path), result)
    writer.close()
    return (time.perf_counter() - start) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="cores for each engine (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each engine (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from cutler_speed import random_weights

    print(f"CutLER cascade R50-FPN, random weights; {args.images} photos at 640x480 (800x1067 inputs); "
          f"CPU, {args.threads} cores per engine; overlay + labels + S.json written per image")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        weights = folder / "cascade_random.pth"
        random_weights(weights, args.seed)
        (folder / "in").mkdir()
        paths = write_photos(folder / "in", args.images)
        locals_, remotes = [], []
        for k in range(args.rounds):
            locals_.append(run_local(weights, paths, folder / f"local{k}", args.threads))
            remotes.append(run_ray(weights, paths, folder / f"ray{k}", args.threads))
            print(f"round {k + 1}: local steady {locals_[-1]['steady']:.2f} s/img, ray {remotes[-1]['steady']:.2f} s/img")
        local = {key: min(r[key] for r in locals_) for key in locals_[0]}
        remote = {key: min(r[key] for r in remotes) for key in remotes[0]}
        print(f"local: start-up (model load) {local['startup']:.1f} s; first image after {local['first']:.1f} s; "
              f"steady {local['steady']:.2f} s/img (mean {local['mean']:.2f}); total {local['total']:.1f} s")
        print(f"ray:   start-up {remote['startup']:.1f} s (cluster {remote['cluster']:.1f} s, actor + model load "
              f"{remote['actor']:.1f} s); first image after {remote['first']:.1f} s; "
              f"steady {remote['steady']:.2f} s/img (mean {remote['mean']:.2f}); total {remote['total']:.1f} s; "
              f"the driver's own work {remote['driver'] * 1000:.0f} ms/img")
        print(f"ray / local steady time per image: {remote['steady'] / local['steady']:.3f}x "
              f"(means: {remote['mean'] / local['mean']:.3f}x)")


if __name__ == "__main__":
    main()
