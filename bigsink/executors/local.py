"""In-process executor: strips on a thread pool (NumPy and CuPy release the GIL)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._xp import like, to_numpy
from ..costs import CostSource, DenseCost, read_strip, reads_store, strip_module
from ..kernels import tree_reduce
from ..scratch import kernel_budget, scratch_room
from .base import (
    STRIP_BYTES,
    Held,
    StripJob,
    apply_kernel,
    concat_rows,
    pieces,
    strip_rows,
)

__all__ = [
    "DEVICE_STRIP_BYTES", "DEVICE_VIEW_BYTES", "LocalExecutor", "LocalSession", "kernel_room",
]

#: GPU strips run the CUDA kernels, whose temporaries are O(r + m): a strip read or computed
#: per use holds this many bytes of C on the device (and one more is read ahead).
DEVICE_STRIP_BYTES = 256 << 20
#: A matrix already on the device is cut into views of at most this many bytes (fewer
#: strips: fewer launches and host round trips per iteration), and at most 1/8 of the free
#: device memory, which bounds the temporaries of the generic kernels (the start-up scan,
#: the rare exact column pass) to a few times a strip.
DEVICE_VIEW_BYTES = 16 << 30
#: Strips per thread: few (each strip's partial is merged here, serially), but enough for
#: the threads to balance.
STRIPS_PER_THREAD = 4
#: At most this many bytes of C per strip of a matrix in memory (a view: costs nothing) ...
STRIP_VIEW_BYTES = 256 << 20
#: ... and of a cost that reads or computes its strips (a fresh buffer each time: small
#: ones are cheaper to fault in, and let one thread's read overlap the other's compute).
STRIP_READ_BYTES = 16 << 20
#: At least this many elements per strip: a thread's task and a merge cost microseconds.
MIN_STRIP_ELEMENTS = 1 << 18
#: A strip of a store-backed cost takes a whole block row (each piece of a cut chunk would
#: read and decode all of it) when the block row holds at most this many bytes.
STORE_BLOCK_BYTES = 256 << 20


def kernel_room(cost: CostSource) -> tuple[int, str]:
    """Bytes the scaling path's kernel of ``cost`` may take in this process, and where it
    would live (for messages): a scratch file (:func:`~bigsink.scratch.scratch_room`, the
    free space of the temporary directory) for a cost read from a Zarr store, which is never
    held whole in one process; memory (:func:`~bigsink.scratch.kernel_budget`) otherwise."""
    if reads_store(cost):
        return scratch_room()
    budget = kernel_budget()
    return budget, f"40% of memory ({budget / 2**30:.1f} GiB)"


def run_strip(
    cost: CostSource, start: int, stop: int, job: StripJob, chunk_rows: int | None = None,
) -> tuple[Any, Any]:
    """Read one strip and apply ``job.kernel`` to it in chunks of ``chunk_rows`` rows
    (:func:`~bigsink.executors.base.apply_kernel`); results come back as NumPy.

    Inputs are moved to the strip's namespace/device (NumPy or CuPy) first.
    """
    C = read_strip(cost, start, stop, job.strip_blocks(cost.grid.block_shape[0], start, stop))
    row_args = [like(x[start:stop], C) for x in job.row_args]
    shared = [like(x, C) for x in job.shared]
    row_out, partial = apply_kernel(job, C, start, row_args, shared, chunk_rows)
    return to_numpy(row_out), to_numpy(partial)


class LocalSession:
    """Strips of one cost run on a thread pool; partials merged in the fixed tree.

    ``strips`` are what the threads take (sized for scheduling); a generic kernel runs on
    each in chunks of ``chunk_rows`` rows (sized for its temporaries); :attr:`pieces` lists
    those chunks for code that walks C itself (the scaling path).
    """

    def __init__(self, cost: CostSource, strips: list[tuple[int, int]], threads: int,
                 chunk_rows: int | None = None) -> None:
        self.cost = cost
        self.strips = strips
        self.chunk_rows = chunk_rows
        self.threads = threads
        self.where = f"local, {threads} thread{'s' if threads > 1 else ''}"
        self.dashboard = ""
        self._pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None

    @property
    def pieces(self) -> list[tuple[int, int]]:
        """The strips cut into chunks of at most ``chunk_rows`` rows, in order."""
        return pieces(self.strips, self.chunk_rows)

    def run(self, job: StripJob) -> tuple[Any, Any]:
        """Run ``job`` on every strip; see :class:`~bigsink.executors.base.Session`."""
        def one(s: tuple[int, int]) -> tuple[Any, Any]:
            return run_strip(self.cost, s[0], s[1], job, self.chunk_rows)

        strips = self.strips
        outs = list(map(one, strips) if self._pool is None else self._pool.map(one, strips))
        return concat_rows([o[0] for o in outs]), tree_reduce([o[1] for o in outs], job.merge)

    def hold(self, factory: Callable[..., Any]) -> list[Held]:
        """One object over all rows, in this process (it reads C from the cost source, by
        :attr:`pieces`); see :class:`~bigsink.executors.base.Session`."""
        obj = factory(self.cost, self.pieces, threads=self.threads)
        return [Held(0, self.cost.shape[0], obj)]

    def hold_room(self) -> tuple[int, str]:
        """Bytes held objects may take in this process, and where: :func:`kernel_room`."""
        return kernel_room(self.cost)

    def call(
        self, held: list[Held], method: Callable[..., Any], args: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Call the held objects in turn (each runs in parallel itself); see
        :class:`~bigsink.executors.base.Session`."""
        return [method(h.obj, *a) for h, a in zip(held, args, strict=True)]

    def release(self, held: list[Held]) -> None:
        """Close the objects; see :class:`~bigsink.executors.base.Session`."""
        for h in held:
            h.obj.close()

    def close(self) -> None:
        """Shut the thread pool down."""
        if self._pool is not None:
            self._pool.shutdown()


