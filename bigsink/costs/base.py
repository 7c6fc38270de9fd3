"""The cost-source protocol and its block grid: what every source of C shares.

A cost source is anything with a ``shape``, a ``dtype``, a block ``grid`` and two readers,
``block(i, j)`` and ``rows(start, stop)`` (a strip of whole rows). The solver and the
executors only ever ask a cost source for strips; nothing else about its storage leaks out.

Three members are optional, with defaults for a source that does not define them (a
user's own class): ``namespace`` (the top-level module of the arrays it produces, default
``"numpy"``; :func:`strip_module`), ``reads_store`` (whether it reads a Zarr store, default
False; :func:`reads_store`) and ``to_namespace(xp)`` (the same cost with strips made in
``xp``; :func:`bigsink.costs.on_device` wraps a source without it). Code asks these
members, never a source's type.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InputError

Array = Any

__all__ = [
    "BlockGrid", "ColumnStrip", "CostSource", "MappedCost", "block_min", "default_block_shape",
    "read_strip", "reads_store", "strip_module",
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


@dataclass(frozen=True)
class ColumnStrip:
    """Rows of C with only some of their columns read: ``data`` (r, c) holds columns
    ``cols`` (c,), in order (what ``rows_in`` of a store returns; the truncated kernels
    take it as it is, :func:`bigsink.kernels.blocks.columns`)."""

    data: np.ndarray
    cols: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(r, c)``: the columns held."""
        return int(self.data.shape[0]), int(self.data.shape[1])

    def __getitem__(self, rows: Any) -> ColumnStrip:
        """Rows ``rows`` (a slice) of the strip."""
        return ColumnStrip(self.data[rows], self.cols)

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        """NumPy's namespace (where inputs of the strip's jobs belong)."""
        return np


class Gridded:
    """The ``shape`` and ``grid`` members of a cost source that keeps its
    :class:`BlockGrid` as ``_grid`` (every source here)."""

    _grid: BlockGrid

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return self._grid.shape

    @property
    def grid(self) -> BlockGrid:
        """The block partition (a store's or a lazy array's chunks, or the chosen blocks)."""
        return self._grid


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


def strip_module(cost: CostSource) -> str:
    """Top-level module name of the arrays ``cost`` produces (``"numpy"``, ``"cupy"``, ...):
    its ``namespace`` member, ``"numpy"`` for a source without one. Reads no strip."""
    return str(getattr(cost, "namespace", "numpy"))


def read_strip(cost: CostSource, start: int, stop: int, blocks: Any = None) -> Array:
    """Rows ``[start, stop)`` of ``cost`` as its kernels take them: its ``strip`` member when
    it has one (a point cloud's :class:`~bigsink.costs.pointcloud.CloudStrip`: points, no
    matrix), else ``rows(start, stop)``. ``blocks`` ((nJ,) bool, or None: all) names the
    column blocks the kernel will use: a source with the optional ``rows_in(start, stop,
    blocks)`` member then reads only those (a store: only their chunks,
    :meth:`~bigsink.costs.ZarrCost.rows_in`)."""
    strip = getattr(cost, "strip", None)
    if strip is not None:
        return strip(start, stop)
    rows_in = getattr(cost, "rows_in", None)
    if blocks is not None and rows_in is not None and not blocks.all():
        return rows_in(start, stop, blocks)
    return cost.rows(start, stop)


def block_min(cost: CostSource) -> np.ndarray | None:
    """The least cost of each block of ``cost``'s grid (nI, nJ), or a lower bound of it,
    when the source knows it without a pass (its optional ``block_min`` member: a point
    cloud from its blocks' bounding boxes, a store written by ``write_cost`` from its
    attributes); None otherwise."""
    member = getattr(cost, "block_min", None)
    return None if member is None else member()


def reads_store(cost: CostSource) -> bool:
    """Whether ``cost`` reads its strips from a Zarr store (its ``reads_store`` member),
    possibly through a map: then a solve never holds the whole matrix in one process,
    and a strip should not cut a chunk (a partial read decodes the whole chunk)."""
    return bool(getattr(cost, "reads_store", False))


def default_block_shape(shape: tuple[int, int], itemsize: int = 8) -> tuple[int, int]:
    """Full-width block rows of about 16 MiB (at least 1 row)."""
    n, m = shape
    rows = max(1, min(n, (16 << 20) // max(1, m * itemsize)))
    return rows, m


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

    @property
    def namespace(self) -> str:
        """The source's array module (a map keeps its namespace)."""
        return strip_module(self.source)

    @property
    def reads_store(self) -> bool:
        """Whether the source reads a Zarr store."""
        return reads_store(self.source)


