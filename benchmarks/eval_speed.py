"""Speed and memory of ``segkit eval`` (PQ and mIoU) on a synthetic COCO-val2017-sized dataset.

Writes N synthetic images (default 5,000, 160x120) into a temporary folder: COCO panoptic PNGs +
JSON and semantic label PNGs, ground truth and perturbed predictions (shifted, dropped, relabelled
and false-positive things, unlabeled patches, VOID, crowd regions). Then times, in this process,
a straightforward single-process implementation of the same rules (written below, in panopticapi's
and detectron2's way: np.unique over joint ids, one confusion bincount per image) against segkit
with all cores, checks that the numbers agree (1e-12 relative), and reports the peak memory (Pss)
of segkit (this process plus its workers) for 1,000 and N images.

    flock /tmp/segkit-bench.lock python benchmarks/eval_speed.py [--images 5000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from peak_memory import PeakMemory  # benchmarks/ is on sys.path when run as a script

HEIGHT, WIDTH = 120, 160
THINGS = {1: "person", 3: "car", 18: "dog", 2: "bicycle"}
STUFF = {119: "sky", 125: "grass", 200: "road"}
CATEGORIES = [{"id": i, "name": n, "isthing": 1} for i, n in THINGS.items()] + \
             [{"id": i, "name": n, "isthing": 0} for i, n in STUFF.items()]
TRAIN_ID = {c["id"]: k for k, c in enumerate(CATEGORIES)}
OFFSET = 256 * 256 * 256


# Synthetic data


def _scene(rng, things):
    """Segment id map and segments of one scene: stuff bands, then thing rectangles on top."""
    ids = np.zeros((HEIGHT, WIDTH), np.int64)
    segments = []
    cuts = sorted(rng.integers(15, HEIGHT - 15, size=2))
    stuff = rng.permutation(list(STUFF))
    for k, (top, bottom) in enumerate(zip([0, *cuts], [*cuts, HEIGHT])):
        segment_id = int(rng.integers(1, OFFSET))
        ids[top:bottom] = segment_id
        segments.append({"id": segment_id, "category_id": int(stuff[k]), "iscrowd": 0})
    for category_id, (y, x, h, w), crowd in things:
        segment_id = int(rng.integers(1, OFFSET))
        ids[max(y, 0):y + h, max(x, 0):x + w] = segment_id
        segments.append({"id": segment_id, "category_id": category_id, "iscrowd": int(crowd)})
    return ids, segments


def make_image(seed: int, index: int, folder: Path):
    """Write one image's four PNGs; return its ground-truth and predicted annotations."""
    rng = np.random.default_rng([seed, index])
    name = f"{index:06d}.png"
    things = []
    for _ in range(rng.integers(2, 9)):
        h, w = int(rng.integers(6, 50)), int(rng.integers(6, 60))
        things.append((int(rng.choice(list(THINGS))), (int(rng.integers(0, HEIGHT - h)),
                                                        int(rng.integers(0, WIDTH - w)), h, w),
                       rng.random() < 0.05))
    gt_ids, gt_segments = _scene(rng, things)
    void = rng.integers(0, HEIGHT - 10), rng.integers(0, WIDTH - 30)
    gt_ids[void[0]:void[0] + 8, void[1]:void[1] + 25] = 0

    predicted = []
    for category_id, (y, x, h, w), _ in things:
        if rng.random() < 0.1:  # missed
            continue
        if rng.random() < 0.1:  # wrong class
            category_id = int(rng.choice(list(THINGS)))
        dy, dx = rng.integers(-5, 6, size=2)
        predicted.append((category_id, (y + int(dy), x + int(dx), h + int(rng.integers(-3, 4)), w), False))
    for _ in range(rng.integers(0, 3)):  # false positives
        predicted.append((int(rng.choice(list(THINGS))), (int(rng.integers(0, 100)), int(rng.integers(0, 130)),
                                                           int(rng.integers(5, 20)), int(rng.integers(5, 30))), False))
    pred_ids, pred_segments = _scene(rng, predicted)
    hole = rng.integers(0, HEIGHT - 6), rng.integers(0, WIDTH - 6)
    pred_ids[hole[0]:hole[0] + 6, hole[1]:hole[1] + 6] = 0
    present = set(np.unique(pred_ids).tolist())
    pred_segments = [s for s in pred_segments if s["id"] in present]

    gt_present, gt_counts = np.unique(gt_ids, return_counts=True)
    areas = dict(zip(gt_present.tolist(), gt_counts.tolist()))
    gt_segments = [s | {"area": areas[s["id"]]} for s in gt_segments if s["id"] in areas]

    for ids, sub in ((gt_ids, "gt_panoptic"), (pred_ids, "pred_panoptic")):
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / sub / name)
    for ids, segments, sub, unlabeled in ((gt_ids, gt_segments, "gt_semantic", 255),
                                          (pred_ids, pred_segments, "pred_semantic", 0)):
        table = {0: unlabeled, **{s["id"]: TRAIN_ID[s["category_id"]] for s in segments}}
        keys = np.array(sorted(table))
        values = np.array([table[k] for k in keys], np.uint8)
        Image.fromarray(values[np.searchsorted(keys, ids)]).save(folder / sub / name)
    return ({"image_id": index, "file_name": name, "segments_info": gt_segments},
            {"image_id": index, "file_name": name, "segments_info": [
                {"id": s["id"], "category_id": s["category_id"]} for s in pred_segments]})


