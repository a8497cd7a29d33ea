"""Semantic segmentation scores as detectron2's ``SemSegEvaluator`` computes them, over a process pool.

One confusion matrix over every pixel whose ground truth is not the ignore label (255), summed over
images. ``IoU_c = TP / (GT_c + PRED_c - TP)`` and ``ACC_c = TP / GT_c`` exist only for classes present
in the ground truth; the others are None and stay out of the means (even when predicted).
``fwIoU`` weights IoU by ground-truth pixels, ``pACC = sum TP / sum GT``. All in percent.

Label maps are uint8 (or 16-bit) PNGs of train ids. Dataset layouts convert the ground truth's own
encoding to train ids: ADE20K (1..150, 0 = ignore) and Cityscapes (gtFine label ids).
"""

from __future__ import annotations

import fnmatch
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EvaluationInputError
from .inputs import check_size, pixel_runs, read_json, read_png
from .parallel import map_chunks

IGNORE = 255


@dataclass(frozen=True)
class SemanticClasses:
    """Class names by train id (0..N-1) and the ignore value of the ground truth."""

    names: tuple[str, ...]
    category_ids: tuple
    ignore: int = IGNORE

    def __len__(self) -> int:
        return len(self.names)


def load_classes(path) -> SemanticClasses:
    """Read a ``classes.json`` list of ``{train_id, category_id, name, isthing}``.

    Train ids must be 0..N-1; the entry whose ``category_id`` is null (if any) names the ignore value.
    """
    entries = read_json(path, "a list of {train_id, category_id, name, isthing}")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "train_id" in e and "name" in e
                                                for e in entries):
        raise EvaluationInputError(f"{path}: expected a list of {{train_id, category_id, name, isthing}}")
    ignore = [e["train_id"] for e in entries if e.get("category_id", 0) is None]
    if len(ignore) > 1:
        raise EvaluationInputError(f"{path}: more than one entry has category_id null (the ignore value)")
    classes = sorted((e for e in entries if e.get("category_id", 0) is not None), key=lambda e: e["train_id"])
    if [e["train_id"] for e in classes] != list(range(len(classes))):
        raise EvaluationInputError(f"{path}: train ids must be 0..{len(classes) - 1}, each once")
    ignore_value = ignore[0] if ignore else IGNORE
    if ignore_value < len(classes):
        raise EvaluationInputError(f"{path}: the ignore value {ignore_value} is also a class's train id")
    return SemanticClasses(names=tuple(e["name"] for e in classes),
                           category_ids=tuple(e.get("category_id") for e in classes), ignore=ignore_value)


# Dataset layouts: how the ground truth encodes labels and names its files.


def plain_train_ids(labels: np.ndarray) -> np.ndarray:
    """Ground truth that already holds train ids (and 255 = ignore)."""
    return labels


def ade20k_train_ids(labels: np.ndarray) -> np.ndarray:
    """ADEChallengeData2016: 1..150 are the classes, 0 is "other" (ignored) -> 0..149 and 255."""
    return (labels.astype(np.int32) - 1).astype(np.uint8)


@functools.cache
def _cityscapes_table() -> np.ndarray:
    from ..labels import load_labels

    labels = load_labels("cityscapes_19")  # in train-id order: class i is train id i
    table = np.full(256, IGNORE, dtype=np.uint8)
    table[labels.category_ids] = np.arange(len(labels))
    table.flags.writeable = False
    return table


def cityscapes_train_ids(labels: np.ndarray) -> np.ndarray:
    """Cityscapes ``*_gtFine_labelIds.png``: the 19 evaluated label ids -> train ids, the rest 255."""
    return _cityscapes_table()[labels]


@dataclass(frozen=True)
class Layout:
    """A dataset's ground-truth encoding, its label files' pattern and the suffixes to strip for pairing."""

    name: str
    to_train_ids: object
    gt_pattern: str = "*.png"
    gt_suffix: str = ""
    image_suffix: str = ""


LAYOUTS = {
    "plain": Layout("plain", plain_train_ids),
    "ade20k": Layout("ade20k", ade20k_train_ids),
    "cityscapes": Layout("cityscapes", cityscapes_train_ids, gt_pattern="*_gtFine_labelIds.png",
                         gt_suffix="_gtFine_labelIds", image_suffix="_leftImg8bit"),
}


