"""Speed and peak memory of MaskCut at CutLER's settings on CPU, side by side with the reference pipeline.

Full-size ViT-B/8 (facebook/dino-vitb8's shape; random weights, seed 0, loaded through segkit's real
loading code), examples/rocket.jpg resized to 640x480, fixed_size 480 (a 60x60 patch grid; ``--fixed-size`` for a quick check), tau 0.15,
3 masks, 2 threads. The reference is written the way CutLER runs MaskCut: DINO's ViT with plain
attention (transformers' eager) through the last block's attention, then in every round the keys
re-masked, the affinity and D built afresh in numpy and ``scipy.linalg.eigh(D - A, D,
subset_by_index=[1, 2])``, then demo.py's CRF per mask. Both run in this process, one after the other
(``--runs`` times, alternating); the masks of both are compared. Peak memory is the most
resident memory above the starting point during a pipeline's runs.

    python benchmarks/maskcut_speed.py [--image examples/rocket.jpg] [--threads 2] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAU, NUM_MASKS, PATCH = 0.15, 3, 8


def set_threads(threads: int) -> None:
    """BLAS/LAPACK threads must be set before numpy loads; torch's after."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def vit_b8_folder(target: Path) -> Path:
    """A ViT-B/8 with facebook/dino-vitb8's shape and random weights (seed 0), saved with save_pretrained."""
    import torch
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       patch_size=8, image_size=224, qkv_bias=True, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(target)
    return target


class Stopwatch:
    """Seconds per named stage."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def stage(self, name):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


# --- the reference: CutLER's maskcut() + demo.py, step by step --------------------------------------------

def reference_keys(model, pixels):
    """DINO's ``ViTFeat`` forward: every block but the last, then the last block's LayerNorm and whole
    attention (``get_last_selfattention``), the keys taken by a hook on the key projection."""
    import torch

    from segkit.backends.maskcut.dino import dino_position_embeddings

    embeddings = model.embeddings
    tokens = embeddings.patch_embeddings(pixels)
    hidden = torch.cat((embeddings.cls_token, tokens), dim=1)
    hidden = hidden + dino_position_embeddings(embeddings, pixels.shape[2] // PATCH, pixels.shape[3] // PATCH)
    for layer in model.layers[:-1]:
        hidden = layer(hidden)  # eager attention: softmax(q k^T * scale) v
    last = model.layers[-1]
    captured = {}
    hook = last.attention.k_proj.register_forward_hook(lambda module, inputs, output: captured.update(keys=output))
    try:
        last.attention(last.layernorm_before(hidden))
    finally:
        hook.remove()
    return captured["keys"][0, 1:].T


def reference_ncut(feats, grid, tau, rounds, size):
    """``maskcut_forward`` on CPU: image-level masks (S, S) float64, in round order."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from scipy import ndimage
    from scipy.linalg import eigh

    h, w = grid
    masks, painting, current = [], torch.zeros(grid, dtype=torch.float64), None
    for index in range(rounds):
        if index:
            painting = painting + current
            painting[painting > 0] = 1
            feats = ((1 - painting) * feats.clone().view(-1, h, w)).view(-1, h * w)
        unit = F.normalize(feats, p=2, dim=0)
        A = (unit.transpose(0, 1) @ unit).cpu().numpy()
        A = A > tau
        A = np.where(A.astype(float) == 0, 1e-5, A)
        D = np.diag(np.sum(A, axis=1))
        _, vectors = eigh(D - A, D, subset_by_index=[1, 2])
        v = vectors[:, 0]
        bipartition = v > np.sum(v) / len(v)
        seed = np.argmax(np.abs(v))
        grid_view = bipartition.reshape(grid)
        corners = int(grid_view[0][0]) + int(grid_view[0][-1]) + int(grid_view[-1][0]) + int(grid_view[-1][-1])
        reverse = corners >= 3 or bipartition[seed] != 1
        if reverse:
            bipartition = np.logical_not(bipartition)
            seed = np.argmax(v * -1)
        else:
            seed = np.argmax(v)
        objects, _ = ndimage.label(bipartition.reshape(grid).astype(float))
        mask = torch.from_numpy((objects == objects[np.unravel_index(seed, grid)]).astype(np.float64))
        if index:
            ratio = torch.sum(mask) / h / w
            a, b = current > 0.5, mask > 0.5
            iou = (torch.sum(a & b).float() / torch.sum(a | b)).item()
            if iou > 0.5 or ratio <= 0.01:
                mask = torch.zeros(grid, dtype=torch.float64)
        current = mask
        earlier = 0 if not masks else np.sum(masks, axis=0)
        upsampled = F.interpolate(mask[None, None], size=(size, size), mode="nearest")[0, 0]
        image_mask = upsampled.numpy() - earlier
        image_mask[image_mask <= 0] = 0
        masks.append(image_mask)
    return masks