def make_dataset(folder: Path, count: int, seed: int, workers: int):
    for sub in ("gt_panoptic", "pred_panoptic", "gt_semantic", "pred_semantic"):
        (folder / sub).mkdir(parents=True)
    with ProcessPoolExecutor(workers) as pool:
        made = list(pool.map(make_image, [seed] * count, range(count), [folder] * count, chunksize=64))
    images = [{"id": k, "file_name": f"{k:06d}.png", "height": HEIGHT, "width": WIDTH} for k in range(count)]
    (folder / "gt_panoptic.json").write_text(json.dumps(
        {"images": images, "annotations": [g for g, _ in made], "categories": CATEGORIES}))
    (folder / "pred_panoptic.json").write_text(json.dumps({"annotations": [p for _, p in made]}))
    classes = [{"train_id": k, "category_id": c["id"], "name": c["name"], "isthing": c["isthing"]}
               for k, c in enumerate(CATEGORIES)] + [{"train_id": 255, "category_id": None, "name": "ignore",
                                                       "isthing": None}]
    (folder / "classes.json").write_text(json.dumps(classes))


# The straightforward single-process implementations


def _ids(path) -> np.ndarray:
    rgb = np.array(Image.open(path), dtype=np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def reference_pq(gt_json: Path, gt_dir: Path, pred_json: Path, pred_dir: Path) -> dict:
    gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    categories = {c["id"]: c for c in gt["categories"]}
    predictions = {a["image_id"]: a for a in pred["annotations"]}
    stats = defaultdict(lambda: [0, 0, 0, 0.0])
    for gt_ann in gt["annotations"]:
        pred_ann = predictions[gt_ann["image_id"]]
        pan_gt, pan_pred = _ids(gt_dir / gt_ann["file_name"]), _ids(pred_dir / pred_ann["file_name"])
        gt_segments = {s["id"]: s for s in gt_ann["segments_info"]}
        pred_segments = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
        for label, count in zip(*np.unique(pan_pred, return_counts=True)):
            if label != 0:
                pred_segments[int(label)]["area"] = int(count)
        joint = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
        overlaps = {(int(k) // OFFSET, int(k) % OFFSET): int(c) for k, c in zip(*np.unique(joint, return_counts=True))}
        gt_matched, pred_matched = set(), set()
        for (gt_id, pred_id), intersection in overlaps.items():
            if gt_id not in gt_segments or pred_id not in pred_segments:
                continue
            g, p = gt_segments[gt_id], pred_segments[pred_id]
            if g["iscrowd"] == 1 or g["category_id"] != p["category_id"]:
                continue
            iou = intersection / (p["area"] + g["area"] - intersection - overlaps.get((0, pred_id), 0))
            if iou > 0.5:
                stats[g["category_id"]][0] += 1
                stats[g["category_id"]][3] += iou
                gt_matched.add(gt_id)
                pred_matched.add(pred_id)
        crowd = {}
        for gt_id, g in gt_segments.items():
            if gt_id in gt_matched:
                continue
            if g["iscrowd"] == 1:
                crowd[g["category_id"]] = gt_id
            else:
                stats[g["category_id"]][2] += 1
        for pred_id, p in pred_segments.items():
            if pred_id in pred_matched:
                continue
            ignored = overlaps.get((0, pred_id), 0)
            if p["category_id"] in crowd:
                ignored += overlaps.get((crowd[p["category_id"]], pred_id), 0)
            if ignored / p["area"] <= 0.5:
                stats[p["category_id"]][1] += 1
    result = {}
    for group, keep in (("All", lambda c: True), ("Things", lambda c: c["isthing"] == 1),
                        ("Stuff", lambda c: c["isthing"] == 0)):
        pq = sq = rq = n = 0
        for category_id, category in categories.items():
            tp, fp, fn, iou = stats[category_id]
            if not keep(category) or tp + fp + fn == 0:
                continue
            n += 1
            pq += iou / (tp + fp / 2 + fn / 2)
            sq += iou / tp if tp else 0
            rq += tp / (tp + fp / 2 + fn / 2)
        result[group] = {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}
    return result


def reference_semantic(gt_dir: Path, pred_dir: Path, num_classes: int) -> dict:
    n = num_classes
    confusion = np.zeros((n + 1, n + 1), np.int64)  # detectron2: predicted rows, ground-truth columns
    for gt_path in sorted(gt_dir.glob("*.png")):
        gt = np.array(Image.open(gt_path), dtype=np.int64)
        pred = np.array(Image.open(pred_dir / gt_path.name), dtype=np.int64)
        gt[gt == 255] = n
        confusion += np.bincount((n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(n + 1) ** 2).reshape(
            n + 1, n + 1)
    tp = confusion.diagonal()[:-1].astype(float)
    pos_gt = confusion[:-1, :-1].sum(axis=0).astype(float)
    pos_pred = confusion[:-1, :-1].sum(axis=1).astype(float)
    valid = pos_gt > 0
    iou = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    return {"mIoU": 100 * iou.mean(), "fwIoU": 100 * np.sum(iou * (pos_gt / pos_gt.sum())[valid]),
            "mACC": 100 * np.mean(tp[valid] / pos_gt[valid]), "pACC": 100 * tp.sum() / pos_gt.sum()}


# Measuring


class TreeMemory(PeakMemory):
    """Peak memory of this process plus all its descendants (pool workers), above the start.

    Counted as proportional set size (Pss), so pages that forked workers share with the parent
    count once, not once per process. Sampled every 20 ms: a walk of /proc costs more than one read.
    """

    def __init__(self, interval_s: float = 0.02):
        super().__init__(interval_s)

    @staticmethod
    def _rss() -> int:
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        tree, grew = {os.getpid()}, True
        while grew:
            before = len(tree)
            tree |= {pid for pid, parent in parents.items() if parent in tree}
            grew = len(tree) > before
        total = 0
        for pid in tree:
            try:
                with open(f"/proc/{pid}/smaps_rollup") as rollup:
                    total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) * 1024
            except (OSError, StopIteration):
                continue
        return total


def fastest(functions: dict, repeats: int) -> dict:
    """``{name: (value, wall s, CPU s of this process and its workers)}`` of each function's fastest run.

    The functions take turns, ``repeats`` rounds: on a shared machine the minimum is the least
    disturbed run, and turns spread any change of load over all sides alike.
    """
    best = {}
    for _ in range(repeats):
        for name, function in functions.items():
            before, start = os.times(), time.perf_counter()
            value = function()
            wall, after = time.perf_counter() - start, os.times()
            cpu = sum(after[:4]) - sum(before[:4])  # user + system, self + reaped children
            if name not in best or wall < best[name][1]:
                best[name] = (value, wall, cpu)
    return best


def relative_gap(a: dict, b: dict, keys) -> float:
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in keys if b[k])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=None, help="segkit's processes (default: every core)")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (the fastest counts)")
    args = parser.parse_args()

    from segkit.evaluation.panoptic import evaluate_panoptic
    from segkit.evaluation.parallel import default_workers
    from segkit.evaluation.semantic import evaluate_semantic, load_classes, pair_files

    workers = args.workers or default_workers()
    with tempfile.TemporaryDirectory(prefix="segkit-eval-bench-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        make_dataset(folder, args.images, args.seed, workers)
        print(f"{args.images} synthetic images of {WIDTH}x{HEIGHT} written in {time.perf_counter() - start:.1f} s; "
              f"segkit on {workers} processes; best of {args.repeats} runs")
        pan = (folder / "gt_panoptic.json", folder / "gt_panoptic", folder / "pred_panoptic.json",
               folder / "pred_panoptic")
        sem = (folder / "gt_semantic", folder / "pred_semantic")
        classes = load_classes(folder / "classes.json")
        runs = {
            "PQ": (lambda: reference_pq(*pan), lambda w: (lambda: evaluate_panoptic(*pan, workers=w))),
            "mIoU": (lambda: reference_semantic(*sem, len(classes)),
                     lambda w: (lambda: evaluate_semantic(pair_files(*sem), classes, workers=w))),
        }
        print(f"\n{'metric':<6} {'reference 1 proc':>17} {'segkit 1 proc':>14} {f'segkit {workers} procs':>15} "
              f"{'ratio':>6}  {'CPU s ref/segkit':>16}  max rel. difference")
        for name, (reference, ours) in runs.items():
            timings = fastest({"reference": reference, "segkit": ours(workers), "segkit-1": ours(1)}, args.repeats)
            (ref, ref_s, ref_cpu), (mine, mine_s, mine_cpu) = timings["reference"], timings["segkit"]
            one_s = timings["segkit-1"][1]
            if name == "PQ":
                gap = max(relative_gap(mine[g], ref[g], ("pq", "sq", "rq")) for g in ("All", "Things", "Stuff"))
                assert all(mine[g]["n"] == ref[g]["n"] for g in ref), (mine, ref)
                shown = f"PQ {100 * mine['All']['pq']:.3f}"
            else:
                gap = relative_gap(mine, ref, ("mIoU", "fwIoU", "mACC", "pACC"))
                shown = f"mIoU {mine['mIoU']:.3f}"
            assert gap <= 1e-12, (mine, ref)
            print(f"{name:<6} {ref_s:>15.2f} s {one_s:>12.2f} s {mine_s:>13.2f} s {mine_s / ref_s:>5.2f}x  "
                  f"{ref_cpu:>7.1f} / {mine_cpu:<6.1f}  {gap:.1e} ({shown} both sides)")

        print("\npeak memory (Pss) of segkit, this process + workers, above the start:")
        gt_all = json.loads(pan[0].read_text())
        for count in sorted({min(1000, args.images), args.images}):
            ids = [image["id"] for image in gt_all["images"][:count]]
            with TreeMemory() as pq_memory:
                evaluate_panoptic(*pan, image_ids=ids, workers=workers)
            with TreeMemory() as sem_memory:
                evaluate_semantic(pair_files(*sem)[:count], classes, workers=workers)
            print(f"  {count:>5} images: PQ {pq_memory.mib:6.1f} MiB, mIoU {sem_memory.mib:6.1f} MiB")


if __name__ == "__main__":
    main()
