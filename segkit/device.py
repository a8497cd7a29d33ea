"""Device and dtype choice: CUDA when present, else CPU; float16 only where a backend allows."""

from __future__ import annotations

from .errors import DeviceError

DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_device(device: str = "auto"):
    """A torch.device for 'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps', or a clear error."""
    import torch

    device = str(device or "auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise _device_error(device, "is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _device_error(device, "CUDA is not available on this machine; use {cpu}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _device_error(device, f"only {torch.cuda.device_count()} CUDA device(s) here; use cuda:0..")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise _device_error(device, "MPS is not available on this machine; use {cpu}")
    return dev


def _device_error(device, reason: str) -> DeviceError:
    return DeviceError(f"device={device!r}: " + reason.format(cpu="device='cpu'"),
                       cli=f"--device {device}: " + reason.format(cpu="--device cpu"))


def resolve_dtype(dtype, device, half_ok: bool = True):
    """'auto' is float16 on CUDA when the backend is exact enough in it (half_ok), else float32."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    dtype = str(dtype or "auto")
    if dtype == "auto":
        return torch.float16 if (device.type == "cuda" and half_ok) else torch.float32
    if dtype not in DTYPES:
        raise DeviceError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}",
                          cli=f"--dtype {dtype} is not one of {', '.join(DTYPES)}")
    if dtype == "float16" and device.type == "cpu":
        raise DeviceError("dtype='float16' is not supported on the CPU; use 'float32' or 'bfloat16'",
                          cli="--dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return getattr(torch, dtype)
