"""Per-block kernels of certified block truncation: block statistics, and the Sinkhorn
pass over the active blocks only.

The blocks are the cost's grid (``block_shape``); a strip may span several block rows, and
each block row ``I`` of it has its own active column blocks ``active[I]``. Both kernels are
strip kernels (see :mod:`bigsink.kernels.reference`) and run on any executor.

* :func:`block_stats_strip`: per block ``(I, J)``, the least cost ``Cmin_IJ`` and
  ``Z_IJ = max over the block of (f_i + g_j - C_ij)`` for the given potentials (the
  reference the truncation bounds drift from: :class:`bigsink.solver.steps.TruncatedStep`);
* :func:`truncated_sinkhorn_strip`: the fused Sinkhorn pass
  (:func:`bigsink.kernels.sinkhorn_strip`) on each block row's active columns gathered
  into one compact strip (a point cloud's: the active target points, costs still computed
  in registers), its column partials scattered back; inactive columns get the empty pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from .._xp import to_numpy
from ..costs.pointcloud import CloudStrip
from . import merge_pairs, sinkhorn_strip  # the dispatcher
from .cloud import as_matrix

__all__ = ["block_stats_strip", "columns", "merge_blocks", "truncated_sinkhorn_strip"]


def _segments(start: int, r: int, block_rows: int) -> Iterator[tuple[int, int, int]]:
    """``(I, a, b)``: the rows ``[a, b)`` of a strip (rows ``start...start + r``) that lie in
    block row ``I``."""
    a = 0
    while a < r:
        I = (start + a) // block_rows
        b = min(r, (I + 1) * block_rows - start)
        yield I, a, b
        a = b


def active_columns(active_row: np.ndarray, block_cols: int, m: int) -> np.ndarray:
    """The column indices of the active column blocks ``active_row`` (nJ,) bool."""
    return np.concatenate([np.arange(int(J) * block_cols, min(m, (int(J) + 1) * block_cols))
                           for J in np.flatnonzero(active_row)])


def columns(C: Any, cols: np.ndarray) -> Any:
    """The strip's columns ``cols`` as a compact strip: a cloud strip with those target
    points (no costs formed), or the array's columns (a copy)."""
    if isinstance(C, CloudStrip):
        return replace(C, y=C.y[cols])
    return np.ascontiguousarray(np.asarray(to_numpy(C))[:, cols])


def block_stats_strip(
    C: Any, start: int, f: np.ndarray, g: np.ndarray, block_shape: tuple[int, int],
) -> tuple[None, tuple[tuple[int, np.ndarray, np.ndarray], ...]]:
    """Per block row ``I`` of the strip: ``(I, Cmin (nJ,), Z (nJ, K))``, ``Z_IJk = max over
    the block of (f_ik + g_jk - C_ij)`` (-inf where a side's weights are all 0). Partials
    are tuples of those, merged by :func:`merge_blocks`."""
    rb, cb = block_shape
    m, K = g.shape
    edges = list(range(0, m, cb))
    out = []
    for I, a, b in _segments(start, C.shape[0], rb):
        Cs = np.asarray(to_numpy(as_matrix(C[a:b])), dtype=np.float64)  # (q, m)
        cmin = np.minimum.reduceat(Cs.min(axis=0), edges)                 # (nJ,)
        z = np.empty((len(edges), K))
        for k in range(K):
            with np.errstate(invalid="ignore"):                          # -inf + -inf
                S = f[a:b, k, None] + g[None, :, k] - Cs                  # (q, m)
            S = np.where(np.isnan(S), -np.inf, S)
            z[:, k] = np.maximum.reduceat(S.max(axis=0), edges)
        out.append((I, cmin, z))
    return None, tuple(out)


def merge_blocks(p: tuple[Any, ...], q: tuple[Any, ...]) -> tuple[Any, ...]:
    """Merge of :func:`block_stats_strip` partials, by block row: a block row split between
    strips or chunks takes the least ``Cmin`` and the largest ``Z`` of its pieces."""
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for I, cmin, z in (*p, *q):
        if I in rows:
            cmin, z = np.minimum(rows[I][0], cmin), np.maximum(rows[I][1], z)
        rows[I] = (cmin, z)
    return tuple((I, *rows[I]) for I in sorted(rows))


def truncated_sinkhorn_strip(
    C: Any, start: int, log_a: np.ndarray, f_prev: np.ndarray, g: np.ndarray, eps: float,
    tau: float, omega: float, active: np.ndarray, block_shape: tuple[int, int],
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:func:`bigsink.kernels.sinkhorn_strip` over the active blocks only: ``active``
    (nI, nJ) bool, by block row. Each block row's active columns are gathered and run
    through the fused pass; its column pairs are merged into full-length ones
    ((m, K), ``(-inf, 0)`` where nothing is active)."""
    rb, cb = block_shape
    m, K = g.shape
    f_new = np.empty((C.shape[0], K))
    col_m, col_s = np.full((m, K), -np.inf), np.zeros((m, K))
    for I, a, b in _segments(start, C.shape[0], rb):
        cols = active_columns(active[I], cb, m)
        f_seg, (cm, cs) = sinkhorn_strip(columns(C[a:b], cols), start + a, log_a[a:b],
                                         f_prev[a:b], g[cols], eps, tau, omega)
        f_new[a:b] = to_numpy(f_seg)
        merged = merge_pairs((col_m[cols], col_s[cols]), (to_numpy(cm), to_numpy(cs)))
        col_m[cols], col_s[cols] = merged
    return f_new, (col_m, col_s)
