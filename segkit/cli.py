"""The ``segkit`` command: a thin click layer over segkit.load, the I/O layer and the renderer.

torch and transformers are imported only once a command needs a model, so ``--help`` and
``--version`` stay instant.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import click

from ._version import __version__
from .errors import RequestError, SegkitError

DATASETS = ("coco", "ade20k", "cityscapes")
BACKBONES = ("dinat-l", "swin-l")


def _fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _split_csv(values) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def image_command(func):
    """Options shared by every command that segments images."""
    options = [
        click.argument("images", nargs=-1, required=True),
        click.option("--model", help="Model name from 'segkit models' (default: the command's default model; "
                     "overrides --dataset/--backbone)."),
        click.option("--weights", type=click.Path(), help="Local weights file or folder to use instead of the declared ones."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
                     show_default=True, help="auto: float16 on CUDA where exact enough, else float32."),
        click.option("-o", "--output", default="segkit-out", show_default=True, type=click.Path(file_okay=False),
                     help="Output folder."),
        click.option("--save", "save", multiple=True,
                     help="Outputs to write besides the overlay, comma-separated: labels,json,heatmaps,masks,grid "
                          "(default: labels,json,heatmaps)."),
        click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity."),
        click.option("--recursive", is_flag=True, help="Descend into sub-folders of folder inputs."),
        click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Images per forward pass (CLIPSeg batches images; the others run one at a time)."),
        click.option("--max-pixels", type=click.IntRange(min=1), help="Refuse images with more pixels than this "
                     "(default: Pillow's decompression-bomb limit)."),
        click.option("--offline", is_flag=True, help="Never touch the network; use cached weights only."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary line."),
        click.option("--debug", is_flag=True, help="Show full tracebacks."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _save_set(values) -> tuple[str, ...]:
    from .files import DEFAULT_SAVE, SAVE_CHOICES

    chosen = _split_csv(values)
    unknown = [c for c in chosen if c not in SAVE_CHOICES]
    if unknown:
        raise click.BadParameter(f"unknown output {unknown[0]!r}; choose from {', '.join(SAVE_CHOICES)}",
                                 param_hint="--save")
    return tuple(chosen) if chosen else DEFAULT_SAVE


def run_images(backend: str, model_name: str | None, predict_options: dict, *, images, weights, device, dtype,
               output, save, alpha, recursive, batch_size, max_pixels, offline, quiet, debug, config=None,
               record_options: dict | None = None):
    """Segment every input, write its outputs, report failures; exit 1 if any image failed.

    ``record_options`` is what S.json records as the options (default: ``predict_options``).
    """
    if offline:
        from .weights import set_offline

        set_offline()
    if quiet or not sys.stderr.isatty():
        # Download and weight-loading bars of huggingface_hub/transformers (read at their import).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from .files import OutputWriter, check_writable, collect_inputs

    save_set = _save_set(save)
    model_name = _model_for(backend, model_name)
    inputs = collect_inputs(images, recursive=recursive, exclude=Path(output))
    if not inputs.paths and not inputs.missing:
        raise click.UsageError("no images found in the given paths")
    out_dir = Path(output)
    try:
        check_writable(out_dir)
    except SegkitError as exc:
        _fail(str(exc))

    start = time.perf_counter()
    failures = list(inputs.missing)
    for message in inputs.missing:
        click.echo(f"error: {message}", err=True)
    if inputs.paths:
        segmenter = _load(model_name, weights=weights, config=config, device=device, dtype=dtype, debug=debug)
        writer = OutputWriter(out_dir, save=save_set, alpha=alpha, inputs=inputs.paths)
        failures += _process(segmenter, inputs.paths, predict_options, record_options or predict_options, writer,
                             batch_size, max_pixels, quiet, debug)
    total = len(inputs.paths) + len(inputs.missing)
    if not quiet:
        click.echo(f"{total} images, {len(failures)} failed, {time.perf_counter() - start:.1f} s")
    sys.exit(1 if failures else 0)


def _model_for(backend: str, model_name: str | None) -> str:
    """The --model name checked against the command (usage error, exit 2, when it does not fit)."""
    from .registry import get_spec

    if model_name is None:
        return backend
    try:
        spec = get_spec(model_name)
    except KeyError as exc:
        raise click.BadParameter(exc.args[0], param_hint="--model") from None
    if spec.backend != backend:
        raise click.BadParameter(f"{model_name} is a {spec.backend} model; run it with 'segkit "
                                 f"{spec.backend if spec.backend != 'oneformer' else 'semantic'}'",
                                 param_hint="--model")
    return model_name


def _load(model_name, *, debug, **kwargs):
    import segkit

    try:
        return segkit.load(model_name, **kwargs)
    except RequestError as exc:  # the options asked for something impossible
        if debug:
            raise
        _fail(str(exc), 2)
    except SegkitError as exc:
        if debug:
            raise
        _fail(str(exc))
    except Exception as exc:
        if debug:
            raise
        _fail(f"could not load {model_name}: {type(exc).__name__}: {exc} (rerun with --debug for details)")


def _describe(path, exc) -> str:
    if isinstance(exc, SegkitError):
        text = str(exc)
        return text if text.startswith(str(path)) else f"{path}: {text}"
    if type(exc).__name__ == "OutOfMemoryError":
        return f"{path}: out of GPU memory; use a smaller --batch-size or --device cpu"
    return f"{path}: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def _process(segmenter, paths, predict_options, record_options, writer, batch_size, max_pixels, quiet,
             debug) -> list[str]:
    """Run the model over ``paths`` in batches; returns the failure messages."""
    from tqdm import tqdm

    from .imageio import read_image

    failures = []

    def failed(path, exc):
        if debug:
            raise exc
        if isinstance(exc, RequestError):  # a bad option, not a bad image: every image would fail alike
            _fail(str(exc), 2)
        message = _describe(path, exc)
        failures.append(message)
        tqdm.write(f"error: {message}", file=sys.stderr)
        if type(exc).__name__ == "OutOfMemoryError":
            import torch

            torch.cuda.empty_cache()

    show = not quiet and len(paths) > 1 and sys.stderr.isatty()
    with tqdm(total=len(paths), disable=not show, file=sys.stderr, unit="img") as bar:
        for first in range(0, len(paths), batch_size):
            batch = []
            for path in paths[first:first + batch_size]:
                try:
                    t0 = time.perf_counter()
                    batch.append((path, read_image(path, max_pixels=max_pixels), time.perf_counter() - t0))
                except Exception as exc:
                    failed(path, exc)
                    bar.update(1)
            for path, image, result in _predict(segmenter, batch, predict_options, failed):
                try:
                    writer.write(path, image, result, record_options)
                except Exception as exc:
                    failed(path, exc)
                bar.update(1)
    return failures


def _predict(segmenter, batch, options, failed):
    """Yield (path, image, result). Backends that batch get the whole batch, retried image by image
    if it fails; the others run image by image from the start, so no image is computed twice."""
    if len(batch) > 1 and not segmenter.batches:
        for item in batch:
            yield from _predict(segmenter, [item], options, failed)
        return
    if not batch:
        return
    try:
        results = segmenter.predict_batch([image for _, image, _ in batch], **options)
    except Exception as exc:
        if len(batch) == 1 or isinstance(exc, SegkitError):
            for path, _, _ in batch:
                failed(path, exc)
            return
        for item in batch:
            yield from _predict(segmenter, [item], options, failed)
        return
    for (path, image, read_s), result in zip(batch, results):
        result.meta.setdefault("timings", {})["read_s"] = read_s
        yield path, image, result


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "-V", "--version", prog_name="segkit")
def main():
    """segkit: OneFormer, CutLER and CLIPSeg on your own images, on CPU or CUDA.

    \b
    Examples:
      segkit clipseg examples/cat.jpg --prompt cat --prompt grass
      segkit panoptic examples/ -o out/
      segkit cutler photo.jpg --threshold 0.5
    """
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings reach CLI users as one line, like errors, without the source line."""
    click.echo(f"warning: {message}", err=True)


