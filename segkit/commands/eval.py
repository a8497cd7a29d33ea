"""``segkit eval``: score saved predictions against COCO-format ground truth (AP, PQ, mIoU).

A thin click layer over segkit.evaluation: it prints the table, writes ``--json`` and turns bad
input files into one ``error:`` line (exit 1); wrong flags are usage errors (exit 2).
"""

from __future__ import annotations

import contextlib
import sys

import click

from ..errors import SegkitError

LAYOUT_HELP = ("How the ground truth encodes labels: plain (train ids, 255 = ignore), ade20k (1..150, "
               "0 = ignore) or cityscapes (gtFine *_labelIds.png).")


def _json_option(func):
    return click.option("--json", "json_path", type=click.Path(dir_okay=False),
                        help="Also write the scores to this file (metrics.json layout).")(func)


def _workers_option(func):
    return click.option("--workers", type=click.IntRange(min=1),
                        help="Processes scoring images (default: every core).")(func)


def _fail(message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@contextlib.contextmanager
def _progress(total: int):
    """A progress bar on stderr, only for a person watching a terminal."""
    from tqdm import tqdm

    with tqdm(total=total, disable=not sys.stderr.isatty(), file=sys.stderr, unit="img", leave=False) as bar:
        yield bar


def _finish(sections: dict, json_path):
    from ..evaluation.report import render_table, write_metrics

    click.echo(render_table(sections))
    if json_path:
        try:
            write_metrics(json_path, sections)
        except OSError as exc:
            _fail(f"{json_path}: cannot write ({exc.strerror or exc})")
        click.echo(f"wrote {json_path}", err=True)


@click.group(name="eval")
def eval_group():
    """Score saved predictions against COCO-format ground truth: mask/box AP, PQ, mIoU.

    \b
    Examples:
      segkit eval instance --gt instances_val2017.json --pred results.json
      segkit eval panoptic --gt panoptic_val2017.json --gt-dir panoptic_val2017/ \\
                           --pred pred/panoptic.json --pred-dir pred/
      segkit eval semantic --gt-dir gt/ --pred-dir pred/ --classes classes.json
    """


@eval_group.command()
@click.option("--gt", required=True, type=click.Path(dir_okay=False), help="COCO instances JSON (ground truth).")
@click.option("--pred", required=True, type=click.Path(dir_okay=False),
              help="COCO results list, or a COCO dataset JSON (images matched by file_name).")
@click.option("--iou-type", type=click.Choice(["segm", "bbox", "both"]), default="segm", show_default=True,
              help="Mask AP, box AP or both.")
@click.option("--class-agnostic", is_flag=True, help="All categories as one (CutLER's protocol).")
@_json_option
def instance(gt, pred, iou_type, class_agnostic, json_path):
    """Mask (and box) AP with pycocotools, per-category AP as detectron2 reports it."""
    from ..evaluation.instance import evaluate_instances

    try:
        sections = evaluate_instances(gt, pred, iou_type=iou_type, class_agnostic=class_agnostic)
    except SegkitError as exc:
        _fail(str(exc))
    _finish(sections, json_path)


@eval_group.command()
@click.option("--gt", required=True, type=click.Path(dir_okay=False), help="COCO panoptic JSON (ground truth).")
@click.option("--gt-dir", required=True, type=click.Path(file_okay=False), help="Ground-truth panoptic PNGs.")
@click.option("--pred", required=True, type=click.Path(dir_okay=False), help="Predicted COCO panoptic JSON.")
@click.option("--pred-dir", required=True, type=click.Path(file_okay=False), help="Predicted panoptic PNGs.")
@_workers_option
@_json_option
def panoptic(gt, gt_dir, pred, pred_dir, workers, json_path):
    """PQ, SQ, RQ (All, Things, Stuff and per class) with panopticapi's rules."""
    from ..evaluation.panoptic import load_pairs, score_pairs

    try:
        categories, pairs = load_pairs(gt, gt_dir, pred, pred_dir)
        with _progress(len(pairs)) as bar:
            section = score_pairs(categories, pairs, workers=workers, progress=bar)
    except SegkitError as exc:
        _fail(str(exc))
    _finish({"panoptic": section}, json_path)


@eval_group.command()
@click.option("--gt-dir", required=True, type=click.Path(file_okay=False), help="Ground-truth label PNGs.")
@click.option("--pred-dir", required=True, type=click.Path(file_okay=False),
              help="Predicted label PNGs (<name>.png or segkit's <name>_labels.png).")
@click.option("--classes", required=True, type=click.Path(dir_okay=False),
              help="JSON list of {train_id, category_id, name, isthing}; category_id null names the ignore value.")
@click.option("--layout", type=click.Choice(["plain", "ade20k", "cityscapes"]), default="plain",
              show_default=True, help=LAYOUT_HELP)
@_workers_option
@_json_option
def semantic(gt_dir, pred_dir, classes, layout, workers, json_path):
    """mIoU, fwIoU, mACC, pACC and per-class IoU/accuracy as detectron2's SemSegEvaluator (percent)."""
    from ..evaluation.semantic import evaluate_semantic, load_classes, pair_files

    try:
        label_set = load_classes(classes)
        pairs = pair_files(gt_dir, pred_dir, layout)
        with _progress(len(pairs)) as bar:
            section = evaluate_semantic(pairs, label_set, layout=layout, workers=workers, progress=bar)
    except SegkitError as exc:
        _fail(str(exc))
    _finish({"semantic": section}, json_path)
