"""Per-block kernels of certified block truncation: the Sinkhorn pass and the evaluation
over the active blocks only, each also reporting what the bounds need.

The blocks are the cost's grid (``block_shape``); a strip may span several block rows, or
a part of one, and each block row ``I`` of it has its own active column blocks
``active[I]`` ((nI, nJ) bool). Both kernels are strip kernels (see
:mod:`bigsink.kernels.reference`) and run on any executor: each block row's active columns
are gathered into one compact strip (a point cloud's: the active target points, costs still
computed in registers; a strip whose row is all active is used as it is) and run through
the fused kernel of the dispatcher, and the column partials are scattered back.

* :func:`truncated_sinkhorn_strip`: :func:`bigsink.kernels.sinkhorn_strip` over the active
  blocks, and, at no extra reading, each active block's **log mass**
  ``log M_IJ = log sum_{i in I, j in J} exp((f_new_i + g_j - C_ij) / eps)`` under the pass's
  own potentials (``f_new`` out, ``g`` in): from the block row's column partials,
  ``log M_IJ = LSE_{j in J} (g_j / eps + LSE_{i in I} (f_new_i - C_ij) / eps)``. Partials are
  ``(column pair, records)``, merged by :func:`merge_truncated` (a block row cut across
  strips or chunks adds its pieces' masses);
* :func:`truncated_evaluate_strip`: :func:`bigsink.kernels.evaluate_strip` over the active
  blocks (the plan's sums and ``<P, C>`` without the skipped blocks).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from .._xp import to_numpy
from ..costs.base import ColumnStrip
from ..costs.pointcloud import CloudStrip
from . import evaluate_strip, merge_pairs, pair_to_lse, sinkhorn_strip  # the dispatcher

__all__ = [
    "Records", "active_columns", "block_log_mass", "columns", "merge_records",
    "merge_truncated", "segments", "truncated_evaluate_strip", "truncated_sinkhorn_strip",
]

#: Per block row ``I`` of a pass: ``(I, log M (nJ_active, K))`` over its active blocks in
#: column order, sorted by ``I``.
Records = tuple[tuple[int, np.ndarray], ...]


def segments(start: int, r: int, block_rows: int) -> Iterator[tuple[int, int, int]]:
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
    J = np.flatnonzero(active_row)
    if J.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([np.arange(int(j) * block_cols, min(m, (int(j) + 1) * block_cols))
                           for j in J])


def columns(C: Any, cols: np.ndarray | None) -> Any:
    """The strip's columns ``cols`` as a compact strip (``C`` itself for None: all): a
    cloud strip with those target points (no costs formed), a store's
    :class:`~bigsink.costs.ColumnStrip` as it was read (when it holds just those), or the
    array's columns (a copy)."""
    if cols is None:
        return C
    if isinstance(C, CloudStrip):
        return replace(C, y=C.y[cols])
    if isinstance(C, ColumnStrip):
        if np.array_equal(C.cols, cols):
            return C.data
        return np.ascontiguousarray(C.data[:, np.searchsorted(C.cols, cols)])
    return np.ascontiguousarray(np.asarray(to_numpy(C))[:, cols])


def block_log_mass(z: np.ndarray, active_row: np.ndarray, block_cols: int,
                   m: int) -> np.ndarray:
    """``LSE`` of ``z`` ((c, K), the active columns of one block row in order) over each
    active block: (nJ_active, K)."""
    J = np.flatnonzero(active_row)
    if J.size == 0:
        return np.zeros((0, z.shape[1]))
    starts = np.cumsum([0] + [min(m, (int(j) + 1) * block_cols) - int(j) * block_cols
                              for j in J[:-1]])                       # block starts in z
    top = np.maximum.reduceat(z, starts, axis=0)                      # (nJa, K)
    shift = np.where(np.isfinite(top), top, 0.0)
    sizes = np.diff(np.append(starts, z.shape[0]))
    with np.errstate(divide="ignore"):
        return shift + np.log(np.add.reduceat(np.exp(z - np.repeat(shift, sizes, axis=0)),
                                              starts, axis=0))