def pair_files(gt_dir, pred_dir, layout: str = "plain") -> list[tuple[Path, Path]]:
    """(ground truth, prediction) PNG pairs: every ground-truth file needs a prediction.

    A prediction is ``<name>.png`` or segkit's ``<name>_labels.png``, beside the ground truth's
    relative folder or directly in ``pred_dir``; ``<name>`` is the ground truth's stem without the
    layout's suffix (Cityscapes: ``X_gtFine_labelIds`` is predicted as ``X_leftImg8bit.png`` or ``X.png``).
    """
    spec = LAYOUTS[layout]
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gt_files = gt_label_files(gt_dir, layout)
    if not pred_dir.is_dir():
        raise EvaluationInputError(f"{pred_dir}: no such folder (--pred-dir)")
    listing = functools.cache(_file_names)  # one listing per folder, not a stat per candidate
    pairs = []
    for gt in gt_files:
        pred_folders = (pred_dir / gt.parent.relative_to(gt_dir), pred_dir)
        name = os.path.splitext(gt.name)[0].removesuffix(spec.gt_suffix)
        stems = [name + spec.image_suffix, name] if spec.image_suffix else [name]
        names = [f"{stem}{ending}" for stem in stems for ending in (".png", "_labels.png")]
        found = next((pred / n for pred in pred_folders for n in names if n in listing(pred)), None)
        if found is None:  # a case-insensitive file system also finds names spelt otherwise
            found = next((c for c in (pred / n for pred in pred_folders for n in names) if c.is_file()), None)
        if found is None:
            raise EvaluationInputError(f"{gt}: no prediction for it in {pred_dir} (looked for {names[0]}"
                                       f" and {names[1]})")
        pairs.append((gt, found))
    return pairs


def gt_label_files(gt_dir, layout: str = "plain") -> list[Path]:
    """The layout's ground-truth label files under ``gt_dir``, folder by folder in name order; an
    error if the folder is missing or holds none."""
    spec = LAYOUTS[layout]
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise EvaluationInputError(f"{gt_dir}: no such folder (--gt-dir)")
    found = []
    for folder, subfolders, files in os.walk(gt_dir):  # folder by folder: no Path work per file to group them
        subfolders.sort()
        found += [Path(folder) / name for name in sorted(fnmatch.filter(files, spec.gt_pattern))]
    if not found:
        raise EvaluationInputError(f"{gt_dir}: no ground-truth files matching {spec.gt_pattern}")
    return found


def _file_names(folder: Path) -> frozenset:
    """The names of the files in ``folder`` (none if it does not exist)."""
    try:
        return frozenset(entry.name for entry in os.scandir(folder) if entry.is_file())
    except OSError:
        return frozenset()


@functools.cache
def _row_offsets(classes: SemanticClasses, top: int) -> np.ndarray:
    """For each ground-truth value 0..top, its confusion-matrix row times N+1 (row N = ignore);
    (N+1)^2 marks a value that is neither a class nor the ignore value."""
    n = len(classes)
    offsets = np.full(top + 1, (n + 1) ** 2, dtype=np.int64)
    valid = min(n, top + 1)
    offsets[:valid] = np.arange(valid) * (n + 1)
    if classes.ignore <= top:
        offsets[classes.ignore] = n * (n + 1)
    offsets.flags.writeable = False
    return offsets


