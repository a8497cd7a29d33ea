"""Video throughput: segkit's video pipeline against the same model on frames already in memory.

The real ``CIDAS/clipseg-rd64-refined`` architecture with random weights (as clipseg_prompts.py),
2 prompts, CPU. A synthetic 640x360 H.264 video (shapes moving over a gradient) is segmented two
ways, in turn, round after round:

- model only: the frames decoded beforehand into a list, then ``predict_batch`` over them — the
  ceiling, no I/O, no drawing;
- segkit: ``segkit.video.write_video`` — decode (thread), predict, overlay + H.264 encode + S.jsonl
  (thread), what ``segkit clipseg video.mp4`` runs.

Then peak resident memory (VmHWM) of ``write_video`` on a video of N and of 2N seconds, each in a
fresh process after the model is loaded, to show it does not grow with the length.

    python benchmarks/video_speed.py [--seconds 10] [--fps 10] [--batch-size 4] [--threads 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tokenizer and model builders the tests use
PROMPTS = ["a car", "the road"]
WIDTH, HEIGHT = 640, 360


def synthetic_video(path: Path, seconds: float, fps: int) -> Path:
    """Two coloured boxes and a disc moving over a gradient: cheap to make, real work to encode."""
    import av

    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([xs * 255 // WIDTH, ys * 255 // HEIGHT, np.full_like(xs, 96)], axis=-1).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(round(seconds * fps)):
            frame = background.copy()
            x = (i * 7) % (WIDTH - 120)
            frame[200:300, x:x + 120] = (220, 30, 30)
            frame[40:100, WIDTH - 80 - x // 2:WIDTH - x // 2] = (30, 30, 220)
            disc = (xs - (WIDTH // 2 + 150 * np.cos(i / 15))) ** 2 + (ys - HEIGHT // 2) ** 2 < 40 ** 2
            frame[disc] = (250, 250, 60)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def build_model(folder: str):
    from clipseg_prompts import rd64_refined_config  # benchmarks/ is on sys.path when run as a script
    from tiny_models import save_clipseg, write_clip_vocab

    write_clip_vocab(folder, " ".join(PROMPTS).split())
    save_clipseg(folder, rd64_refined_config(), image_size=352)


def load_model(folder: str, threads: int):
    import torch
    import transformers

    import segkit

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    return segkit.load("clipseg", weights=folder, device="cpu")


def model_only(seg, frames, batch_size: int) -> int:
    done = 0
    for first in range(0, len(frames), batch_size):
        done += len(seg.predict_batch(frames[first:first + batch_size], prompts=PROMPTS))
    return done


def pipeline(seg, path: Path, out: Path, batch_size: int) -> int:
    from segkit import video

    outcome = video.write_video(seg, path, out, "bench", options={"prompts": PROMPTS}, batch_size=batch_size)
    assert outcome.done, outcome.error
    return outcome.frames


def replay_segmenter(seg, results):
    """A segmenter with the model's options that hands back ``results`` in order: write_video's
    own cost (decode, overlay, encode, S.jsonl) without the model."""
    from segkit.backends.base import Segmenter

    class Replay(Segmenter):
        OPTIONS = type(seg).OPTIONS

        def _predict(self, rgb, **options):
            return next(stored)

    stored = iter(results)
    return Replay(seg.spec, None, "cpu", None)


def vm_hwm() -> int:
    """This process's peak resident memory so far, in bytes (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def memory_child(args) -> None:
    """In a fresh process: peak memory after loading the model and one warm-up frame, then after the video."""
    from segkit import video

    seg = load_model(args.model, args.threads)
    first = next(iter(video.FrameReader(args.video))).rgb
    seg.predict_batch([first] * args.batch_size, prompts=PROMPTS)
    before = vm_hwm()
    with tempfile.TemporaryDirectory() as out:
        frames = pipeline(seg, Path(args.video), Path(out), args.batch_size)
    print(frames, before, vm_hwm())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="length of the timed video")
    parser.add_argument("--fps", type=int, default=10, help="frame rate of the synthetic videos")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per predict_batch call, both ways")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each way (best round counts)")
    parser.add_argument("--no-memory", action="store_true", help="skip the N vs 2N seconds memory runs")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args)

    import torch

    from segkit import video

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        build_model(str(folder / "model"))
        seg = load_model(str(folder / "model"), args.threads)
        clip = synthetic_video(folder / "clip.mp4", args.seconds, args.fps)
        with video.FrameReader(clip) as reader:
            frames = [frame.rgb for frame in reader]
        print(f"{len(frames)} frames of {WIDTH}x{HEIGHT} ({args.seconds:g} s at {args.fps} fps), {len(PROMPTS)} "
              f"prompts, rd64-refined architecture, random weights, {torch.get_num_threads()} threads, "
              f"batch size {args.batch_size}, torch {torch.__version__}")
        results = [result for first in range(0, len(frames), args.batch_size)
                   for result in seg.predict_batch(frames[first:first + args.batch_size], prompts=PROMPTS)]
        ways = {"model only": lambda: model_only(seg, frames, args.batch_size),
                "segkit video": lambda: pipeline(seg, clip, folder / "out", args.batch_size)}
        wall = {name: [] for name in ways}
        cpu = {name: [] for name in ways}
        for round_number in range(1, args.rounds + 1):
            for name, run in ways.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                count = run()
                wall[name].append(count / (time.perf_counter() - start))
                cpu[name].append((time.process_time() - cpu_start) / count)
            print(f"round {round_number}: " + ", ".join(
                f"{name} {wall[name][-1]:.3f} frames/s ({cpu[name][-1]:.2f} CPU s/frame)" for name in ways), flush=True)
        start = time.process_time()
        pipeline(replay_segmenter(seg, results), clip, folder / "replay", args.batch_size)
        alone = (time.process_time() - start) / len(frames)
        best = {name: max(rates) for name, rates in wall.items()}
        ratios = sorted(video_rate / model_rate for video_rate, model_rate in zip(wall["segkit video"], wall["model only"]))
        least_cpu = {name: min(seconds) for name, seconds in cpu.items()}
        print(f"model only (ceiling): {best['model only']:.3f} frames/s; segkit video: {best['segkit video']:.3f} "
              f"frames/s (best rounds)")
        print(f"throughput ratio: {best['segkit video'] / best['model only']:.2f}x of the model-only rate "
              f"(best rounds; per round {', '.join(f'{r:.2f}' for r in ratios)}); goal >= 0.9x")
        print(f"CPU time per frame: model only {least_cpu['model only']:.3f} s, segkit video "
              f"{least_cpu['segkit video']:.3f} s, ratio {least_cpu['model only'] / least_cpu['segkit video']:.2f}x")
        print(f"write_video without the model (the same results replayed): {alone * 1000:.1f} CPU ms/frame, so on "
              f"cores of its own the pipeline runs at {least_cpu['model only'] / (least_cpu['model only'] + alone):.2f}x "
              "the model-only rate at worst (no overlap of I/O with inference at all)")
        if args.no_memory:
            return 0
        for seconds in (args.seconds, 2 * args.seconds):
            path = synthetic_video(folder / f"memory-{seconds:g}.mp4", seconds, args.fps)
            done = subprocess.run([sys.executable, __file__, "--memory-child", "--model", str(folder / "model"),
                                   "--video", str(path), "--threads", str(args.threads),
                                   "--batch-size", str(args.batch_size)],
                                  capture_output=True, text=True, check=True)
            count, before, after = (int(v) for v in done.stdout.split())
            print(f"{seconds:g} s video ({count} frames): peak RSS {after / 2**20:.0f} MiB, "
                  f"+{(after - before) / 2**20:.0f} MiB over the loaded, warmed-up model", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