def _row_blocks(active: np.ndarray, I: int, cb: int, m: int
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Block row ``I``'s active columns, and the gather for :func:`columns` (None when the
    whole row is active)."""
    if active[I].all():
        return np.arange(m), None
    cols = active_columns(active[I], cb, m)
    return cols, cols


def truncated_sinkhorn_strip(
    C: Any, start: int, log_a: np.ndarray, f_prev: np.ndarray, g: np.ndarray, eps: float,
    tau: float, omega: float, active: np.ndarray, block_shape: tuple[int, int],
) -> tuple[np.ndarray, tuple[tuple[np.ndarray, np.ndarray], Records]]:
    """:func:`bigsink.kernels.sinkhorn_strip` over the active blocks only (``active``
    (nI, nJ) bool): ``f_new`` (r, K) and the partial ``(column pair ((m, K), (-inf, 0)
    where nothing is active), records)``; see the module docstring for the records."""
    rb, cb = block_shape
    m, K = g.shape
    f_new = np.empty((C.shape[0], K))
    col_m, col_s = np.full((m, K), -np.inf), np.zeros((m, K))
    records = []
    for I, a, b in segments(start, C.shape[0], rb):
        cols, gather = _row_blocks(active, I, cb, m)
        g_cols = g if gather is None else g[gather]                      # (c, K)
        f_seg, (cm, cs) = sinkhorn_strip(columns(C[a:b], gather), start + a, log_a[a:b],
                                         f_prev[a:b], g_cols, eps, tau, omega)
        f_new[a:b] = to_numpy(f_seg)
        pair = (to_numpy(cm), to_numpy(cs))
        with np.errstate(invalid="ignore", divide="ignore"):              # -inf + -inf
            z = g_cols / eps + pair_to_lse(pair)                          # (c, K)
        records.append((I, block_log_mass(np.where(np.isnan(z), -np.inf, z), active[I],
                                          cb, m)))
        merged = merge_pairs((col_m[cols], col_s[cols]), pair)
        col_m[cols], col_s[cols] = merged
    return f_new, ((col_m, col_s), merge_records(tuple(records), ()))


def merge_records(p: Records, q: Records) -> Records:
    """Merge of two pieces' records by block row: a block row cut between strips or chunks
    adds its pieces' masses (``logaddexp``)."""
    rows: dict[int, np.ndarray] = {}
    for I, log_m in (*p, *q):
        rows[I] = np.logaddexp(rows[I], log_m) if I in rows else log_m
    return tuple((I, rows[I]) for I in sorted(rows))


def merge_truncated(p: tuple[Any, Records], q: tuple[Any, Records]) -> tuple[Any, Records]:
    """Merge of :func:`truncated_sinkhorn_strip` partials: column pairs and records."""
    return merge_pairs(p[0], q[0]), merge_records(p[1], q[1])


def truncated_evaluate_strip(
    C: Any, start: int, f: np.ndarray, g: np.ndarray, eps: float, active: np.ndarray,
    block_shape: tuple[int, int],
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:func:`bigsink.kernels.evaluate_strip` over the active blocks only: row sums (r, K)
    and the partial ``(column sums (m, K), <P, C> (K,))`` of the plan without the skipped
    blocks (merged by addition)."""
    rb, cb = block_shape
    m, K = g.shape
    rows = np.empty((C.shape[0], K))
    col_sums, pc = np.zeros((m, K)), np.zeros(K)
    for I, a, b in segments(start, C.shape[0], rb):
        cols, gather = _row_blocks(active, I, cb, m)
        g_cols = g if gather is None else g[gather]
        r_seg, (c_seg, pc_seg) = evaluate_strip(columns(C[a:b], gather), start + a, f[a:b],
                                                g_cols, eps)
        rows[a:b] = to_numpy(r_seg)
        col_sums[cols] += to_numpy(c_seg)
        pc = pc + to_numpy(pc_seg)
    return rows, (col_sums, pc)


# each runs the fused kernel it wraps on its strip's rows whole (O(r + m) temporaries)
truncated_sinkhorn_strip.runs_as = sinkhorn_strip  # type: ignore[attr-defined]
truncated_evaluate_strip.runs_as = evaluate_strip  # type: ignore[attr-defined]
