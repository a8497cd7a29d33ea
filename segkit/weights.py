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


def cache_location(spec: ModelSpec) -> Path:
    """The folder that holds a model's weights once downloaded (what to copy to an offline machine)."""
    if "url" in spec.weights:
        return cache_dir()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + spec.weights["hub"].replace("/", "--"))


def _unavailable(spec: ModelSpec, why: str) -> WeightsUnavailableError:
    message = (f"weights for {spec.name} are not cached and could not be fetched from {spec.source} ({why}); "
               f"run 'segkit models download {spec.name}' on a connected machine and copy {cache_location(spec)} "
               "here, or pass ")
    return WeightsUnavailableError(message + "weights= a local copy", cli=message + "--weights PATH")


def local_weights(path) -> Path:
    """A user-given weights file or folder, checked to exist."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsUnavailableError(f"{path}: no such weights file or folder; check weights=",
                                      cli=f"{path}: no such weights file or folder; check the --weights path")
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _recorded_digest(target: Path) -> Path:
    """Where the SHA-256 seen at a URL file's first download is kept (no checksum is published)."""
    return target.with_name(target.name + ".sha256")


def _verified(spec: ModelSpec, target: Path) -> Path:
    """The cached file, if its SHA-256 is the published one or the one recorded at its download."""
    expected = spec.weights.get("sha256")
    record = _recorded_digest(target)
    if not expected and record.is_file():
        expected = record.read_text(encoding="utf-8").split()[0]
    if expected and _sha256(target) != expected:
        raise WeightsUnavailableError(
            f"{target}: the cached weights of {spec.name} changed or are truncated since they were downloaded "
            f"(SHA-256 differs); delete the file and run 'segkit models download {spec.name}' again")
    return target


def url_file(spec: ModelSpec) -> Path:
    """The spec's URL weights file in segkit's cache, downloaded (atomically, checksummed) if missing.

    No checksum is published for most of these files, so the SHA-256 of the first download is
    recorded beside it and every later load verifies it.
    """
    target = cache_dir() / spec.weights["file"]
    if target.is_file():
        return _verified(spec, target)
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
        _recorded_digest(target).write_text(f"{digest.hexdigest()}  {target.name}\n", encoding="utf-8")
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


def describe(spec: ModelSpec, weights=None) -> dict:
    """Where a loaded model's weights came from, for S.json: the local path given, the hub repo
    and the commit its cached snapshot resolved to, or the URL file and its SHA-256."""
    if weights is not None:
        return {"model": spec.name, "path": str(Path(weights).expanduser().resolve())}
    if "hub" in spec.weights:
        return {"model": spec.name, "hub": spec.weights["hub"], "revision": resolved_revision(spec)}
    target = cache_dir() / spec.weights["file"]
    record = _recorded_digest(target)
    sha = spec.weights.get("sha256") or (record.read_text(encoding="utf-8").split()[0] if record.is_file() else None)
    return {"model": spec.name, "url": spec.weights["url"], "sha256": sha}


def resolved_revision(spec: ModelSpec) -> str | None:
    """The commit of the cached snapshot of a hub model (its folder's name), or None if not cached."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(spec.weights["hub"], revision=spec.weights.get("revision", "main"),
                                   allow_patterns=spec.weights.get("files"), local_files_only=True)
    except Exception:
        return None
    return Path(folder).name


def is_cached(spec: ModelSpec) -> bool:
    """Whether the spec's weights are available without a network."""
    if "url" in spec.weights:
        return (cache_dir() / spec.weights["file"]).is_file()
    return resolved_revision(spec) is not None
