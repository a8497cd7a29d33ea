"""segkit: run OneFormer, CutLER and CLIPSeg on your own images, with one result type.

Importing segkit is cheap: torch and transformers load only when a model does.
"""

from ._version import __version__

__all__ = ["__version__", "load", "list_models", "segment_video", "Result"]


def load(name: str, *, weights=None, config=None, device="auto", dtype=None):
    """Load a model by models.yaml name or backend name ("clipseg", "cutler", "oneformer")."""
    import importlib

    from .device import resolve_device
    from .registry import BACKENDS, get_spec

    spec = get_spec(name)
    backend = importlib.import_module(BACKENDS[spec.backend])
    return backend.load(spec, weights=weights, config=config, device=resolve_device(device), dtype=dtype)


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
    raise AttributeError(f"module 'segkit' has no attribute {name!r}")
