"""CLIPSeg throughput: segkit against the seed program's way, side by side in one process.

The real ``CIDAS/clipseg-rd64-refined`` architecture (ViT-B/16 at 352 px, reduce dim 64, refined
decoder) with random weights — speed does not depend on the values — and a word-level CLIP tokenizer
covering the prompts. 8 prompts x 8 photos (the example photos and their mirror images).

The seed program's way, per image: ``processor(text=prompts, images=[image] * len(prompts),
padding="max_length")`` and one forward of ``CLIPSegForImageSegmentation``, then sigmoid.
segkit's way: ``predict_batch`` (full Results: heatmaps at each photo's size, masks, boxes).
Both run in turn, round after round, so they share whatever else the machine is doing.

    python benchmarks/clipseg_prompts.py [--rounds 2] [--threads 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from peak_memory import PeakMemory  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tokenizer and model builders the tests use

PROMPTS = ["a cat", "grass", "the sky", "a rocket", "a cup of coffee", "a person", "a wooden table", "smoke"]


def rd64_refined_config():
    """CIDAS/clipseg-rd64-refined's config.json (everything else is CLIPSegConfig's defaults)."""
    from transformers import CLIPSegConfig

    return CLIPSegConfig(text_config={"bos_token_id": 0, "eos_token_id": 2}, vision_config={"patch_size": 16},
                         extract_layers=[3, 6, 9], reduce_dim=64, use_complex_transposed_convolution=True,
                         conditional_layer=0, decoder_num_attention_heads=4, decoder_intermediate_size=2048,
                         projection_dim=512)


def photos() -> list[np.ndarray]:
    """The four example photos and their mirror images."""
    from segkit.imageio import read_image

    folder = REPO / "examples"
    images = [read_image(path) for path in sorted(folder.glob("*.jpg"))[:4]]
    return images + [np.ascontiguousarray(image[:, ::-1]) for image in images]


def seed_way(model, processor, images):
    """The seed program: one forward per image, the image repeated once per prompt, 77-token padding.

    Returns the logits and the heatmaps (sigmoid) of each image.
    """
    import torch
    from PIL import Image

    logits = []
    with torch.inference_mode():
        for image in images:
            inputs = processor(text=PROMPTS, images=[Image.fromarray(image)] * len(PROMPTS),
                               padding="max_length", return_tensors="pt")
            logits.append(model(**inputs).logits)
    return logits, [torch.sigmoid(image_logits) for image_logits in logits]


def segkit_way(seg, images, batch_size):
    results = []
    for first in range(0, len(images), batch_size):
        results += seg.predict_batch(images[first:first + batch_size], prompts=PROMPTS)
    return results


def largest_differences(seg, images, seed_logits, seed_heatmaps, results) -> tuple[float, float]:
    """Largest logit and heatmap differences between segkit and the seed way over all (image, prompt) pairs."""
    import torch.nn.functional as F

    logit_diff = heat_diff = 0.0
    for image, logits, heat, result in zip(images, seed_logits, seed_heatmaps, results):
        logit_diff = max(logit_diff, float((seg.logits(image, PROMPTS) - logits).abs().max()))
        heat = F.interpolate(heat[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        heat_diff = max(heat_diff, float(np.abs(result.heatmaps - heat.numpy()).max()))
    return logit_diff, heat_diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each way (best round counts)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=8, help="images per segkit predict_batch call")
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    import segkit
    from tiny_models import save_clipseg, write_clip_vocab

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    images = photos()
    with tempfile.TemporaryDirectory() as folder:
        write_clip_vocab(folder, " ".join(PROMPTS).split())
        save_clipseg(folder, rd64_refined_config(), image_size=352)
        seg = segkit.load("clipseg", weights=folder, device="cpu")
        model = CLIPSegForImageSegmentation.from_pretrained(folder).eval()
        processor = CLIPSegProcessor.from_pretrained(folder)

    print(f"{len(PROMPTS)} prompts x {len(images)} photos, rd64-refined architecture, random weights, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}")
    seed_way(model, processor, images[:1])  # warm-up
    segkit_way(seg, images[:1], 1)

    seed_times, segkit_times, seed_cpu, segkit_cpu, seed_mem, segkit_mem = [], [], [], [], [], []
    for round_number in range(1, args.rounds + 1):
        with PeakMemory() as memory:
            start, cpu = time.perf_counter(), time.process_time()
            seed_logits, seed_heatmaps = seed_way(model, processor, images)
            seed_times.append(time.perf_counter() - start)
            seed_cpu.append(time.process_time() - cpu)
        seed_mem.append(memory.mib)
        with PeakMemory() as memory:
            start, cpu = time.perf_counter(), time.process_time()
            results = segkit_way(seg, images, args.batch_size)
            segkit_times.append(time.perf_counter() - start)
            segkit_cpu.append(time.process_time() - cpu)
        segkit_mem.append(memory.mib)
        print(f"round {round_number}: seed {seed_times[-1]:.2f} s (cpu {seed_cpu[-1]:.1f} s), "
              f"segkit {segkit_times[-1]:.2f} s (cpu {segkit_cpu[-1]:.1f} s), "
              f"ratio {seed_times[-1] / segkit_times[-1]:.2f}x", flush=True)
    stages = {name: sum(r.meta["timings"][name] for r in results) for name in results[0].meta["timings"]}
    print("segkit stages in its last round: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))

    seed_s, segkit_s = min(seed_times), min(segkit_times)
    print(f"seed program: {seed_s:.2f} s for {len(images)} photos ({seed_s / len(images):.2f} s/photo), "
          f"peak +{max(seed_mem):.0f} MiB")
    print(f"segkit:       {segkit_s:.2f} s for {len(images)} photos ({segkit_s / len(images):.2f} s/photo), "
          f"peak +{max(segkit_mem):.0f} MiB, batch size {args.batch_size}")
    print(f"throughput ratio (best rounds): {seed_s / segkit_s:.2f}x; "
          f"CPU-time ratio (less sensitive to other load): {min(seed_cpu) / min(segkit_cpu):.2f}x")
    logit_diff, heat_diff = largest_differences(seg, images, seed_logits, seed_heatmaps, results)
    print(f"agreement over all {len(images) * len(PROMPTS)} (photo, prompt) pairs: max |logit diff| "
          f"{logit_diff:.2e}, max |heatmap diff| {heat_diff:.2e} (logits span "
          f"{min(float(x.min()) for x in seed_logits):.1f}..{max(float(x.max()) for x in seed_logits):.1f})")
    ok = logit_diff <= 1e-4 and heat_diff <= 1e-4
    print("outputs agree within 1e-4" if ok else "OUTPUTS DIFFER by more than 1e-4")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
