"""An in-memory cost matrix (NumPy, CuPy or any array-API array), cut into blocks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .base import BlockGrid, Gridded, default_block_shape

Array = Any

__all__ = ["DenseCost"]


class DenseCost(Gridded):
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
            pot = (" bigsink.solve takes (C, a, b); for POT's order (a, b, M, reg) use "
                   "bigsink.ot.sinkhorn(a, b, M, reg)." if ndim == 1 else "")
            raise InputError(
                f"cost: expected a 2-D (n, m) matrix, got an array of shape {tuple(C.shape)}. "
                "Pass C with one row per source point and one column per target point." + pot
            )
        if C.shape[0] == 0 or C.shape[1] == 0:
            raise InputError(f"cost: the matrix is empty (shape {tuple(C.shape)}).")
        kind = np.dtype(str(C.dtype).split(".")[-1])
        if np.issubdtype(kind, np.complexfloating):
            raise InputError(
                f"cost: the matrix is complex ({kind}); a transport cost is real. Pass "
                "C.real (or abs(C)) explicitly if that is the cost you mean.")
        if not np.issubdtype(kind, np.floating):
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
    def dtype(self) -> np.dtype[Any]:
        """Element type."""
        return np.dtype(str(self._C.dtype).split(".")[-1])

    def block(self, i: int, j: int) -> Array:
        """Block ``(i, j)`` (a view)."""
        r0, r1 = self._grid.row_range(i)
        c0, c1 = self._grid.col_range(j)
        return self._C[r0:r1, c0:c1]

    def rows(self, start: int, stop: int) -> Array:
        """Rows ``[start, stop)`` (a view)."""
        return self._C[start:stop, :]

    @property
    def namespace(self) -> str:
        """The wrapped array's module (``"numpy"``, ``"cupy"``, ...)."""
        return type(self._C).__module__.split(".")[0]

    def to_namespace(self, xp: Any) -> DenseCost:
        """The matrix moved to namespace ``xp`` once (same blocks)."""
        return DenseCost(xp.asarray(self._C), self.grid.block_shape)

    def __repr__(self) -> str:
        return (f"DenseCost(shape={self.shape}, dtype={self.dtype}, "
                f"block_shape={self.grid.block_shape})")
