"""``segkit info``: versions, devices and cache folders, for bug reports."""

import os
import platform
import sys

import click

from .._version import __version__


@click.command("info")
def command():
    """Versions, devices seen and cache folders."""
    from ..weights import cache_dir, offline

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
