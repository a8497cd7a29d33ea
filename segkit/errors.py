"""User-facing errors: each carries one line that names the problem and its fix."""


class SegkitError(Exception):
    """An error the CLI prints as one line (no traceback unless --debug)."""


class ImageReadError(SegkitError):
    """An input could not be read as an image."""


class WeightsUnavailableError(SegkitError):
    """Weights are neither cached nor reachable."""


class CheckpointError(SegkitError):
    """A checkpoint file does not fit the architecture it is loaded into."""


class RequestError(SegkitError):
    """The request itself cannot be honoured (a bad option, config, device): every image would fail
    alike, so a batch stops at once and the CLI exits 2."""


class ConfigError(RequestError):
    """A model config asks for something segkit cannot honour."""


class DeviceError(RequestError):
    """The requested device or dtype is not available."""


class OptionError(RequestError):
    """A predict option is unknown, of the wrong type or out of range."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type), to quote inside a one-line error."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


class EvaluationInputError(SegkitError):
    """Ground truth or predictions given to ``segkit eval`` are unreadable or do not fit each other:
    scoring them would give a wrong number, so nothing is scored."""