@main.command()
@image_command
@click.option("-p", "--prompt", "prompts", multiple=True, help="Text prompt (repeat for several).")
@click.option("--prompt-image", "prompt_images", multiple=True, type=click.Path(),
              help="Example image to segment by (visual prompt; repeat for several).")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Heatmap threshold for masks (default 0.4).")
@click.option("--combine", is_flag=True, help="One label map: each pixel to the best prompt above the threshold.")
def clipseg(prompts, prompt_images, threshold, combine, model, **common):
    """Zero-shot segmentation of IMAGES by text (and image) prompts with CLIPSeg."""
    if not prompts and not prompt_images:
        raise click.UsageError("give at least one --prompt or --prompt-image")
    from .backends.clipseg.segmenter import label_prompt_images
    from .imageio import read_image

    labelled = label_prompt_images(prompt_images)
    visual = {}
    for label, path in labelled.items():  # decoded once for the whole run
        try:
            visual[label] = read_image(path)
        except SegkitError as exc:
            raise click.BadParameter(str(exc), param_hint="--prompt-image") from None
    options = {"prompts": list(prompts), "prompt_images": visual, "combine": combine}
    if threshold is not None:
        options["threshold"] = threshold
    record = {**options, "prompt_images": {label: str(path) for label, path in labelled.items()}}
    run_images("clipseg", model, options, record_options=record, **common)