def _device_view_bytes() -> int:
    """Bytes of C per view strip of a matrix resident on the current GPU."""
    from .._xp import import_cupy

    free, _total = import_cupy().cuda.Device().mem_info
    return int(min(DEVICE_VIEW_BYTES, free // 8))


class LocalExecutor:
    """Run strips on ``threads`` threads of this process (default: all cores).

    Args:
        threads: worker threads; 1 runs strips inline.
        strip_bytes: memory for one kernel call's temporaries: the rows per chunk of a
            generic kernel. Strips (what a thread takes) are about ``n / (threads *
            STRIPS_PER_THREAD)`` rows, at most STRIP_VIEW_BYTES of C in memory
            (STRIP_READ_BYTES of C read or computed per strip) and at least
            MIN_STRIP_ELEMENTS; fused kernels take them whole.
    """

    def __init__(self, threads: int | None = None, strip_bytes: int = STRIP_BYTES) -> None:
        self.threads = threads or os.cpu_count() or 1
        self.strip_bytes = strip_bytes

    def open(self, cost: CostSource, width: int) -> LocalSession:
        """Bind to ``cost``: strips aligned to its block rows, chunks sized for ``width``
        columns (a store's block rows are never cut, up to STORE_BLOCK_BYTES).

        CuPy strips (float32/float64) are large and run on one thread: the GPU is the
        parallelism, and reads overlap compute through the cost's prefetcher
        (:class:`~bigsink.costs.DeviceCost`), not through threads. A source with
        ``materialize()`` (a lazy array, :class:`~bigsink.costs.LazyCost`) is computed into
        memory once here, and the session runs on that.
        """
        materialize = getattr(cost, "materialize", None)
        if materialize is not None:
            cost = materialize()
        dtype = np.dtype(cost.dtype)
        if strip_module(cost) == "cupy" and dtype.name in ("float32", "float64"):
            budget = _device_view_bytes() if isinstance(cost, DenseCost) else DEVICE_STRIP_BYTES
            rows = budget // (cost.shape[1] * dtype.itemsize)
            return LocalSession(cost, cost.grid.row_strips(max(1, rows)), 1)
        n, m = cost.shape
        chunk = strip_rows(m, width, self.strip_bytes)                # generic temporaries
        spread = math.ceil(n / (self.threads * STRIPS_PER_THREAD))     # few strips to merge
        # a matrix in memory is cut into views, a cloud into its points (a strip costs
        # nothing to hold either way); a strip read or computed whole takes a fresh buffer
        lazy = isinstance(cost, DenseCost) or hasattr(cost, "strip")
        data = STRIP_VIEW_BYTES if lazy else STRIP_READ_BYTES
        rows = max(math.ceil(MIN_STRIP_ELEMENTS / m),
                   min(spread, max(1, data // (m * dtype.itemsize))))
        block = cost.grid.block_shape[0]
        if reads_store(cost) and block * m * dtype.itemsize <= STORE_BLOCK_BYTES:
            rows = max(rows, block)        # whole block rows: a cut chunk is read per piece
        strips = cost.grid.row_strips(rows, self.threads)
        return LocalSession(cost, strips, min(self.threads, len(strips)), chunk)
