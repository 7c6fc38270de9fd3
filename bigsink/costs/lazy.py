"""A lazy array (``dask.array``, or an xarray DataArray over one) as a cost source.

It is never recomputed per pass. Where it runs is the executor's choice, through the one
optional member ``materialize()``:

* **in process** (the local executor), it is computed once into memory
  (:meth:`LazyCost.materialize`; refused with advice when it would take more than
  :data:`~bigsink.costs.inputs.LAZY_SHARE` of this machine's memory);
* **on Dask**, it is a source like a Zarr store: each worker computes its strips from the
  array's graph, once (resident: kept next to their tasks) or on each pass (streaming, when C
  does not fit the workers' memory: a strip's chunks, as a store's are read). The coordinator
  never holds C.

Strips are computed with the synchronous scheduler where they are asked for (inside a Dask
task, or this process): the graph travels, not the data. Duck-typed: nothing is imported
from Dask here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..scratch import physical_memory
from .base import BlockGrid, Gridded
from .dense import DenseCost

__all__ = ["LAZY_SHARE", "LazyCost"]

#: A lazy cost is computed into one process's memory only when it takes at most this share
#: of it; a larger one is an InputError that says how to stream it instead.
LAZY_SHARE = 0.25


class LazyCost(Gridded):
    """A lazy 2-D array with ``__dask_graph__`` and ``compute`` as a cost source (see the
    module docstring).

    Args:
        array: the (n, m) lazy array (real floating or integer entries).
    """

    #: Strips are computed from the graph where they are needed: a solve on Dask never
    #: holds C whole in one process, and a strip should not cut a chunk.
    reads_store = True

    def __init__(self, array: Any) -> None:
        if getattr(array, "ndim", None) != 2 or 0 in array.shape:
            raise InputError(f"cost: expected a non-empty 2-D (n, m) lazy array, got shape "
                             f"{getattr(array, 'shape', None)}.")
        kind = np.dtype(array.dtype)
        if not (np.issubdtype(kind, np.floating) or np.issubdtype(kind, np.integer)):
            raise InputError(f"cost: a lazy array of {kind} entries; a cost is real numbers.")
        self._array = array
        self._dtype = kind if np.issubdtype(kind, np.floating) else np.dtype(np.float64)
        chunks = getattr(array, "chunksize", None) or array.shape
        n, m = (int(s) for s in array.shape)
        self._grid = BlockGrid((n, m), (min(int(chunks[0]), n), min(int(chunks[1]), m)))

    @property
    def array(self) -> Any:
        """The wrapped lazy array."""
        return self._array

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type of the strips (integer arrays give float64)."""
        return self._dtype

    def _compute(self, part: Any) -> np.ndarray:
        """``part`` of the array computed here, by the synchronous scheduler."""
        return np.asarray(part.compute(scheduler="sync"), dtype=self._dtype)

    def block(self, i: int, j: int) -> np.ndarray:
        """Block ``(i, j)``, computed."""
        r0, r1 = self._grid.row_range(i)
        c0, c1 = self._grid.col_range(j)
        return self._compute(self._array[r0:r1, c0:c1])

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``, computed."""
        return self._compute(self._array[start:stop, :])

    def materialize(self) -> DenseCost:
        """The whole array computed once into memory, in its own chunks as blocks; an
        InputError when it would take more than :data:`LAZY_SHARE` of memory."""
        n, m = self.shape
        nbytes = n * m * self._dtype.itemsize
        if nbytes > LAZY_SHARE * physical_memory():
            raise InputError(
                f"cost: a lazy (dask) array of {nbytes / 2**30:.1f} GiB is more than a quarter "
                "of this machine's memory; solve it on a Dask cluster (client=...), where "
                "workers compute its strips, or write it to a Zarr store (cost.to_zarr(path)) "
                "and pass the path: stores are streamed.")
        return DenseCost(self._compute(self._array), block_shape=self._grid.block_shape)

    def to_namespace(self, xp: Any) -> DenseCost:
        """Computed once (:meth:`materialize`) and moved to namespace ``xp`` once."""
        return self.materialize().to_namespace(xp)

    def __repr__(self) -> str:
        return f"LazyCost(shape={self.shape}, dtype={self.dtype}, chunks={self.grid.block_shape})"
