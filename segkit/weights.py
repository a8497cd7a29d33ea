"""Finding weights: local paths, the Hugging Face cache, or URL downloads into segkit's cache.

Nothing here waits long: when weights are not cached and cannot be fetched, the error says
which model, where it looked, and the two fixes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from .errors import WeightsUnavailableError, first_line
from .registry import ModelSpec

NETWORK_TIMEOUT_S = 10


def offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE or --offline)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def set_offline() -> None:
    """Turn on offline mode; must run before huggingface_hub/transformers are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def cache_dir() -> Path:
    """Where URL weights are kept: $SEGKIT_CACHE, else the user's cache folder."""
    if os.environ.get("SEGKIT_CACHE"):
        return Path(os.environ["SEGKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segkit"


def _unavailable(spec: ModelSpec, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"weights for {spec.name} are not cached and could not be fetched from {spec.source} ({why}); "
        f"run 'segkit models download {spec.name}' on a connected machine, or pass --weights PATH")


def local_weights(path) -> Path:
    """A user-given weights file or folder, checked to exist."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsUnavailableError(f"{path}: no such weights file or folder; check the --weights path")
    return path


def hub_folder(spec: ModelSpec) -> Path:
    """A local snapshot of the spec's hub repo, from the cache or freshly downloaded."""
    from huggingface_hub import snapshot_download

    repo, revision = spec.weights["hub"], spec.weights.get("revision", "main")
    patterns = spec.weights.get("files")
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns, local_files_only=True))
    except Exception:
        if offline():
            raise _unavailable(spec, "offline mode is on") from None
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise _unavailable(spec, first_line(exc)) from None


def url_file(spec: ModelSpec) -> Path:
    """The spec's URL weights file in segkit's cache, downloaded (atomically, checksummed) if missing."""
    target = cache_dir() / spec.weights["file"]
    if target.is_file():
        return target
    if offline():
        raise _unavailable(spec, "offline mode is on")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.weights["url"], timeout=NETWORK_TIMEOUT_S) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        expected = spec.weights.get("sha256")
        if expected and digest.hexdigest() != expected:
            raise WeightsUnavailableError(
                f"{spec.weights['url']}: checksum mismatch (got {digest.hexdigest()[:12]}…, "
                f"expected {expected[:12]}…); the download is corrupt, try again")
        os.replace(tmp, target)
    except WeightsUnavailableError:
        raise
    except Exception as exc:
        raise _unavailable(spec, first_line(exc)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def resolve(spec: ModelSpec, weights=None) -> Path:
    """Local path of the weights for a spec: --weights if given, else cache/download."""
    if weights is not None:
        return local_weights(weights)
    return hub_folder(spec) if "hub" in spec.weights else url_file(spec)


def is_cached(spec: ModelSpec) -> bool:
    """Whether the spec's weights are available without a network."""
    if "url" in spec.weights:
        return (cache_dir() / spec.weights["file"]).is_file()
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(spec.weights["hub"], revision=spec.weights.get("revision", "main"),
                          allow_patterns=spec.weights.get("files"), local_files_only=True)
        return True
    except Exception:
        return False
