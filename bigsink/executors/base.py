"""The executor contract shared by the local and Dask executors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .._xp import array_namespace
from ..costs import CostSource
from ..kernels import runs_whole, tree_reduce

__all__ = [
    "Executor", "Held", "HeldLost", "Session", "StripJob", "apply_kernel", "concat_rows",
    "pieces", "strip_rows",
]

#: Default memory for one strip's temporaries (the (r, m, K) float64 arrays of a kernel).
STRIP_BYTES = 48 << 20


@dataclass(frozen=True)
class StripJob:
    """One pass over C: ``kernel`` on every strip, row outputs concatenated, partials merged.

    ``kernel(C_strip, start, *row_args[start:stop], *shared) -> (row_out | None, partial)``;
    ``merge(p, q) -> partial``. ``row_args`` are (n, ...) arrays sliced per strip;
    ``shared`` values go to every strip unchanged (an executor sends each once per job).
    Kernels and merges must be module-level functions so they pickle. ``blocks``
    ((nI, nJ) bool on the cost's grid, or None: all) are the blocks the kernel reads: a
    strip read from a store then reads only the chunks of its block rows' blocks
    (:func:`strip_blocks`).
    """

    kernel: Callable[..., tuple[Any, Any]]
    merge: Callable[[Any, Any], Any]
    row_args: tuple[Any, ...] = ()
    shared: tuple[Any, ...] = field(default=())
    blocks: Any = None

    def strip_blocks(self, block_rows: int, start: int, stop: int) -> Any:
        """The column blocks (nJ,) bool that rows ``[start, stop)`` need (block rows of
        ``block_rows`` rows), or None for all."""
        if self.blocks is None:
            return None
        return self.blocks[start // block_rows:(stop - 1) // block_rows + 1].any(axis=0)


@dataclass(frozen=True)
class Held:
    """An object a session keeps next to rows ``[lo, hi)`` of C across jobs (the scaling
    path's kernels): ``obj`` itself in this process, a handle to it on a cluster; ``keep``
    is whatever keeps it alive there."""

    lo: int
    hi: int
    obj: Any
    keep: Any = None


class HeldLost(RuntimeError):
    """A held object is gone with the process that kept it (a worker died); the data it
    was made from is not (the caller may rebuild it, or continue without it)."""


@runtime_checkable
class Session(Protocol):
    """An executor bound to one cost source and strip layout for the length of a solve."""

    cost: CostSource
    #: Where the strips run, for the result's summary: ``"local, 2 threads"``, or the
    #: scheduler, its workers and its dashboard.
    where: str
    #: The Dask dashboard's address, or "" (no cluster, or no dashboard).
    dashboard: str

    def run(self, job: StripJob) -> tuple[Any, Any]:
        """Run ``job`` over all strips: ``(row outputs (n, ...) or None, merged partial)``."""
        ...

    def hold(self, factory: Callable[..., Any]) -> list[Held]:
        """Objects ``factory(source, pieces, threads=...)`` kept next to C's rows, one per
        group of rows in row order: ``source`` gives the group's rows (a cost source, or
        the arrays of ``pieces`` themselves), ``pieces`` are its ``(start, stop)`` ranges,
        ``threads`` the cores it may use. Raises HeldLost if a group's process is lost."""
        ...

    def hold_room(self) -> tuple[int, str]:
        """Bytes that held objects may take, and where they would be (for messages)."""
        ...

    def call(
        self, held: list[Held], method: Callable[..., Any], args: list[tuple[Any, ...]]
    ) -> list[Any]:
        """``method(held[k].obj, *args[k])`` for every k, run where each object is, and
        their results in order; ``method`` is a method of the held objects' class (e.g.
        ``KernelRows.sweep``), never a name. Raises HeldLost if an object is gone."""
        ...

    def release(self, held: list[Held]) -> None:
        """Let the held objects go now: each one's ``close()`` frees its memory where it
        is, whenever the handles themselves are collected."""
        ...

    def close(self) -> None:
        """Release what the session holds (threads, resident blocks)."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Something that opens sessions over cost sources."""

    def open(self, cost: CostSource, width: int) -> Session:
        """Bind to ``cost`` for jobs whose kernels broadcast C against ``width`` columns."""
        ...


def strip_rows(m: int, width: int, strip_bytes: int = STRIP_BYTES) -> int:
    """Rows per strip so that about three (r, m, width) float64 temporaries fit ``strip_bytes``."""
    return max(1, strip_bytes // (3 * 8 * m * max(1, width)))


def concat_rows(parts: list[Any]) -> Any:
    """Row outputs of consecutive strips in order, concatenated (None when the kernel has
    none)."""
    if parts[0] is None:
        return None
    if len(parts) == 1:
        return parts[0]
    xp = array_namespace(parts[0])
    return xp.concat(parts, axis=0)


def apply_kernel(
    job: StripJob, C: Any, start: int, row_args: list[Any], shared: list[Any],
    chunk_rows: int | None = None,
) -> tuple[Any, Any]:
    """``job.kernel`` on the strip ``C`` (rows ``start...``) with its ``row_args`` slices,
    in chunks of ``chunk_rows`` rows (all at once when None): row outputs concatenated,
    partials merged in the fixed tree of :func:`~bigsink.kernels.tree_reduce`.

    Chunks bound the kernel's temporaries (a generic kernel makes (r, m, K) arrays)
    independently of the strip, which an executor sizes for scheduling. A fused kernel
    (:func:`bigsink.kernels.runs_whole`) needs O(r + m) and takes the strip whole.
    """
    r = C.shape[0]
    if chunk_rows is None or chunk_rows >= r or runs_whole(job.kernel, C):
        return job.kernel(C, start, *row_args, *shared)
    outs = [
        job.kernel(C[c0:c1, ...], start + c0, *(x[c0:c1, ...] for x in row_args), *shared)
        for c0, c1 in pieces([(0, r)], chunk_rows)
    ]
    return concat_rows([o[0] for o in outs]), tree_reduce([o[1] for o in outs], job.merge)


def pieces(strips: list[tuple[int, int]], chunk_rows: int | None) -> list[tuple[int, int]]:
    """The row ranges a generic kernel runs on: ``strips`` cut into chunks of at most
    ``chunk_rows`` rows (:func:`apply_kernel`), in order."""
    if chunk_rows is None:
        return list(strips)
    step = max(1, chunk_rows)
    return [(a, min(s1, a + step)) for s0, s1 in strips for a in range(s0, s1, step)]
