"""Speed and peak memory of the full-size CutLER cascade (R50-FPN) on CPU.

Random weights (the official checkpoint is not needed to time it), a 640x480 photo at the
default test size (shortest side 800, longest <= 1333, so an 800x1067 input), 2 threads. Each
variant runs in its own process, so its peak resident memory (VmHWM) is its own. Where
detectron2 is importable, detectron2's model runs on the same weights and input, the ratio is
printed, and each segkit variant's detections are compared with detectron2's.

    python benchmarks/cutler_speed.py [--image examples/coffee.jpg] [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "segkit": "segkit as shipped: norms folded into convs, channels-last",
    "segkit-unfolded": "segkit with norms kept as separate ops, as detectron2 runs them",
    "detectron2": "detectron2 + stock CascadeROIHeads (what CutLER's custom heads run at test time)",
}


def photo(path: Path):
    """The benchmark input: the photo resized to 640x480 RGB (uint8 array)."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB").resize((640, 480), Image.BILINEAR))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_runs(run, runs: int) -> tuple[list[float], list[dict], tuple]:
    run()  # warm-up: first-call allocations and kernel selection
    seconds, stages = [], []
    for _ in range(runs):
        start = time.perf_counter()
        stage_times, found = run()
        seconds.append(time.perf_counter() - start)
        stages.append(stage_times)
    return seconds, stages, found


def segkit_runner(weights: Path, rgb, threshold: float, fold: bool):
    import torch

    from segkit.backends.cutler.config import load_config
    from segkit.backends.cutler.model import build_model

    cfg = load_config("cascade_mask_rcnn_R_50_FPN")
    model = build_model(cfg, torch.load(weights, map_location="cpu", weights_only=True)["model"], fold=fold)

    def run():
        with torch.inference_mode():
            found = model(rgb, score_thresh=threshold, max_detections=cfg.TEST.DETECTIONS_PER_IMAGE)
        return found.timings, (found.boxes, found.scores, found.masks)

    return run


def detectron2_runner(weights: Path, rgb, threshold: float):
    import torch
    from detectron2.config import get_cfg
    from detectron2.data import transforms as T
    from detectron2.modeling import build_model

    from segkit.backends.cutler.config import builtin_path

    cfg = get_cfg()
    cfg.merge_from_file(str(builtin_path("cascade_mask_rcnn_R_50_FPN")))
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.RESNETS.NORM = cfg.MODEL.FPN.NORM = "BN"  # as CutLER's demo does on CPU
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["model"])
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    height, width = rgb.shape[:2]

    def run():
        with torch.no_grad():
            image = resize.get_transform(rgb).apply_image(rgb)
            tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
            outputs = model([{"image": tensor, "height": height, "width": width}])
        found = outputs[0]["instances"]
        return {}, (found.pred_boxes.tensor, found.scores, found.pred_masks)

    return run


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    rgb = photo(args.image)
    if args.variant == "detectron2":
        run = detectron2_runner(args.weights, rgb, args.threshold)
    else:
        run = segkit_runner(args.weights, rgb, args.threshold, fold=args.variant == "segkit")
    seconds, stages, (boxes, scores, masks) = time_runs(run, args.runs)
    stage_medians = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    print(json.dumps({"seconds": seconds, "stages": stage_medians, "detections": len(scores),
                      "peak_rss_mb": peak_rss_mb(), "boxes": boxes.tolist(), "scores": scores.tolist(),
                      "mask_pixels": masks.flatten(1).sum(1).tolist()}))


def random_weights(path: Path, seed: int) -> None:
    """A full-size cascade state dict with PyTorch's default random init, saved like detectron2 does."""
    import torch

    from segkit.backends.cutler.config import load_config
    from segkit.backends.cutler.model import CutLERModel

    torch.manual_seed(seed)
    model = CutLERModel(load_config("cascade_mask_rcnn_R_50_FPN"))
    torch.save({"model": model.state_dict()}, path)


def detectron2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("detectron2") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "coffee.jpg")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.35, help="score threshold (CutLER's demo: 0.35)")
    parser.add_argument("--variants", default="segkit,segkit-unfolded,detectron2",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return

    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if "detectron2" in chosen and not detectron2_available():
        print("detectron2 is not importable here: skipping its run (and the ratio)")
        chosen.remove("detectron2")
    print(f"CutLER cascade R50-FPN, random weights; {args.image.name} at 640x480 -> 800x1067 input; "
          f"CPU, {args.threads} threads; median of {args.runs} runs after a warm-up")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "cascade_random.pth"
        random_weights(weights, args.seed)
        for variant in chosen:
            command = [sys.executable, __file__, "--variant", variant, "--weights", str(weights),
                       "--image", str(args.image), "--runs", str(args.runs), "--threads", str(args.threads),
                       "--threshold", str(args.threshold)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[variant] = json.loads(output.strip().splitlines()[-1])
            report(variant, results[variant])
    if "detectron2" in results:
        for variant in (v for v in results if v != "detectron2"):
            ratio = statistics.median(results[variant]["seconds"]) / statistics.median(results["detectron2"]["seconds"])
            print(f"{variant} / detectron2 time: {ratio:.2f}x")
            print(f"{'':16s} {agreement(results[variant], results['detectron2'])}")


def agreement(ours: dict, theirs: dict) -> str:
    """How far one variant's detections are from detectron2's, both in score order."""
    if ours["detections"] != theirs["detections"]:
        return f"detections differ in number: {ours['detections']} vs detectron2's {theirs['detections']}"
    if not ours["detections"]:
        return "agreement: no detections in either"
    box = max(abs(a - b) for p, q in zip(ours["boxes"], theirs["boxes"]) for a, b in zip(p, q))
    score = max(abs(a - b) for a, b in zip(ours["scores"], theirs["scores"]))
    pixels = max(abs(a - b) for a, b in zip(ours["mask_pixels"], theirs["mask_pixels"]))
    return (f"agreement with detectron2: {ours['detections']} detections each; max |box diff| {box:.2g} px, "
            f"max |score diff| {score:.2g}, max |mask area diff| {pixels} px")


def report(variant: str, result: dict) -> None:
    seconds = result["seconds"]
    stages = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in result["stages"].items())
    print(f"{variant:16s} {statistics.median(seconds):6.2f} s/img median (min {min(seconds):.2f}, "
          f"max {max(seconds):.2f}); peak RSS {result['peak_rss_mb']:.0f} MB; "
          f"{result['detections']} detections")
    if stages:
        print(f"{'':16s} stages (median s): {stages}")


if __name__ == "__main__":
    main()
