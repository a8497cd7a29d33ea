"""``python -m segkit``: the same as the ``segkit`` command."""

from .cli import entry

entry()
