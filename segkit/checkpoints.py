"""Loading weights safely and strictly, the same way for every backend.

Files load with ``torch.load(weights_only=True)`` only: a file that needs pickled code is refused
with one message that says how to convert it. Weights that do not fit the model (missing,
unexpected or mis-shaped tensors) are refused in one line naming the first keys, never run as
random weights. transformers' load report is captured, not printed (``SEGKIT_DEBUG=1`` shows it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from pathlib import Path

from .errors import CheckpointError, PickledCodeError, first_line

SHOWN_KEYS = 3
PICKLED = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")
# Tensors a checkpoint may carry that the model rebuilds itself or does not use.
ALWAYS_IGNORABLE = (r"(^|\.)position_ids$",)


def pickled_code_error(path, found: str | None = None) -> PickledCodeError:
    """The one message for a weights file that needs pickled Python code to load."""
    what = f" ({found})" if found else ""
    return PickledCodeError(
        f"{path}: the file contains pickled Python code{what}, which segkit does not run; on a machine where "
        "you trust the file, convert it to plain tensors: python -c \"import torch, safetensors.torch as s; "
        "d = torch.load('IN', weights_only=False); s.save_file({k: v.contiguous() for k, v in "
        "d.get('model', d).items()}, 'model.safetensors')\"")


def torch_load(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU, with segkit's one-line errors."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        code = PICKLED.search(str(exc))
        if code:
            raise pickled_code_error(path, code.group(1)) from None
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", str(exc))
        reason = detail.group(1)[:160] if detail else first_line(exc, 160)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


@contextlib.contextmanager
def quiet_transformers():
    """Capture what transformers prints while loading (its LOAD REPORT, warnings, bars)."""
    if os.environ.get("SEGKIT_DEBUG"):
        yield io.StringIO()
        return
    from transformers.utils import logging as hf_logging

    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    logger = hf_logging.get_logger("transformers")
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        logger.handlers[:], logger.propagate = saved


def from_pretrained(model_class, folder: Path, *, ignore_unexpected=(), what: str, **kwargs):
    """``model_class.from_pretrained(folder)``, refusing weights that do not fit the model.

    Keys the model class declares ignorable (``_keys_to_ignore_on_load_*``), buffers it rebuilds
    (position ids) and ``ignore_unexpected`` patterns (e.g. a pooler the model does not use) are
    allowed; anything else missing, unexpected or mis-shaped is a CheckpointError.
    """
    try:
        with quiet_transformers():
            # Mis-shaped tensors are listed (and refused below) rather than raised without their names.
            model, info = model_class.from_pretrained(str(folder), output_loading_info=True,
                                                      ignore_mismatched_sizes=True, **kwargs)
    except Exception as exc:
        code = PICKLED.search(str(exc)) or (PICKLED.search(str(exc.__cause__)) if exc.__cause__ else None)
        if code:
            raise pickled_code_error(folder, code.group(1)) from None
        raise CheckpointError(f"{folder}: not a loadable {what} ({first_line(exc)}); pass a folder saved by "
                              f"{model_class.__name__}.save_pretrained") from None
    missing = _not_ignored(info.get("missing_keys", ()), getattr(model_class, "_keys_to_ignore_on_load_missing", None))
    unexpected = _not_ignored(info.get("unexpected_keys", ()),
                              list(getattr(model_class, "_keys_to_ignore_on_load_unexpected", None) or ())
                              + list(ignore_unexpected))
    mismatched = [str(k[0]) if isinstance(k, tuple) else str(k) for k in info.get("mismatched_keys", ())]
    problems = [(len(missing), "missing", missing), (len(unexpected), "unexpected", unexpected),
                (len(mismatched), "of the wrong shape", mismatched)]
    problems = [p for p in problems if p[0]]
    if problems:
        text = "; ".join(f"{n} {kind} (e.g. {', '.join(sorted(keys)[:SHOWN_KEYS])})" for n, kind, keys in problems)
        raise CheckpointError(f"{folder}: the weights do not fit this {what}: tensors {text}; segkit does not "
                              "run weights it cannot load completely: pass the matching model folder")
    return model


def _not_ignored(keys, patterns) -> list[str]:
    patterns = [re.compile(p) for p in list(patterns or ()) + list(ALWAYS_IGNORABLE)]
    return [str(k) for k in keys if not any(p.search(str(k)) for p in patterns)]
