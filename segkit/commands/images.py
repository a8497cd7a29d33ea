"""What every image-segmenting command shares: flags built from the backend's declared options and
models.yaml, and the run itself (the runner's outcomes mapped to messages and exit codes).

Exit codes: 0 every input done, 1 some input failed (or the disk filled up), 2 a usage error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from pathlib import Path

import click

from ..errors import RequestError, SegkitError
from ..registry import BACKENDS, get_spec, selected_model, selectors

COMMON_HELP = {
    "model": "Model name from 'segkit models' (overrides the selection flags).",
    "weights": "Local weights file or folder to use instead of the declared ones.",
}


def backend_package(backend: str):
    """The backend's light package: its TASKS and OPTIONS (importing it never imports torch)."""
    return importlib.import_module(BACKENDS[backend])


def _option_flag(option):
    """A click option for one declared predict option."""
    names = [option.cli_flag] + ([option.short] if option.short else [])
    default_text = f" Default: {option.default:g}." if isinstance(option.default, float) else ""
    help_text = option.help + default_text
    kwargs = {"help": help_text, "default": None}
    if option.type == "bool":
        flag = option.cli_flag[2:]
        return click.option(f"--{flag}/--no-{flag}", option.name, **kwargs)
    if option.type == "strs":
        return click.option(*names, option.name, multiple=True, **kwargs)
    if option.choices is not None:
        return click.option(*names, option.name, type=click.Choice([str(c) for c in option.choices]), **kwargs)
    if option.type in ("float", "int"):
        kind = click.FloatRange if option.type == "float" else click.IntRange
        return click.option(*names, option.name, type=kind(option.min, option.max), **kwargs)
    return click.option(*names, option.name, type=str, **kwargs)


def _split_csv(values) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def predict_options(backend: str, given: dict) -> dict:
    """The declared options the user set on the command line (unset ones are left to the model)."""
    chosen = {}
    for option in backend_package(backend).OPTIONS:
        if not option.cli or option.name not in given:
            continue
        value = given[option.name]
        if option.type == "strs":
            value = list(value)
            if option.separator:
                value = _split_csv(value)
            if not value:
                continue
        if value is not None:
            chosen[option.name] = value
    return chosen


def image_command(backend: str, name: str, doc: str, *, fixed: dict | None = None, extra=(), prepare=None,
                  hide=()):
    """A click command ``name`` that segments images with ``backend``.

    Its flags: the backend's declared options (``cli=True``), the selection flags of its models in
    models.yaml (e.g. --dataset/--backbone), the command module's ``extra`` options, and the common
    ones, less the declared options named in ``hide`` (those the command does not use).
    ``fixed`` predict options are set by the command itself (OneFormer's task);
    ``prepare(options, **extras)`` turns the extra flags into predict options.
    """
    package = backend_package(backend)
    select = selectors(backend)
    extra_names = [e.name for e in extra]

    def callback(**params):
        extras = {key: params.pop(key) for key in extra_names}
        chosen = {**predict_options(backend, params), **(fixed or {})}
        if prepare is not None:
            chosen = prepare(chosen, **extras)
        model = pick_model(backend, params.pop("model"), {key: params.pop(key) for key in select})
        for option in package.OPTIONS:
            params.pop(option.name, None)
        params.setdefault("config", None)  # backends without a config flag
        run_images(backend, model, chosen, **params)

    command = click.Command(name, callback=callback, help=doc, short_help=doc.splitlines()[0],
                            params=[click.Argument(["images"], nargs=-1, required=True)])
    decorators = [_option_flag(o) for o in package.OPTIONS if o.cli and o.name not in hide]
    for key, info in select.items():
        decorators.append(click.option(f"--{key}", key, type=click.Choice(info["choices"]),
                                       default=info["default"], show_default=True, help=info["help"]))
    decorators += [click.option(*e.opts, e.name, **e.kwargs) for e in extra]
    decorators += common_options(getattr(package, "CONFIG_HELP", None))
    for decorator in decorators:  # on a Command (not a function) each option is appended in turn
        command = decorator(command)
    return command


class Extra:
    """A command's own click option, which its ``prepare`` turns into predict options."""

    def __init__(self, *opts, name, **kwargs):
        self.opts, self.name, self.kwargs = opts, name, kwargs


