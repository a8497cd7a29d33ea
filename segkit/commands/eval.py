"""``segkit eval``: score saved predictions against COCO-format ground truth (AP, PQ, mIoU).

A thin click layer over segkit.evaluation: it prints the table, writes ``--json`` and turns bad
input files into one ``error:`` line (exit 1); wrong flags are usage errors (exit 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
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
                        help="Processes scoring images (default: every core); the Ray actors are --ray-workers.")(func)


def _fail(message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@dataclasses.dataclass
class ModelRun:
    """The --model flags: which model runs where, over which images, writing its predictions where."""

    model: str | None
    images: str | None
    weights: str | None
    device: str
    batch_size: int
    limit: int | None
    output: str
    engine: str
    ray_address: str | None
    ray_workers: int | None
    gpus_per_worker: float

    def predictor(self):
        """The model loaded here (--engine local), or ready to run on Ray's workers."""
        import segkit

        from ..errors import RequestError
        from ..evaluation.predictions import local_predictor, ray_predictor

        try:
            if self.engine == "ray":
                return ray_predictor(self.model, weights=self.weights, device=self.device, address=self.ray_address,
                                     workers=self.ray_workers, gpus_per_worker=self.gpus_per_worker)
            return local_predictor(segkit.load(self.model, weights=self.weights, device=self.device))
        except KeyError as exc:
            raise click.BadParameter(exc.args[0], param_hint="--model") from None
        except RequestError as exc:  # an impossible device, or Ray not installed
            raise click.UsageError(exc.for_cli()) from None

    def predict(self, task, items, category_ids, train_ids=None):
        """Predict ``items`` into --output, keeping only the ground truth's categories ``category_ids``;
        one error line per failed image."""
        from ..evaluation.predictions import predict

        predictor = self.predictor()
        if train_ids is not None and predictor.labels is None:
            raise click.UsageError(f"{self.model} has no fixed classes to score against --classes; "
                                   "choose a semantic model (see 'segkit models')")
        table = train_ids(predictor.labels) if train_ids is not None else None
        with _progress(len(items)) as bar:
            predicted = predict(predictor, items, task, self.output, batch_size=self.batch_size, train_ids=table,
                                categories=category_ids, progress=lambda done, total: bar.update(1))
        for failure in predicted.failures:
            click.echo(f"error: {failure}", err=True)
        click.echo(f"{len(predicted.json_files)} of {len(items)} images predicted into {self.output}", err=True)
        return predicted


def _model_options(func):
    """Score a model on a dataset in one go: run it over the ground truth's images first. The command
    gets the flags as one ``run`` (a ModelRun)."""
    options = [
        click.option("--model", help="Run this model (see 'segkit models') over --images, then score what it wrote."),
        click.option("--images", type=click.Path(file_okay=False), help="The dataset's images (with --model)."),
        click.option("--weights", type=click.Path(), help="Local weights for --model."),
        click.option("--device", default="auto", show_default=True, help="Device for --model."),
        click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1)),
        click.option("--limit", type=click.IntRange(min=1), help="Only the first N images (a quick look)."),
        click.option("-o", "--output", default="segkit-eval", show_default=True, type=click.Path(file_okay=False),
                     help="Where --model writes its predictions (S.json, panoptic PNGs, label maps)."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Where --model runs: here, or on a Ray cluster (a local one without --ray-address); "
                          "the same predictions, written here, the same scores."),
        click.option("--ray-address", help="Address of the Ray cluster for --engine ray (e.g. ray://head:10001)."),
        click.option("--ray-workers", type=click.IntRange(min=1),
                     help="Ray actors running --model for --engine ray, one model each (default: one per GPU "
                          "share, else one per node)."),
        click.option("--gpus-per-worker", default=0.0, show_default=True, type=click.FloatRange(min=0),
                     help="GPUs Ray assigns to each --ray-workers actor (fractions share a GPU)."),
    ]

    @functools.wraps(func)
    def command(**flags):
        run = ModelRun(**{f.name: flags.pop(f.name) for f in dataclasses.fields(ModelRun)})
        return func(run=run, **flags)

    for option in reversed(options):
        command = option(command)
    return command


@contextlib.contextmanager
def _errors_as_lines():
    """A bad input file (SegkitError) is one ``error:`` line and exit 1."""
    try:
        yield
    except SegkitError as exc:
        _fail(str(exc))


def _predictions_or_model(pred, run: ModelRun, flags: str):
    if run.model is None and pred is None:
        raise click.UsageError(f"give {flags} (saved predictions) or --model and --images (run a model)")
    if run.model is not None and pred is not None:
        raise click.UsageError(f"give either {flags} or --model, not both")
    if run.model is not None and run.images is None:
        raise click.UsageError("--model needs --images, the folder of the dataset's images")


