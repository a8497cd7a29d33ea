"""The ``segkit`` command: a click group whose commands live one per module in ``segkit/commands``.

Command modules are imported only when listed or run, and none imports torch at import time, so
``--help`` and ``--version`` stay instant.
"""

from __future__ import annotations

import importlib
import signal
import sys
import warnings

import click

from ._version import __version__

COMMANDS = {  # name -> module:attribute, in the order --help lists them
    "semantic": "segkit.commands.oneformer:semantic",
    "instance": "segkit.commands.oneformer:instance",
    "panoptic": "segkit.commands.oneformer:panoptic",
    "cutler": "segkit.commands.cutler:command",
    "clipseg": "segkit.commands.clipseg:command",
    "demo": "segkit.commands.demo:command",
    "models": "segkit.commands.models:group",
    "info": "segkit.commands.info:command",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command is needed."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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


class Terminated(BaseException):
    """SIGTERM, delivered like Ctrl-C so the same clean-up runs."""


def _terminate(signum, frame):
    raise Terminated()


def entry():
    """Console-script entry: Ctrl-C and SIGTERM end in one line (exit 130 / 143), never a traceback."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("error: terminated", err=True)
        sys.exit(143)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


__all__ = ["main", "entry"]

if __name__ == "__main__":  # pragma: no cover
    entry()
