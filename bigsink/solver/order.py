"""The solve's own order of rows and columns: a point cloud solved in spatial order, every
result handed back in the user's.

Certified block truncation skips blocks of the cost's grid, so it pays only where a block
is a compact region of space. :func:`spatial_layout` reorders a point cloud once
(:meth:`~bigsink.costs.PointCloudCost.reordered`, a k-d order with square blocks) and
returns the :class:`Order` that maps the marginals and warm-start potentials in, and the
potentials, marginal sums and history out: users never see permuted potentials.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..costs import CostSource
from ..errors import InputError
from ..problem import Problem
from .config import AUTO_TRUNCATE_ELEMENTS, CLOUD_BLOCK, SinkhornConfig
from .loop import SolverState
from .multiscale import runs
from .steps import Evaluation

__all__ = ["Order", "spatial_layout"]


@dataclass(frozen=True)
class Order:
    """Row ``k`` of the solve is the user's row ``rows[k]``; likewise ``cols``. ``nested``:
    every run of ``FANOUT**k`` points is compact too (the multiscale clusters,
    :mod:`bigsink.solver.multiscale`)."""

    rows: np.ndarray
    cols: np.ndarray
    nested: bool = False

    def problem(self, problem: Problem) -> Problem:
        """The problem with its marginals in the solve's order."""
        return dataclasses.replace(problem, a=problem.a[self.rows], b=problem.b[self.cols])

    def potentials(self, f: np.ndarray | None, g: np.ndarray | None
                   ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Warm-start potentials (either may be None) in the solve's order."""
        return (None if f is None else f[self.rows], None if g is None else g[self.cols])

    def back(self, state: SolverState, ev: Evaluation) -> tuple[SolverState, Evaluation]:
        """The final state and its evaluation in the user's order."""
        def undo(x: np.ndarray, order: np.ndarray) -> np.ndarray:
            out = np.empty_like(x)
            out[order] = x
            return out

        assert state.f is not None
        state = dataclasses.replace(state, f=undo(state.f, self.rows),
                                    g=undo(state.g, self.cols))
        ev = dataclasses.replace(ev, rows=undo(ev.rows, self.rows),
                                 cols=undo(ev.cols, self.cols))
        return state, ev


def spatial_layout(src: CostSource, config: SinkhornConfig
                   ) -> tuple[CostSource, Order | None]:
    """``src`` in spatial order with square blocks when it is a point cloud that may be
    truncated or solved multiscale (``truncate=True`` or ``multiscale=True``, or both auto
    and at least ``AUTO_TRUNCATE_ELEMENTS`` entries), and the :class:`Order` back; else
    ``(src, None)``. A cloud whose grid already has several column blocks keeps its block
    shape. Unless ``multiscale=False``, the runs of the multiscale clusters are kept
    compact where they nest with the blocks."""
    reordered: Any = getattr(src, "reordered", None)
    n, m = src.shape
    if config.multiscale and reordered is None:
        raise InputError(f"multiscale=True needs a point-cloud cost (PointCloudCost); got "
                         f"{type(src).__name__}. Pass the points, or multiscale=None.")
    auto = config.truncate is None and n * m >= AUTO_TRUNCATE_ELEMENTS
    if reordered is None or not (config.truncate or config.multiscale or auto):
        return src, None
    shape = src.grid.block_shape
    if src.grid.n_blocks[1] < 2:
        shape = (min(CLOUD_BLOCK, n), min(CLOUD_BLOCK, m))
    sides: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    if config.multiscale is not False:
        sides = (runs(shape[0], n), runs(shape[1], m))
    cost, rows, cols = reordered(shape, sides)
    return cost, Order(rows, cols, nested=bool(sides[0]) and bool(sides[1]))
