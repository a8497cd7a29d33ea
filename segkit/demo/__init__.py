"""``segkit demo``: a local web page for every backend (Gradio, the optional ``demo`` extra).

Nothing on the page reaches beyond the machine: Gradio's analytics are off before it is
imported, and the page uses system fonts only.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SegkitError

EXAMPLES = Path(__file__).parent / "examples"
INSTALL_HINT = 'the web demo needs Gradio: pip install "segkit[demo]"'


class DemoUnavailableError(SegkitError):
    """Gradio is not installed."""


def import_gradio():
    """Gradio, imported with its analytics and version check off; a one-line error without it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise DemoUnavailableError(INSTALL_HINT) from None
    return gradio