def _gt_category_ids(gt_json) -> set:
    from ..evaluation.inputs import read_json

    data = read_json(gt_json, "a COCO JSON with categories")
    return {c["id"] for c in data.get("categories", [])} if isinstance(data, dict) else set()


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
@click.option("--pred", type=click.Path(dir_okay=False),
              help="COCO results list, or a COCO dataset JSON (images matched by file_name).")
@click.option("--iou-type", type=click.Choice(["segm", "bbox", "both"]), default="segm", show_default=True,
              help="Mask AP, box AP or both.")
@click.option("--class-agnostic", is_flag=True, help="All categories as one (CutLER's protocol).")
@_model_options
@_json_option
def instance(gt, pred, iou_type, class_agnostic, json_path, run):
    """Mask (and box) AP with pycocotools, per-category AP as detectron2 reports it."""
    from ..evaluation.instance import evaluate_instances, segkit_results
    from ..evaluation.predictions import dataset_images

    _predictions_or_model(pred, run, "--pred")
    with _errors_as_lines():
        image_ids = None
        if run.model is not None:
            items = dataset_images(gt, run.images, run.limit)
            predicted = run.predict("instance", items, None if class_agnostic else _gt_category_ids(gt))
            pred, image_ids = segkit_results(predicted.json_files.values(), gt), list(predicted.json_files)
        sections = evaluate_instances(gt, pred, iou_type=iou_type, class_agnostic=class_agnostic, image_ids=image_ids)
    _finish(sections, json_path)


@eval_group.command()
@click.option("--gt", required=True, type=click.Path(dir_okay=False), help="COCO panoptic JSON (ground truth).")
@click.option("--gt-dir", required=True, type=click.Path(file_okay=False), help="Ground-truth panoptic PNGs.")
@click.option("--pred", type=click.Path(dir_okay=False), help="Predicted COCO panoptic JSON.")
@click.option("--pred-dir", type=click.Path(file_okay=False), help="Predicted panoptic PNGs.")
@_model_options
@_workers_option
@_json_option
def panoptic(gt, gt_dir, pred, pred_dir, workers, json_path, run):
    """PQ, SQ, RQ (All, Things, Stuff and per class) with panopticapi's rules."""
    from ..evaluation.panoptic import load_pairs, score_pairs
    from ..evaluation.predictions import dataset_images

    _predictions_or_model(pred, run, "--pred and --pred-dir")
    if run.model is None and pred_dir is None:
        raise click.UsageError("--pred needs --pred-dir, the folder of its PNGs")
    with _errors_as_lines():
        image_ids = None
        if run.model is not None:
            predicted = run.predict("panoptic", dataset_images(gt, run.images, run.limit), _gt_category_ids(gt))
            pred, pred_dir, image_ids = predicted.panoptic_json, run.output, list(predicted.json_files)
        categories, pairs = load_pairs(gt, gt_dir, pred, pred_dir, image_ids)
        with _progress(len(pairs)) as bar:
            section = score_pairs(categories, pairs, workers=workers, progress=bar)
    _finish({"panoptic": section}, json_path)


@eval_group.command()
@click.option("--gt-dir", required=True, type=click.Path(file_okay=False), help="Ground-truth label PNGs.")
@click.option("--pred-dir", type=click.Path(file_okay=False),
              help="Predicted label PNGs (<name>.png or segkit's <name>_labels.png).")
@click.option("--classes", required=True, type=click.Path(dir_okay=False),
              help="JSON list of {train_id, category_id, name, isthing}; category_id null names the ignore value.")
@click.option("--layout", type=click.Choice(["plain", "ade20k", "cityscapes"]), default="plain",
              show_default=True, help=LAYOUT_HELP)
@_model_options
@_workers_option
@_json_option
def semantic(gt_dir, pred_dir, classes, layout, workers, json_path, run):
    """mIoU, fwIoU, mACC, pACC and per-class IoU/accuracy as detectron2's SemSegEvaluator (percent)."""
    from ..evaluation.predictions import label_images, train_id_table
    from ..evaluation.semantic import LAYOUTS, evaluate_semantic, gt_label_files, load_classes, pair_files

    _predictions_or_model(pred_dir, run, "--pred-dir")
    with _errors_as_lines():
        label_set = load_classes(classes)
        if run.model is None:
            pairs = pair_files(gt_dir, pred_dir, layout)
        else:
            spec = LAYOUTS[layout]
            items = label_images(gt_label_files(gt_dir, layout), run.images, spec.image_suffix, spec.gt_suffix,
                                 run.limit)
            predicted = run.predict("semantic", items, set(label_set.category_ids),
                                    train_ids=lambda labels: train_id_table(labels.category_ids, label_set))
            pairs = list(predicted.label_maps.items())
        with _progress(len(pairs)) as bar:
            section = evaluate_semantic(pairs, label_set, layout=layout, workers=workers, progress=bar)
    _finish({"semantic": section}, json_path)
