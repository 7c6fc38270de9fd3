"""The executor contract shared by the local and Dask executors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..costs import CostSource

__all__ = ["Executor", "Session", "StripJob", "strip_rows"]

#: Default memory for one strip's temporaries (the (r, m, K) float64 arrays of a kernel).
STRIP_BYTES = 48 << 20


@dataclass(frozen=True)
class StripJob:
    """One pass over C: ``kernel`` on every strip, row outputs concatenated, partials merged.

    ``kernel(C_strip, start, *row_args[start:stop], *shared) -> (row_out | None, partial)``;
    ``merge(p, q) -> partial``. ``row_args`` are (n, ...) arrays sliced per strip;
    ``shared`` values go to every strip unchanged (an executor sends each once per job).
    Kernels and merges must be module-level functions so they pickle.
    """

    kernel: Callable[..., tuple[Any, Any]]
    merge: Callable[[Any, Any], Any]
    row_args: tuple[Any, ...] = ()
    shared: tuple[Any, ...] = field(default=())


@runtime_checkable
class Session(Protocol):
    """An executor bound to one cost source and strip layout for the length of a solve."""

    def run(self, job: StripJob) -> tuple[Any, Any]:
        """Run ``job`` over all strips: ``(row outputs (n, ...) or None, merged partial)``."""
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