def reference_crf(square, mask):
    """demo.py: ``densecrf`` as CutLER's crf.py runs it, hole filling, the IoU >= 0.5 test."""
    import numpy as np
    import pydensecrf.densecrf as dcrf
    import torch
    import torch.nn.functional as F
    from pydensecrf.utils import unary_from_softmax
    from scipy import ndimage

    fg = mask.reshape(1, *mask.shape).astype(float)
    logits = torch.from_numpy(np.concatenate((1 - fg, fg), axis=0))
    logits = F.interpolate(logits[None], size=square.shape[:2], mode="bilinear").squeeze()
    probabilities = F.softmax(logits, dim=0).numpy()
    crf = dcrf.DenseCRF2D(square.shape[1], square.shape[0], 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probabilities)))
    crf.addPairwiseGaussian(sxy=3, compat=7)
    crf.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(square), compat=10)
    q = np.array(crf.inference(10)).reshape(2, *square.shape[:2])
    refined = ndimage.binary_fill_holes(np.argmax(q, axis=0) >= 0.5)
    a, b = mask > 0.5, refined
    union = (a | b).sum()
    return refined if not (union and (a & b).sum() / union < 0.5) else np.zeros_like(refined)


def reference_run(model, rgb, fixed_size, with_crf):
    """Stage seconds, and the photo-size masks before and (with_crf) after the CRF."""
    import numpy as np
    import torch

    from segkit.backends.maskcut.crf import to_photo_size
    from segkit.backends.maskcut.preprocess import model_input, pixel_values, square_resize

    def photo(masks):
        resized = [to_photo_size(m > 0, *rgb.shape[:2]) for m in masks]
        return np.array([m for m in resized if m.any()], dtype=bool).reshape(-1, *rgb.shape[:2])

    watch = Stopwatch()
    with watch.stage("vit"):
        square = square_resize(rgb, fixed_size)
        pixels = pixel_values(model_input(square, PATCH))
        with torch.no_grad():
            keys = reference_keys(model, pixels)
    with watch.stage("ncut"):
        masks = reference_ncut(keys, (pixels.shape[2] // PATCH, pixels.shape[3] // PATCH), TAU, NUM_MASKS,
                               fixed_size)
    found = {False: photo(masks)}
    if with_crf:
        with watch.stage("crf"):
            refined = [reference_crf(np.array(square), m) for m in masks]
        found[True] = photo(refined)
    return watch.seconds, found


def segkit_run(segmenter, rgb, fixed_size, with_crf):
    """Stage seconds (from the result's timings) and the masks of ``predict``."""
    result = segmenter.predict(rgb, tau=TAU, num_masks=NUM_MASKS, fixed_size=fixed_size, crf=with_crf)
    timings = result.meta["timings"]
    seconds = {"vit": timings["vit_s"], "ncut": timings["ncut_s"]}
    if with_crf:
        seconds["crf"] = timings["crf_s"]
    return seconds, result.masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "rocket.jpg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--fixed-size", type=int, default=480, help="CutLER's 480; smaller for a quick check")
    args = parser.parse_args()
    set_threads(args.threads)
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))

    import numpy as np
    import torch
    from PIL import Image
    from transformers import ViTModel

    import segkit
    from peak_memory import PeakMemory
    from segkit.backends.maskcut import crf as crf_step

    torch.set_num_threads(args.threads)
    rgb = np.asarray(Image.open(args.image).convert("RGB").resize((640, 480), Image.BILINEAR))
    with_crf_too = crf_step.available()
    if not with_crf_too:
        print('pydensecrf is not installed (pip install "segkit[crf]"): timing without the CRF only')
    with tempfile.TemporaryDirectory() as tmp:
        folder = vit_b8_folder(Path(tmp) / "vit-b8")
        segmenter = segkit.load("maskcut", weights=folder, device="cpu")
        reference_model = ViTModel.from_pretrained(folder, add_pooling_layer=False, attn_implementation="eager").eval()
    small = np.array(Image.fromarray(rgb).resize((64, 48)))
    segmenter.predict(small, fixed_size=64, crf=False)  # warm-up: first-call allocations, kernel choice
    with torch.no_grad():
        reference_keys(reference_model, torch.zeros(1, 3, 64, 64))

    crf_options = (False, True) if with_crf_too else (False,)
    seconds = {"reference": [], "segkit": []}
    peaks = {"reference": 0.0, "segkit": 0.0}
    masks = {}
    for _ in range(args.runs):
        with PeakMemory() as peak:
            stage_seconds, found = reference_run(reference_model, rgb, args.fixed_size, with_crf_too)
        peaks["reference"] = max(peaks["reference"], peak.mib)
        seconds["reference"].append(stage_seconds)
        masks.update({("reference", crf): found[crf] for crf in crf_options})
        run_seconds = {}
        for crf in crf_options:  # segkit's CRF time from its own crf=True run; ViT and NCut from crf=False
            with PeakMemory() as peak:
                stage_seconds, masks["segkit", crf] = segkit_run(segmenter, rgb, args.fixed_size, crf)
            peaks["segkit"] = max(peaks["segkit"], peak.mib)
            run_seconds.update(stage_seconds if not crf else {"crf": stage_seconds["crf"]})
        seconds["segkit"].append(run_seconds)

    def median(name, stage):
        return float(np.median([s.get(stage, 0.0) for s in seconds[name]]))

    print(f"MaskCut, ViT-B/8 random weights, {args.image.name} at 640x480, fixed_size {args.fixed_size}, tau {TAU}, "
          f"{NUM_MASKS} masks, {args.threads} threads, CPU, median of {args.runs} run(s)")
    print(f"{'seconds per image':<22}{'reference':>11}{'segkit':>9}{'ratio':>8}")
    rows = [(stage.upper(), {name: median(name, stage) for name in seconds}) for stage in ("vit", "ncut")]
    if with_crf_too:
        rows.append(("CRF", {name: median(name, "crf") for name in seconds}))
    rows.append(("total without CRF", {name: median(name, "vit") + median(name, "ncut") for name in seconds}))
    if with_crf_too:
        rows.append(("total with CRF", {name: rows[-1][1][name] + median(name, "crf") for name in seconds}))
    for label, values in rows:
        print(f"{label:<22}{values['reference']:>11.2f}{values['segkit']:>9.2f}"
              f"{values['segkit'] / values['reference']:>7.2f}x")
    print(f"{'peak MiB (above start)':<22}{peaks['reference']:>11.0f}{peaks['segkit']:>9.0f}"
          f"{peaks['segkit'] / peaks['reference']:>7.2f}x")
    for crf in crf_options:
        ref, ours = masks["reference", crf], masks["segkit", crf]
        same = ref.shape == ours.shape and bool((ref == ours).all())
        ious = [float((a & b).sum() / max((a | b).sum(), 1)) for a, b in zip(ref, ours)]
        print(f"masks {'with' if crf else 'without'} CRF: {len(ref)} reference, {len(ours)} segkit, "
              f"identical: {same}" + ("" if same or not ious else f" (smallest IoU {min(ious):.4f})"))

if __name__ == "__main__":
    main()
