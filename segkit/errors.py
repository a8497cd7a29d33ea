"""User-facing errors: each carries one line that names the problem and its fix."""


class SegkitError(Exception):
    """An error the CLI prints as one line (no traceback unless --debug).

    The message names the API's parameters (``device=``); ``cli``, where given, is the same
    message in the command line's words (``--device``), which the CLI prints instead.
    """

    def __init__(self, message: str = "", cli: str | None = None):
        super().__init__(message)
        self.cli = cli

    def for_cli(self) -> str:
        return self.cli or str(self)


class ImageReadError(SegkitError):
    """An input could not be read as an image."""


class DiskFullError(SegkitError):
    """The output disk is full: every next image would fail alike, so a batch stops."""


class WeightsUnavailableError(SegkitError):
    """Weights are neither cached nor reachable."""


class CheckpointError(SegkitError):
    """A checkpoint file does not fit the architecture it is loaded into."""


class RequestError(SegkitError):
    """The request itself cannot be honoured (a bad option, config, device): every image would fail
    alike, so a batch stops at once and the CLI exits 2."""


class PickledCodeError(CheckpointError):
    """A weights file needs pickled Python code to load; segkit never runs it."""


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
