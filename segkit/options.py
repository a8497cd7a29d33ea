"""Predict options declared once per backend, as data.

Each backend lists its ``Option``s in one tuple. From that one declaration the Python API checks
``predict(**options)``, the CLI builds its flags and help, and ``S.json`` records every value used
(defaults included). A model's entry in ``models.yaml`` may override an option's default
(``options: {threshold: 0.4}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import OptionError

TYPES = {"float": float, "int": int, "bool": bool, "str": str}


@dataclass(frozen=True)
class Option:
    """One keyword of a backend's ``predict``.

    ``type`` is 'float', 'int', 'bool', 'str', 'strs' (a list of strings) or 'any' (the API takes
    any value the backend understands; the CLI does not build a flag for it). ``default`` None
    means "the backend decides" (usually a value from its config). ``flag`` is the CLI flag
    (default ``--name`` with '-' for '_'); ``cli=False`` keeps an option out of the generic flags
    (a command module sets it, e.g. OneFormer's ``task`` from the command name); ``separator``
    lets one CLI value of a 'strs' option hold several (``--label-set person,dog``).
    """

    name: str
    type: str
    default: object = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    flag: str | None = None
    short: str | None = None
    separator: str | None = None
    cli: bool = True

    def check(self, value, owner: str):
        """``value`` converted to the option's type, or OptionError naming the option and the rule."""
        if value is None:
            return None
        kind = self.type
        if kind == "any":
            return value
        if kind == "strs":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise self._error(owner, value, "must be a list of strings")
            value = list(value)
            for v in value:
                self._check_choice(v, owner)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise self._error(owner, value, "must be True or False")
            return value
        if kind == "str":
            if not isinstance(value, str):
                raise self._error(owner, value, "must be a string")
            self._check_choice(value, owner)
            return value
        number = _number(value, kind)
        if number is None:
            raise self._error(owner, value, "must be an integer" if kind == "int" else "must be a number")
        if (self.min is not None and number < self.min) or (self.max is not None and number > self.max):
            raise self._error(owner, value, f"is out of range; use {self.range_text()}")
        return number

    def _check_choice(self, value, owner):
        if self.choices is not None and value not in self.choices:
            raise self._error(owner, value, f"is not one of {', '.join(map(str, self.choices))}")

    def _error(self, owner: str, value, rule: str) -> OptionError:
        """The same complaint in the API's words (``name=value``) and the CLI's (``--flag value``)."""
        return OptionError(f"{owner}: {self.name}={value!r} {rule}", cli=f"{owner}: {self.cli_flag} {value} {rule}")

    def range_text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        return f"<= {self.max:g}"

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


def _number(value, kind):
    if isinstance(value, bool):
        return None
    if kind == "int":
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def resolve_options(declared: tuple[Option, ...], given: Mapping, defaults: Mapping, owner: str) -> dict:
    """Every declared option's value: ``given`` (checked), else ``defaults`` (models.yaml), else the
    declared default. An unknown name is an OptionError that lists the valid ones."""
    names = {option.name for option in declared}
    unknown = [key for key in given if key not in names]
    if unknown:
        valid = ", ".join(option.name for option in declared) or "none"
        raise OptionError(f"{owner}: unknown option {unknown[0]!r}; valid options: {valid}",
                          cli=f"{owner}: this command has no option {unknown[0]!r}")
    values = {}
    for option in declared:
        if option.name in given and given[option.name] is not None:
            values[option.name] = option.check(given[option.name], owner)
        else:
            values[option.name] = option.check(defaults.get(option.name, option.default), owner)
    return values
