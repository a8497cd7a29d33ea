"""``segkit clipseg``: zero-shot segmentation by text and image prompts."""

import click

from ..errors import SegkitError
from .images import Extra, image_command


def _with_prompt_images(options: dict, prompt_images) -> dict:
    """Decode each --prompt-image once for the whole run, labelled by its file's stem."""
    if not options.get("prompts") and not prompt_images:
        raise click.UsageError("give at least one --prompt or --prompt-image")
    from ..backends.clipseg.segmenter import label_prompt_images
    from ..imageio import read_image

    decoded = {}
    for label, path in label_prompt_images(prompt_images).items():
        try:
            decoded[label] = read_image(path)
        except SegkitError as exc:
            raise click.BadParameter(str(exc), param_hint="--prompt-image") from None
    return {**options, "prompt_images": decoded}


command = image_command(
    "clipseg", "clipseg", "Zero-shot segmentation of IMAGES by text (and image) prompts with CLIPSeg.",
    extra=[Extra("--prompt-image", name="prompt_images", multiple=True, type=click.Path(),
                 help="Example image to segment by (visual prompt; repeat for several).")],
    prepare=_with_prompt_images)
