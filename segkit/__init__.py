"""segkit: run OneFormer, CutLER, MaskCut and CLIPSeg on your own images and videos, with one result type.

Importing segkit is cheap: torch and transformers load only when a model does.
"""

from ._version import __version__

__all__ = ["__version__", "check", "load", "list_models", "run", "segment_video", "Result"]


def check(name: str, *, device="auto", dtype=None, **options) -> None:
    """Check a model name, device, dtype and predict options without loading anything heavy.

    Raises a RequestError (OptionError, DeviceError) or KeyError for an unknown model, so a bad
    request fails before any weights are fetched.
    """
    import importlib

    from .device import resolve_device, resolve_dtype
    from .options import resolve_options
    from .registry import BACKENDS, get_spec

    spec = get_spec(name)
    package = importlib.import_module(BACKENDS[spec.backend])
    resolve_options(package.OPTIONS, options, spec.options, owner=spec.name)
    resolve_dtype(dtype, resolve_device(device))


def load(name: str, *, weights=None, config=None, device="auto", dtype=None):
    """Load a model by models.yaml name or backend name ("clipseg", "cutler", "oneformer").

    The device and dtype are checked before any weights are fetched.
    """
    import importlib

    from .device import resolve_device, resolve_dtype
    from .registry import BACKENDS, get_spec
    from .weights import describe

    spec = get_spec(name)
    device = resolve_device(device)
    resolve_dtype(dtype, device)
    backend = importlib.import_module(BACKENDS[spec.backend])
    segmenter = backend.load(spec, weights=weights, config=config, device=device, dtype=dtype)
    segmenter.source = describe(spec, weights)
    return segmenter


def list_models(backend: str | None = None) -> list[str]:
    """Names of every declared model (see models.yaml)."""
    from .registry import list_models as _list

    return _list(backend)


def segment_video(segmenter, path, **kwargs):
    """Yield ``(frame_index, time_s, Result)`` for the frames of a video, lazily (see segkit.video)."""
    from .video import segment_video as _segment_video

    return _segment_video(segmenter, path, **kwargs)


def __getattr__(name):
    if name == "Result":
        from .result import Result

        return Result
    if name == "run":
        from .runner import run

        return run
    raise AttributeError(f"module 'segkit' has no attribute {name!r}")