def common_options(config_help: str | None):
    options = [
        click.option("--model", help=COMMON_HELP["model"]),
        click.option("--weights", type=click.Path(), help=COMMON_HELP["weights"]),
    ]
    if config_help:
        options.append(click.option("--config", type=click.Path(dir_okay=True), help=config_help))
    options += [
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
                     show_default=True, help="auto: float16 on CUDA where exact enough, else float32."),
        click.option("-o", "--output", default="segkit-out", show_default=True, type=click.Path(file_okay=False),
                     help="Output folder."),
        click.option("--save", "save", multiple=True,
                     help="Outputs besides the overlay, comma-separated: labels,json,heatmaps,masks,grid,panoptic "
                          "(default: labels,json,heatmaps)."),
        click.option("--coco", type=click.Path(dir_okay=False),
                     help="Also write one COCO dataset file of the whole batch (pseudo-labels for training)."),
        click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Overlay opacity."),
        click.option("--overlay-format", type=click.Choice(["png", "jpg"]), default="png", show_default=True,
                     help="S_overlay as lossless PNG or as a small, fast JPEG (quality 95); labels, masks and "
                          "heatmaps are always lossless PNG."),
        click.option("--recursive", is_flag=True, help="Descend into sub-folders of folder inputs."),
        click.option("--stride", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Videos: segment every N-th frame (the output still plays at real speed)."),
        click.option("--start", type=click.FloatRange(min=0), help="Videos: first second to segment."),
        click.option("--end", type=click.FloatRange(min=0), help="Videos: last second to segment."),
        click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Images per forward pass (backends that share work across images use it)."),
        click.option("--max-pixels", type=click.IntRange(min=1), help="Refuse images with more pixels than this "
                     "(default: Pillow's decompression-bomb limit)."),
        click.option("--offline", is_flag=True, help="Never touch the network; use cached weights only."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="ray: run on a Ray cluster (a local one without --ray-address), same outputs."),
        click.option("--ray-address", help="Address of the Ray cluster for --engine ray (e.g. ray://head:10001)."),
        click.option("--workers", type=click.IntRange(min=1),
                     help="Ray actors, one model each (default: one per GPU share, else one per node)."),
        click.option("--gpus-per-worker", default=0.0, show_default=True, type=click.FloatRange(min=0),
                     help="GPUs Ray assigns to each worker (fractions share a GPU)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary line."),
        click.option("--debug", is_flag=True, help="Show each failure's traceback."),
    ]
    return options


def pick_model(backend: str, model: str | None, selection: dict) -> str:
    """The --model name checked against the command, else the model the selection flags name."""
    if model is not None:
        try:
            spec = get_spec(model)
        except KeyError as exc:
            raise click.BadParameter(exc.args[0], param_hint="--model") from None
        if spec.backend != backend:
            raise click.BadParameter(f"{model} is a {spec.backend} model; run it with 'segkit "
                                     f"{command_for(spec.backend)}'", param_hint="--model")
        return model
    try:
        return selected_model(backend, selection)
    except KeyError as exc:
        raise click.UsageError(exc.args[0]) from None


def command_for(backend: str) -> str:
    from ..cli import COMMANDS

    return next(name for name, target in COMMANDS.items() if f".{backend}:" in target)


def _save_set(values) -> tuple[str, ...]:
    from ..writer import DEFAULT_SAVE, SAVE_CHOICES

    chosen = _split_csv(values)
    unknown = [c for c in chosen if c not in SAVE_CHOICES and c != "overlay"]
    if unknown:
        raise click.BadParameter(f"unknown output {unknown[0]!r}; choose from {', '.join(SAVE_CHOICES)}",
                                 param_hint="--save")
    return tuple(c for c in chosen if c != "overlay") if chosen else DEFAULT_SAVE


