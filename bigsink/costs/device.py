"""Costs whose strips are made in another array namespace (a GPU), read one strip ahead.

:class:`DeviceCost` moves each strip of a source to the device when it is read;
:func:`on_device` gives any cost source in a namespace (asking its ``to_namespace`` member
first: a matrix moves once, a point cloud moves its points).

:class:`StripPrefetcher` serves ``rows(start, stop)`` requests from one background thread
that reads (and moves to the device) the strip expected next. Solvers ask for the same strips
in the same order every pass, so after the first pass the order is known exactly (before it,
the next strip is guessed as the contiguous one of the same height). A request that was not
predicted is simply read then; results never depend on the prediction.

For CuPy, :class:`PinnedCopier` stages each host strip in a reused pinned (page-locked) buffer,
read straight into it when the source can (``rows_into``, e.g. :class:`~bigsink.ZarrCost`),
and copies it to the device with one asynchronous copy on its own stream; the copy overlaps
the kernels of the current strip, which run on the compute thread's stream.

Why not ``zarr.config.enable_gpu()``: in zarr 3.1 it makes the *last* stage of the codec
pipeline produce CuPy buffers, but a local store still reads each chunk's bytes into host
memory (``LocalStore`` reads the file, then copies the bytes to a device buffer chunk by
chunk from pageable memory, on the default stream) and codecs decode on the host. That is
no more direct than the pinned path here, copies in many small synchronous pieces, and
would change zarr's global configuration for the user's other arrays too.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import CostSource, MappedCost

__all__ = ["DeviceCost", "PinnedCopier", "PrefetchStats", "StripPrefetcher", "on_device"]

Array = Any
Key = tuple[int, int]


@dataclass
class PrefetchStats:
    """How requests were served: ``hits`` (read ahead), ``misses`` (read on request)."""

    hits: int = 0
    misses: int = 0


class StripPrefetcher:
    """Strips ``source.rows(start, stop)``, read one ahead on a background thread.

    Args:
        source: a cost source (``shape``, ``dtype``, ``rows``; optionally
            ``rows_into(start, stop, out)`` to read into a given NumPy array).
        move: applied to each host strip on the background thread (e.g. a copy to the GPU);
            identity by default.
        staging: ``staging(shape, dtype) -> NumPy array`` to read each strip into (e.g. a
            pinned buffer, reused: ``move`` must have copied it before returning). None:
            strips are returned as the source gives them.
    """

    def __init__(
        self, source: Any, move: Callable[[Array], Array] | None = None,
        staging: Callable[[tuple[int, int], np.dtype[Any]], np.ndarray] | None = None,
    ) -> None:
        self.source = source
        self.move = move or (lambda x: x)
        self.staging = staging
        self.stats = PrefetchStats()
        self._n = int(source.shape[0])
        self._lock = threading.Lock()
        self._order: dict[Key, Key] = {}      # strip -> the strip requested after it
        self._last: Key | None = None
        self._pending: dict[Key, Future[Array]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bigsink-prefetch")
        weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)

    def _load(self, start: int, stop: int) -> Array:
        """Read rows ``[start, stop)`` (into the staging buffer if any) and move them."""
        if self.staging is None:
            return self.move(self.source.rows(start, stop))
        out = self.staging((stop - start, int(self.source.shape[1])), np.dtype(self.source.dtype))
        if hasattr(self.source, "rows_into"):
            self.source.rows_into(start, stop, out)
        else:
            np.copyto(out, np.asarray(self.source.rows(start, stop)))
        return self.move(out)

    def _predict(self, key: Key) -> Key | None:
        """The strip expected after ``key``: as last pass, else the contiguous one."""
        nxt = self._order.get(key)
        if nxt is None and key[1] < self._n:
            nxt = (key[1], min(self._n, key[1] + (key[1] - key[0])))
        return nxt

    def rows(self, start: int, stop: int) -> Array:
        """Rows ``[start, stop)`` (moved), then start reading the strip expected next."""
        key = (int(start), int(stop))
        with self._lock:
            if self._last is not None:
                self._order[self._last] = key
            self._last = key
            fut = self._pending.pop(key, None)
            for stale in self._pending.values():      # predictions that did not come true
                stale.cancel()
            self._pending.clear()
            if fut is None:
                self.stats.misses += 1
                fut = self._pool.submit(self._load, *key)
            else:
                self.stats.hits += 1
            nxt = self._predict(key)
            if nxt is not None:                       # (a one-strip pass re-reads itself)
                self._pending[nxt] = self._pool.submit(self._load, *nxt)
        return fut.result()

    def close(self) -> None:
        """Drop pending reads and stop the background thread."""
        with self._lock:
            for f in self._pending.values():
                f.cancel()
            self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class PinnedCopier:
    """Host strip -> CuPy array through a reused pinned buffer and a copy stream.

    ``staging`` hands out a view of one pinned buffer (grown when needed); ``move`` copies it
    to a new device array asynchronously on a non-blocking stream and waits for that copy
    only, so the buffer can be reused and the compute stream is never blocked. Allocation
    happens under the copy stream, so CuPy's stream-aware memory pool never hands this copy
    a block that kernels on the compute stream may still be reading.

    Args:
        cupy: the ``cupy`` module (passed in: bigsink imports CuPy only in ``_xp``).
    """

    def __init__(self, cupy: Any) -> None:
        self.cupy = cupy
        self.device = cupy.cuda.Device().id          # the caller's device, for the thread
        self._mem: Any = None
        self._nbytes = 0
        self._stream: Any = None

    def staging(self, shape: tuple[int, int], dtype: np.dtype[Any]) -> np.ndarray:
        """A pinned NumPy array of ``shape`` and ``dtype`` (valid until the next call)."""
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        if nbytes > self._nbytes:
            with self.cupy.cuda.Device(self.device):
                self._mem = self.cupy.cuda.alloc_pinned_memory(nbytes)
            self._nbytes = nbytes
        return np.frombuffer(self._mem, dtype=dtype, count=count).reshape(shape)

    def move(self, host: np.ndarray) -> Any:
        """``host`` on the device (the copy has completed when this returns)."""
        cupy = self.cupy
        with cupy.cuda.Device(self.device):
            if self._stream is None:
                self._stream = cupy.cuda.Stream(non_blocking=True)
            with self._stream:
                out = cupy.empty(host.shape, dtype=host.dtype)
                out.set(host, stream=self._stream)
            self._stream.synchronize()
        return out


class DeviceCost(MappedCost):
    """A cost source whose strips are moved into another array namespace (e.g. CuPy).

    Each strip is read from ``source`` and copied to the device once per use; the kernels
    then run there. Used by ``solve(..., device="gpu")`` for stored and streamed costs.
    With ``prefetch`` (default), strips come from a :class:`StripPrefetcher`:
    the next strip is read (and, for CuPy, copied to the GPU through a pinned buffer on its
    own stream, :class:`PinnedCopier`) on a background thread while the
    current one is computed on.

    Args:
        source: any cost source.
        xp: the target array namespace (``cupy``; any array-API namespace works).
        prefetch: read one strip ahead on a background thread (in this process; a copy
            unpickled elsewhere reads on request).
    """

    def __init__(self, source: CostSource, xp: Any, prefetch: bool = True) -> None:
        super().__init__(source)
        self.xp = xp
        self.prefetch = prefetch
        self._prefetcher: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "xp": self.xp.__name__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (on a Dask worker): no read-ahead, as tasks there come in no
        predictable order and a wrong guess would read a strip for nothing."""
        import importlib

        self.__init__(  # type: ignore[misc]
            state["source"], importlib.import_module(state["xp"]), prefetch=False
        )

    def apply(self, x: Array) -> Array:
        """``x`` on the device."""
        return self.xp.asarray(x)

    @property
    def prefetcher(self) -> Any:
        """The :class:`StripPrefetcher` serving :meth:`rows` (made on first
        use, so each process that unpickles this cost gets its own thread)."""
        if self._prefetcher is None:
            if getattr(self.xp, "__name__", "") == "cupy":
                copier = PinnedCopier(self.xp)
                self._prefetcher = StripPrefetcher(self.source, copier.move, copier.staging)
            else:
                self._prefetcher = StripPrefetcher(self.source, self.apply)
        return self._prefetcher

    def rows(self, start: int, stop: int) -> Array:
        """Rows ``[start, stop)`` of the source on the device (read ahead with ``prefetch``)."""
        if not self.prefetch:
            return self.apply(self.source.rows(start, stop))
        return self.prefetcher.rows(start, stop)

    @property
    def namespace(self) -> str:
        """The target namespace's module name."""
        return str(getattr(self.xp, "__name__", "")).split(".")[0]

    def to_namespace(self, xp: Any) -> CostSource:
        """The source itself in ``xp`` (no second wrapper)."""
        return on_device(self.source, xp)

    def __repr__(self) -> str:
        return f"DeviceCost({self.source!r}, xp={self.xp.__name__})"


def on_device(cost: CostSource, xp: Any) -> CostSource:
    """``cost`` with its strips produced in namespace ``xp``: its own ``to_namespace(xp)``
    when it has one (an in-memory matrix moves once, a point cloud moves its coordinates),
    else a :class:`DeviceCost`, which moves each strip when it is read."""
    to_namespace = getattr(cost, "to_namespace", None)
    return to_namespace(xp) if to_namespace is not None else DeviceCost(cost, xp)
