"""Cost sources: where C comes from.

A cost source is anything with a ``shape``, a ``dtype``, a block ``grid`` and two readers,
``block(i, j)`` and ``rows(start, stop)`` (a strip of whole rows). The solver and the
executors only ever ask a cost source for strips; nothing else about its storage leaks out.
:class:`DenseCost` wraps an in-memory NumPy/CuPy array. Zarr stores and point clouds live in
their own modules and follow the same protocol.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import InputError

Array = Any

__all__ = [
    "BlockGrid", "CostSource", "DenseCost", "DeviceCost", "MappedCost", "as_cost", "on_device",
    "strip_module",
]


@dataclass(frozen=True)
class BlockGrid:
    """A regular partition of an (n, m) matrix into blocks of ``block_shape`` (last ones ragged)."""

    shape: tuple[int, int]
    block_shape: tuple[int, int]

    def __post_init__(self) -> None:
        if any(s < 1 for s in self.shape) or any(b < 1 for b in self.block_shape):
            raise InputError(
                f"block grid needs positive sizes; got shape {self.shape}, "
                f"block_shape {self.block_shape}"
            )

    @property
    def n_blocks(self) -> tuple[int, int]:
        """Number of block rows and block columns."""
        return (
            math.ceil(self.shape[0] / self.block_shape[0]),
            math.ceil(self.shape[1] / self.block_shape[1]),
        )

    def row_range(self, i: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of block row ``i``."""
        b = self.block_shape[0]
        return i * b, min((i + 1) * b, self.shape[0])

    def col_range(self, j: int) -> tuple[int, int]:
        """Columns ``[start, stop)`` of block column ``j``."""
        b = self.block_shape[1]
        return j * b, min((j + 1) * b, self.shape[1])

    def block_of(self, row: int, col: int) -> tuple[int, int]:
        """The block ``(i, j)`` holding element ``(row, col)``."""
        return row // self.block_shape[0], col // self.block_shape[1]

    def row_strips(self, max_rows: int, parallel: int = 1) -> list[tuple[int, int]]:
        """Row strips ``[start, stop)`` of at most ``max_rows`` rows aligned to block rows.

        Whole block rows are spread evenly (to within one block) over as few strips as fit,
        their number rounded up to a multiple of ``parallel`` (the strips that run at once)
        unless one strip holds them all: 96 blocks at most 23 to a strip make 5 strips of
        19 or 20 blocks, and for 2 threads 6 strips of 16. A block row taller than
        ``max_rows`` is cut into equal pieces (a strip never spans a block-row boundary it
        need not).
        """
        max_rows = max(1, int(max_rows))
        b = self.block_shape[0]
        if b <= max_rows:
            blocks, parallel = self.n_blocks[0], max(1, int(parallel))
            count = math.ceil(blocks / (max_rows // b))                 # strips at max_rows
            if count > 1:                                               # (one: too small)
                count = min(blocks, math.ceil(count / parallel) * parallel)
            edges = [k * blocks // count for k in range(count + 1)]     # in blocks
            return [(e0 * b, min(e1 * b, self.shape[0])) for e0, e1 in itertools.pairwise(edges)]
        strips: list[tuple[int, int]] = []
        for i in range(self.n_blocks[0]):
            lo, hi = self.row_range(i)
            pieces = math.ceil((hi - lo) / max_rows)
            step = math.ceil((hi - lo) / pieces)
            strips.extend((s, min(s + step, hi)) for s in range(lo, hi, step))
        return strips


@runtime_checkable
class CostSource(Protocol):
    """What the solver needs of a cost matrix C (n, m)."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        ...

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type of the blocks (float32 or float64)."""
        ...

    @property
    def grid(self) -> BlockGrid:
        """The block partition (a store's chunks, or the user's choice)."""
        ...

    def block(self, i: int, j: int) -> Array:
        """Block ``(i, j)`` of the grid."""
        ...

    def rows(self, start: int, stop: int) -> Array:
        """Strip ``C[start:stop, :]``, shape (stop - start, m)."""
        ...


def default_block_shape(shape: tuple[int, int], itemsize: int = 8) -> tuple[int, int]:
    """Full-width block rows of about 16 MiB (at least 1 row)."""
    n, m = shape
    rows = max(1, min(n, (16 << 20) // max(1, m * itemsize)))
    return rows, m


class DenseCost:
    """An in-memory cost matrix (NumPy, CuPy, or any array-API array), cut into blocks.

    Args:
        C: the (n, m) cost array. It is not copied.
        block_shape: block partition; default full-width block rows of about 16 MiB.
    """

    def __init__(self, C: Array, block_shape: tuple[int, int] | None = None) -> None:
        ndim = getattr(C, "ndim", None)
        if ndim is None:
            C = np.asarray(C)
            ndim = C.ndim
        if ndim != 2:
            raise InputError(
                f"cost: expected a 2-D (n, m) matrix, got an array of shape {tuple(C.shape)}. "
                "Pass C with one row per source point and one column per target point."
            )
        if C.shape[0] == 0 or C.shape[1] == 0:
            raise InputError(f"cost: the matrix is empty (shape {tuple(C.shape)}).")
        if not np.issubdtype(np.dtype(str(C.dtype).split(".")[-1]), np.floating):
            C = C.astype("float64") if hasattr(C, "astype") else np.asarray(C, float)
        self._C = C
        shape = (int(C.shape[0]), int(C.shape[1]))
        bs = block_shape or default_block_shape(shape, np.dtype(self.dtype).itemsize)
        self._grid = BlockGrid(shape, (min(bs[0], shape[0]), min(bs[1], shape[1])))

    @property
    def array(self) -> Array:
        """The wrapped array."""
        return self._C

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return self._grid.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type."""
        return np.dtype(str(self._C.dtype).split(".")[-1])

    @property
    def grid(self) -> BlockGrid:
        """The block partition."""
        return self._grid

    def block(self, i: int, j: int) -> Array:
        """Block ``(i, j)`` (a view)."""
        r0, r1 = self._grid.row_range(i)
        c0, c1 = self._grid.col_range(j)
        return self._C[r0:r1, c0:c1]

    def rows(self, start: int, stop: int) -> Array:
        """Rows ``[start, stop)`` (a view)."""
        return self._C[start:stop, :]

    def __repr__(self) -> str:
        return (f"DenseCost(shape={self.shape}, dtype={self.dtype}, "
                f"block_shape={self.grid.block_shape})")


def as_cost(cost: Any) -> CostSource:
    """Turn what the user passed as ``cost`` into a cost source.

    Accepts a cost source, an (n, m) array, or a path/URL string to a Zarr array.
    """
    if isinstance(cost, CostSource):
        return cost
    if isinstance(cost, str | bytes) or hasattr(cost, "__fspath__"):
        from .zarr_cost import ZarrCost

        return ZarrCost(cost)
    return DenseCost(cost)


class MappedCost:
    """Base of cost sources that apply one array map to every block and strip of ``source``.

    Subclasses set :meth:`apply`; shape, dtype and grid are the source's.
    """

    def __init__(self, source: CostSource) -> None:
        self.source = source

    def apply(self, x: Array) -> Array:
        """The map applied to each block and strip read from ``source``."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return self.source.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type."""
        return self.source.dtype

    @property
    def grid(self) -> BlockGrid:
        """The source's block partition."""
        return self.source.grid

    def block(self, i: int, j: int) -> Array:
        """Block ``(i, j)`` of the source, mapped."""
        return self.apply(self.source.block(i, j))

    def rows(self, start: int, stop: int) -> Array:
        """Rows ``[start, stop)`` of the source, mapped."""
        return self.apply(self.source.rows(start, stop))


class DeviceCost(MappedCost):
    """A cost source whose strips are moved into another array namespace (e.g. CuPy).

    Each strip is read from ``source`` and copied to the device once per use; the kernels
    then run there. Used by ``solve(..., device="gpu")`` for stored and streamed costs.
    With ``prefetch`` (default), strips come from a :class:`~bigsink.prefetch.StripPrefetcher`:
    the next strip is read (and, for CuPy, copied to the GPU through a pinned buffer on its
    own stream, :class:`~bigsink.prefetch.PinnedCopier`) on a background thread while the
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
        """The :class:`~bigsink.prefetch.StripPrefetcher` serving :meth:`rows` (made on first
        use, so each process that unpickles this cost gets its own thread)."""
        if self._prefetcher is None:
            from .prefetch import PinnedCopier, StripPrefetcher

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

    def __repr__(self) -> str:
        return f"DeviceCost({self.source!r}, xp={self.xp.__name__})"


def strip_module(cost: CostSource) -> str:
    """Top-level module name of the arrays ``cost`` produces (``"numpy"``, ``"cupy"``, ...),
    found without reading any strip (and without importing CuPy)."""
    from .pointcloud import PointCloudCost

    if isinstance(cost, DeviceCost):
        return str(getattr(cost.xp, "__name__", "")).split(".")[0]
    if isinstance(cost, MappedCost):
        return strip_module(cost.source)
    if isinstance(cost, DenseCost):
        return type(cost.array).__module__.split(".")[0]
    if isinstance(cost, PointCloudCost):
        return type(cost.x).__module__.split(".")[0]
    return "numpy"


def on_device(cost: CostSource, xp: Any) -> CostSource:
    """``cost`` with its strips produced in namespace ``xp``.

    An in-memory matrix is moved once (a :class:`DenseCost` over an ``xp`` array); a point
    cloud moves its coordinates, so blocks are computed on the device; any other source is
    wrapped in a :class:`DeviceCost`, which moves each strip when it is read.
    """
    from .pointcloud import PointCloudCost

    if isinstance(cost, DenseCost):
        return DenseCost(xp.asarray(cost.array), cost.grid.block_shape)
    if isinstance(cost, PointCloudCost):
        return cost.with_points(xp.asarray(cost.x), xp.asarray(cost.y))
    if isinstance(cost, DeviceCost):
        return on_device(cost.source, xp)
    return DeviceCost(cost, xp)