def fail(message: str, code: int = 1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _count(paths, missing: int = 0) -> str:
    """'3 images', '1 video', '2 images and 1 video' (inputs that named nothing count as images)."""
    from ..video import VIDEO_SUFFIXES

    videos = sum(Path(p).suffix.lower() in VIDEO_SUFFIXES for p in paths)
    images = len(paths) - videos + missing
    parts = [_plural(images, "image")] if images or not videos else []
    return " and ".join(parts + ([_plural(videos, "video")] if videos else []))


class FrameBars:
    """One frame-counting progress bar (with frames per second) per video, on the terminal only."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.source = None

    def update(self, source, frames: int, expected: int | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if self.source != source:
            self.close()
            self.source = source
            self.bar = tqdm(total=expected, desc=Path(str(source)).name, unit="frame", file=sys.stderr, leave=False)
        self.bar.update(frames - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.source = None


def run_images(backend: str, model_name: str, options: dict, *, images, weights, config, device, dtype, output,
               save, coco, alpha, overlay_format, recursive, stride, start, end, batch_size, max_pixels, offline,
               engine, ray_address, workers, gpus_per_worker, quiet, debug):
    """Check everything, load the model once, run every input, report; exits with the batch's code."""
    if offline:
        from ..weights import set_offline

        set_offline()
    if debug:
        os.environ["SEGKIT_DEBUG"] = "1"  # show transformers' load reports
    if quiet or not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import segkit

    from ..cli import Terminated
    from ..files import check_writable, collect_inputs
    from ..imageio import IMAGE_SUFFIXES
    from ..runner import VideoSettings
    from ..video import FRAME_FILE_CHOICES, VIDEO_SUFFIXES, check_range
    from ..writer import OutputWriter

    save_set = _save_set(save)
    try:
        segkit.check(model_name, device=device, dtype=dtype, **options)  # before any weights are fetched
        check_range(stride, start, end)
    except RequestError as exc:
        fail(exc.for_cli(), 2)
    videos = VideoSettings(stride, start, end, save=tuple(c for c in _split_csv(save) if c in FRAME_FILE_CHOICES))
    out_dir = Path(output)
    inputs = collect_inputs(images, recursive=recursive, exclude=out_dir, suffixes=IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not inputs.paths and not inputs.missing:
        raise click.UsageError("; ".join(["no images found in the given paths"] + inputs.hints))
    try:
        check_writable(out_dir)
    except SegkitError as exc:
        fail(exc.for_cli())
    start = time.perf_counter()
    failures = list(inputs.missing)
    for message in inputs.missing:
        click.echo(f"error: {message}", err=True)
    stopped = None
    if inputs.paths:
        load_kwargs = {"weights": weights, "config": config, "device": device, "dtype": dtype}
        if engine == "ray":
            ray_engine, load_kwargs["weights"], source = _ray_engine(model_name, weights, debug)
        else:
            segmenter = _load(model_name, debug, **load_kwargs)
            source = segmenter.source
        writer = OutputWriter(out_dir, save=save_set, alpha=alpha, inputs=inputs.paths,
                              model_info={"weights": source}, coco_path=coco, overlay_format=overlay_format)
        from tqdm import tqdm

        interactive = not quiet and sys.stderr.isatty()
        bar = tqdm(total=len(inputs.paths), disable=not (interactive and len(inputs.paths) > 1) or engine == "ray",
                   file=sys.stderr, unit="input")
        frames = FrameBars(enabled=interactive)
        outcomes = None
        videos_done = 0  # images are counted by the writer (it knows of a last write finished while stopping)
        try:
            from ..runner import describe, run

            if engine == "ray":  # Ray shows its own progress
                outcomes = ray_engine.run(model_name, load_kwargs, inputs.paths, options, writer,
                                          batch_size=batch_size, max_pixels=max_pixels, address=ray_address,
                                          workers=workers, gpus_per_worker=gpus_per_worker, video=videos,
                                          frame_progress=frames.update, show_progress=not quiet)
            else:
                outcomes = run(segmenter, inputs.paths, options, writer, batch_size=batch_size,
                               max_pixels=max_pixels, video=videos, frame_progress=frames.update)
            for outcome in outcomes:
                frames.close()
                bar.update(1)
                videos_done += outcome.ok and outcome.frames is not None
                if not outcome.ok:
                    message = (describe(outcome.source, outcome.exception, for_cli=True)
                               if outcome.exception is not None else outcome.error)
                    failures.append(message)
                    tqdm.write(f"error: {message}", file=sys.stderr)
                    if debug and outcome.exception is not None:
                        tqdm.write("".join(traceback.format_exception(outcome.exception)), file=sys.stderr)
        except RequestError as exc:
            bar.close()
            fail(exc.for_cli(), 2)
        except SegkitError as exc:  # a full disk: every next image would fail alike
            failures.append(exc.for_cli())
            click.echo(f"error: {exc.for_cli()}", err=True)
            stopped = 1
        except (KeyboardInterrupt, Terminated) as exc:
            stopped = 143 if isinstance(exc, Terminated) else 130
        finally:
            if outcomes is not None:
                outcomes.close()  # stops the runner now: its last write finishes or is undone before the summary
            frames.close()
            bar.close()
            try:
                batch_files = writer.finish()
            finally:
                writer.close()
        if stopped in (130, 143):
            word = "interrupted" if stopped == 130 else "terminated"
            note = f"; {writer.images_written} in {coco}" if coco else ""
            finished = writer.images_written + videos_done + len(failures) - len(inputs.missing)  # done, or failed
            click.echo(f"error: {word} after {finished} of {_count(inputs.paths)}{note}", err=True)
            sys.exit(stopped)
        if batch_files and not quiet:
            click.echo("wrote " + ", ".join(str(p) for p in batch_files))
    if not quiet:
        click.echo(f"{_count(inputs.paths, len(inputs.missing))}, {len(failures)} failed, "
                   f"{time.perf_counter() - start:.1f} s; outputs in {out_dir}")
    sys.exit(1 if failures else 0)


def _ray_engine(model_name, weights, debug):
    """The Ray engine, and the weights resolved once on the driver: (module, local path, source)."""
    from .. import ray as ray_engine

    try:
        ray_engine.require_ray()
        return (ray_engine, *ray_engine.resolve_weights(model_name, weights))
    except ray_engine.RayUnavailableError as exc:
        fail(str(exc), 2)
    except SegkitError as exc:
        if debug:
            raise
        fail(str(exc))


def _load(model_name, debug, **kwargs):
    import segkit

    try:
        return segkit.load(model_name, **kwargs)
    except RequestError as exc:  # the options asked for something impossible
        if debug:
            raise
        fail(exc.for_cli(), 2)
    except SegkitError as exc:
        if debug:
            raise
        fail(exc.for_cli())
    except Exception as exc:
        if debug:
            raise
        fail(f"could not load {model_name}: {type(exc).__name__}: {exc} (rerun with --debug for details)")