def confusion_image(classes: SemanticClasses, layout: str, pair, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """One image's (N+1)x(N+1) confusion counts from its two maps as read (``pair`` names their files),
    ground-truth rows, predicted columns; row N = ignored."""
    gt_path, pred_path = pair
    n = len(classes)
    check_size(pred_path, pred, *gt.shape, f"the ground truth {gt_path}")
    # The layout's conversion and the checks see each run's value, a few hundred, not every pixel.
    gt_run, pred_run, run_length = pixel_runs(gt, pred)
    gt_run = LAYOUTS[layout].to_train_ids(gt_run)
    if pred_run.max(initial=0) >= n:
        stray = pred_run[(pred_run >= n) & (pred_run != classes.ignore)]
        if stray.size:
            raise EvaluationInputError(f"{pred_path}: label {int(stray[0])} is not a train id (0..{n - 1}) nor "
                                       f"the ignore value {classes.ignore}")
        pred_run = np.where(pred_run == classes.ignore, n, pred_run)  # "no class of this dataset": a miss, column N
    top = 255 if gt_run.dtype == np.uint8 else 65535
    if gt_run.dtype != np.uint8 and (gt_run.min(initial=0) < 0 or gt_run.max(initial=0) > top):
        raise EvaluationInputError(f"{gt_path}: labels must be 0..{top}")
    cells = _row_offsets(classes, top)[gt_run] + pred_run
    counts = np.bincount(cells, weights=run_length, minlength=(n + 1) ** 2)
    if len(counts) > (n + 1) ** 2:  # a cell past the matrix: a ground-truth value that is no class
        stray = int(gt_run[cells >= (n + 1) ** 2][0])
        raise EvaluationInputError(f"{gt_path}: label {stray} is neither a train id (0..{n - 1}) "
                                   f"nor the ignore value {classes.ignore}; check --classes (and --layout)")
    return counts.astype(np.int64).reshape(n + 1, n + 1)


def summarise(confusion: np.ndarray, classes: SemanticClasses) -> dict:
    """The ``semantic`` section of metrics.json from the summed confusion matrix (detectron2's formulas)."""
    n = len(classes)
    matrix = confusion[:n, :n].astype(np.float64)
    tp = matrix.diagonal()
    pos_gt = confusion[:n, :].sum(axis=1).astype(np.float64)  # with column N: pixels predicted as no class
    pos_pred = matrix.sum(axis=0)
    acc = np.full(n, np.nan)
    iou = np.full(n, np.nan)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    iou_valid = acc_valid & (union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    total = np.sum(pos_gt)

    def percent(value):
        return None if not np.isfinite(value) else 100 * float(value)

    defined = bool(iou_valid.any())
    return {
        "mIoU": percent(np.sum(iou[iou_valid]) / np.sum(iou_valid)) if defined else None,
        "fwIoU": percent(np.sum(iou[iou_valid] * (pos_gt / total)[iou_valid])) if defined else None,
        "mACC": percent(np.sum(acc[acc_valid]) / np.sum(acc_valid)) if defined else None,
        "pACC": percent(np.sum(tp) / total) if defined else None,
        "IoU": {name: percent(value) for name, value in zip(classes.names, iou)},
        "ACC": {name: percent(value) for name, value in zip(classes.names, acc)},
        "confusion_matrix_gt_rows_pred_cols": confusion[:n, :n].tolist(),
    }


# Maps are read a few images at a time, then counted: alternating Pillow's decoding and numpy's
# counting image by image costs about 10% more (each kind of work runs faster while it stays warm).
READ_GROUP_IMAGES = 16
READ_GROUP_PIXELS = 2**20  # large images gain nothing from it, and memory stays small


def _read_in_groups(pairs):
    """Yield ``(pair, (gt, pred))`` for each pair, having read the maps of a group of images first."""
    group, pixels = [], 0
    for pair in pairs:
        maps = read_png(pair[0]), read_png(pair[1])
        group.append((pair, maps))
        pixels += maps[0].size
        if len(group) == READ_GROUP_IMAGES or pixels >= READ_GROUP_PIXELS:
            yield from group
            group, pixels = [], 0
    yield from group


def confusion_images(classes: SemanticClasses, layout: str, pairs) -> np.ndarray:
    """The summed confusion counts of a chunk of images: one matrix to send back per chunk."""
    return sum(confusion_image(classes, layout, pair, *maps) for pair, maps in _read_in_groups(pairs))


def evaluate_semantic(pairs, classes: SemanticClasses, *, layout: str = "plain", workers=None,
                      progress=None) -> dict:
    """mIoU, fwIoU, mACC, pACC and per-class IoU/ACC (percent) over (ground truth, prediction) PNG pairs.

    Images are scored on ``workers`` processes (default: every core), each returning the confusion
    matrix of a chunk of images; ``progress`` (tqdm-like) advances by each chunk's images.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    n = len(classes)
    confusion = np.zeros((n + 1, n + 1), dtype=np.int64)
    score = functools.partial(confusion_images, classes, layout)
    tasks = [(os.fspath(gt), os.fspath(pred)) for gt, pred in pairs]  # strings pickle faster than Paths
    for counts in map_chunks(score, tasks, workers=workers, progress=progress):
        confusion += counts
    return summarise(confusion, classes)