@main.command()
@image_command
@click.option("--config", type=click.Path(dir_okay=False), help="detectron2-style YAML config of the CutLER family.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Score threshold (default 0.35, CutLER's demo value).")
@click.option("--max-detections", type=click.IntRange(min=1), help="Keep at most this many detections per image.")
def cutler(config, threshold, max_detections, model, **common):
    """Class-agnostic instance segmentation with CutLER (no detectron2 needed)."""
    options = {}
    if threshold is not None:
        options["threshold"] = threshold
    if max_detections is not None:
        options["max_detections"] = max_detections
    run_images("cutler", model, options, config=config, **common)


def _oneformer_command(task: str):
    def command(dataset, backbone, label_set, model, threshold=None, **common):
        options = {"task": task}
        if threshold is not None:
            options["threshold"] = threshold
        if label_set:
            options["label_set"] = _split_csv(label_set)
        run_images("oneformer", model or f"oneformer-{dataset}-{backbone}", options, **common)

    command.__name__ = task
    command.__doc__ = {
        "semantic": "Semantic segmentation with OneFormer: a class for every pixel.",
        "instance": "Instance segmentation with OneFormer: one mask per object.",
        "panoptic": "Panoptic segmentation with OneFormer: objects and stuff, every pixel once.",
    }[task]
    command = image_command(command)
    command = click.option("--label-set", multiple=True,
                           help="Keep only these class names (comma-separated or repeated).")(command)
    command = click.option("--backbone", type=click.Choice(BACKBONES), default="dinat-l", show_default=True)(command)
    command = click.option("--dataset", type=click.Choice(DATASETS), default="coco", show_default=True,
                           help="Training set (and label set) of the model.")(command)
    if task == "instance":
        command = click.option("--threshold", type=click.FloatRange(0, 1),
                               help="Class-probability threshold (default: the original demo's per-dataset value).")(command)
    return main.command(name=task)(command)


for _task in ("semantic", "instance", "panoptic"):
    _oneformer_command(_task)


@main.group(invoke_without_command=True)
@click.pass_context
def models(ctx):
    """List declared models (name, backend, tasks, cached, size)."""
    if ctx.invoked_subcommand:
        return
    from . import registry
    from .weights import is_cached

    rows = [("NAME", "BACKEND", "TASKS", "CACHED", "SIZE")]
    for name in registry.list_models():
        spec = registry.get_spec(name)
        size = f"{spec.size_mb:.0f} MB" if spec.size_mb else "?"
        default = "*" if spec.default else ""
        rows.append((name + default, spec.backend, ",".join(spec.tasks), "yes" if is_cached(spec) else "no", size))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    click.echo("* default model of its backend")


@models.command("download")
@click.argument("names", nargs=-1, required=True)
def models_download(names):
    """Fetch weights now, for later offline use."""
    from . import registry, weights

    failed = 0
    for name in names:
        try:
            spec = registry.get_spec(name)
            click.echo(f"{name}: {weights.resolve(spec)}")
        except KeyError as exc:
            failed += 1
            click.echo(f"error: {exc.args[0]}", err=True)
        except SegkitError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
    sys.exit(1 if failed else 0)


@main.command()
def info():
    """Versions, devices seen and cache folders."""
    import platform

    from .weights import cache_dir, offline

    click.echo(f"segkit       {__version__}")
    click.echo(f"python       {platform.python_version()} ({sys.executable})")
    for module in ("torch", "torchvision", "transformers", "huggingface_hub"):
        try:
            version = __import__(module).__version__
        except ImportError:
            version = "not installed"
        click.echo(f"{module:<12} {version}")
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            click.echo(f"device       cuda:{i} {torch.cuda.get_device_name(i)}")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        click.echo("device       mps")
    click.echo(f"device       cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    from huggingface_hub import constants

    click.echo(f"cache        {cache_dir()} (URL weights; SEGKIT_CACHE)")
    click.echo(f"hf cache     {constants.HF_HUB_CACHE} (hub weights; HF_HOME)")
    click.echo(f"offline      {'yes' if offline() else 'no'}")


def entry():
    """Console-script entry that keeps Ctrl-C to one line."""
    try:
        main()
    except KeyboardInterrupt:
        _fail("interrupted", 130)


__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    entry()
