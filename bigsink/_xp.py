"""Array-namespace helpers: the one place that knows how to move arrays between NumPy and
a device namespace (CuPy) without importing CuPy."""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace

__all__ = [
    "array_namespace", "device_namespace", "import_cupy", "is_cupy_array", "like", "to_numpy",
]

#: What ``device=`` accepts.
DEVICES = ("cpu", "gpu")


def device_namespace(device: str) -> Any:
    """The array namespace of ``device``: NumPy for "cpu", CuPy for "gpu".

    CuPy is imported here and nowhere else; its absence is an InputError saying how to
    install it.
    """
    from .errors import InputError

    if device == "cpu":
        return np
    if device != "gpu":
        raise InputError(f"device must be one of {DEVICES} or None; got {device!r}.")
    cupy = import_cupy()
    if cupy.cuda.runtime.getDeviceCount() < 1:
        raise InputError("device='gpu' but CuPy sees no CUDA device.")
    return cupy


def import_cupy() -> Any:
    """The ``cupy`` module, imported now (bigsink never imports it at module import time).

    Raises:
        InputError: CuPy is not installed, saying how to install it.
    """
    from .errors import InputError

    try:
        import cupy
    except ImportError as exc:
        raise InputError(
            "device='gpu' needs CuPy: pip install cupy-cuda12x (bigsink's gpu extra; CUDA 12) "
            "and a CUDA GPU. "
            f"Import failed with: {exc}"
        ) from exc
    return cupy


def is_cupy_array(x: Any) -> bool:
    """Whether ``x`` is a CuPy array, decided by its type's module (CuPy is not imported)."""
    return type(x).__module__.split(".")[0] == "cupy"


def to_numpy(x: Any) -> Any:
    """``x`` as NumPy when it is an array of another namespace (CuPy: copied to host).

    Tuples and lists are converted element-wise; ``None`` and Python scalars pass through.
    """
    if x is None or isinstance(x, int | float | np.ndarray | np.generic):
        return x
    if isinstance(x, tuple | list):
        return type(x)(to_numpy(v) for v in x)
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)


def like(x: Any, ref: Any) -> Any:
    """``x`` (NumPy or scalar) in the namespace and on the device of ``ref``."""
    if x is None or isinstance(x, int | float):
        return x
    if isinstance(ref, np.ndarray):
        return np.asarray(x)
    return array_namespace(ref).asarray(x)
