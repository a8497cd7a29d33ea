"""What the tests do when a piece of the system they need is missing (a browser, a font, an extra,
the operating system a test is written for): under CI, which installs every one, the test fails;
elsewhere it skips with the reason and the fix. Only CUDA tests skip everywhere (pytest.mark.skipif)."""

import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str, module: bool = False):
    """Fail under CI, skip elsewhere (``module``: the whole test module)."""
    if under_ci():
        pytest.fail(f"{reason} (CI must provide it)", pytrace=False)
    pytest.skip(reason, allow_module_level=module)
