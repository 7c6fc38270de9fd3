"""Fused point-cloud kernels: a cloud's costs computed in registers where they are used.

A :class:`~bigsink.costs.pointcloud.CloudStrip` carries a strip's source points ``x``
(r, d), the target points ``y`` (m, d) and the metric, never the matrix. Every pass over a
cloud (:mod:`bigsink.kernels` dispatches them here) computes

    C_ij = metric(x_i, y_j) / scale                                      (the cloud's cost)

a group of :data:`~bigsink.kernels.cpu._GROUP` rows at a time into a small per-thread tile
(the group's rows, in the cost's dtype: L2-resident), then runs the fused row kernels of
:mod:`bigsink.kernels.cpu` on that tile -- the same f-update, column partials,
stabilisation and float64 accumulation as for a strip in memory, one ``exp`` per element.
Nothing of size ``r x m`` is ever allocated, so a pass costs the arithmetic of the metric
and the exp, not six passes over memory (GEMM, broadcasts, clip, division, cast) and a
read.

The distance loops run over ``y`` transposed (``yT``, (d, m), contiguous) so that LLVM
vectorises them along a row: squared differences in d = 1, 2, 3 in one loop each, any other
``d`` or metric one coordinate at a time (the loop over ``d`` outside the vector loop).
Differences are taken directly (``sum_k (x_ik - y_jk)^2``), not through ``|x|^2 + |y|^2 - 2
x.y``: no cancellation for close points. Coordinates are float64; the cost is rounded to its
dtype (float32 or float64) exactly as a materialised strip is.

Metrics (:func:`~bigsink.costs.pointcloud.metric_code`): squared Euclidean, Euclidean,
Minkowski with ``p = 1`` (city block), ``p = inf`` (Chebyshev) and any ``p >= 1``.
"""

from __future__ import annotations

import threading
from typing import Any

import numba as nb
import numpy as np

from ..costs.pointcloud import (
    CHEBYSHEV,
    CITYBLOCK,
    EUCLIDEAN,
    MINKOWSKI,
    SQEUCLIDEAN,
    CloudStrip,
)
from . import cpu
from .cpu import _GROUP, _JIT_SUM, _apply_rows, _evaluate_rows, _sinkhorn_rows
from .reference import Pair

__all__ = [
    "apply_strip",
    "as_matrix",
    "cost_grad_strip",
    "cost_rows",
    "evaluate_strip",
    "fits",
    "metric_gradient",
    "scan_strip",
    "sinkhorn_strip",
]


def fits(C: Any, *others: Any) -> bool:
    """Whether the fused cloud kernels apply: a NumPy cloud strip of a float32/float64 cost
    (and NumPy arguments)."""
    return (isinstance(C, CloudStrip) and isinstance(C.x, np.ndarray)
            and isinstance(C.y, np.ndarray) and C.dtype in (np.float32, np.float64)
            and all(isinstance(x, np.ndarray) for x in others))


@nb.njit(**_JIT_SUM)
def _accumulate(
    xi: np.ndarray, yT: np.ndarray, code: int, p: float, acc: np.ndarray
) -> None:  # pragma: no cover - jit
    """``acc[j] = sum_k |x_ik - y_jk|^q`` (q = 2 for the Euclidean metrics, 1 city block,
    ``p`` Minkowski) or ``max_k |x_ik - y_jk|`` (Chebyshev): xi (d,), yT (d, m), acc (m,)
    float64. Squared differences have loops of their own for d = 1, 2, 3 (one pass, no
    read-modify-write of ``acc``); every other case goes coordinate by coordinate."""
    d, m = yT.shape
    squared = code == SQEUCLIDEAN or code == EUCLIDEAN
    if squared and d == 1:
        x0, y0 = xi[0], yT[0]
        for j in range(m):
            t0 = x0 - y0[j]
            acc[j] = t0 * t0
        return
    if squared and d == 2:
        x0, x1, y0, y1 = xi[0], xi[1], yT[0], yT[1]
        for j in range(m):
            t0, t1 = x0 - y0[j], x1 - y1[j]
            acc[j] = t0 * t0 + t1 * t1
        return
    if squared and d == 3:
        x0, x1, x2, y0, y1, y2 = xi[0], xi[1], xi[2], yT[0], yT[1], yT[2]
        for j in range(m):
            t0, t1, t2 = x0 - y0[j], x1 - y1[j], x2 - y2[j]
            acc[j] = t0 * t0 + t1 * t1 + t2 * t2
        return
    for j in range(m):
        acc[j] = 0.0
    for k in range(d):                                               # one coordinate at a time
        xk, yk = xi[k], yT[k]
        if squared:
            for j in range(m):
                t = xk - yk[j]
                acc[j] += t * t
        elif code == CHEBYSHEV:
            for j in range(m):
                acc[j] = max(acc[j], abs(xk - yk[j]))
        elif code == CITYBLOCK:
            for j in range(m):
                acc[j] += abs(xk - yk[j])
        else:
            for j in range(m):
                acc[j] += abs(xk - yk[j]) ** p


@nb.njit(**_JIT_SUM)
def _squares4(x: np.ndarray, y: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover - jit
    """``acc[t, j] = sum_k (x_tk - y_jk)^2`` for four rows at once: x (4, d), y (m, d)
    row-major, acc (4, m). The tiled form for larger ``d``: each ``y_j`` is loaded once for
    the four rows and the four sums stay in registers along ``k`` (a coordinate-at-a-time
    loop would stream ``acc`` and ``y`` through the caches ``d`` times)."""
    x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
    for j in range(y.shape[0]):
        yj = y[j]
        s0 = s1 = s2 = s3 = 0.0
        for k in range(yj.shape[0]):
            yk = yj[k]
            t0, t1, t2, t3 = x0[k] - yk, x1[k] - yk, x2[k] - yk, x3[k] - yk
            s0 += t0 * t0
            s1 += t1 * t1
            s2 += t2 * t2
            s3 += t3 * t3
        acc[0, j], acc[1, j], acc[2, j], acc[3, j] = s0, s1, s2, s3


@nb.njit(**_JIT_SUM)
def _cost_rows(
    x: np.ndarray, y: np.ndarray, yT: np.ndarray, code: int, p: float, inv_scale: float,
    out: np.ndarray,
) -> None:  # pragma: no cover - jit
    """``out[i, j] = metric(x_i, y_j) * inv_scale``: x (r, d), y (m, d) and its transpose
    yT (d, m), out (r, m) in the cost's dtype (rounded from float64 once, as a materialised
    strip is). Rows go in groups of _GROUP: squared differences in d > 3 take the tiled
    :func:`_squares4`, everything else :func:`_accumulate` row by row."""
    r, d = x.shape
    acc = np.empty((_GROUP, yT.shape[1]))                            # (4, m) float64
    tiled = d > 3 and (code == SQEUCLIDEAN or code == EUCLIDEAN)
    for i0 in range(0, r, _GROUP):
        i1 = min(r, i0 + _GROUP)
        if tiled and i1 - i0 == _GROUP:
            _squares4(x[i0:i1], y, acc)
        else:
            for t in range(i1 - i0):
                _accumulate(x[i0 + t], yT, code, p, acc[t])
        for t in range(i1 - i0):
            a, o = acc[t], out[i0 + t]
            if code == EUCLIDEAN:
                for j in range(o.shape[0]):
                    o[j] = np.sqrt(a[j]) * inv_scale
            elif code == MINKOWSKI:
                q = 1.0 / p
                for j in range(o.shape[0]):
                    o[j] = a[j] ** q * inv_scale
            else:
                for j in range(o.shape[0]):
                    o[j] = a[j] * inv_scale


@nb.njit(**_JIT_SUM)
def _cloud_sinkhorn_rows(
    x: np.ndarray, y: np.ndarray, yT: np.ndarray, code: int, p: float, inv_scale: float,
    tile: np.ndarray,
    log_a: np.ndarray, f_prev: np.ndarray, gT: np.ndarray, eps: float, tau: float,
    omega: float, f_out: np.ndarray, col_s: np.ndarray, W: np.ndarray, low: bool,
    e: np.ndarray,
) -> None:  # pragma: no cover - jit
    """:func:`bigsink.kernels.cpu._sinkhorn_rows` over a cloud strip: each group of rows'
    costs computed into ``tile`` (_GROUP, m), then the same fused update on it (groups in
    the same order, so the results are those of the strip in memory)."""
    r = x.shape[0]
    for i0 in range(0, r, _GROUP):
        i1 = min(r, i0 + _GROUP)
        rows = tile[:i1 - i0]
        _cost_rows(x[i0:i1], y, yT, code, p, inv_scale, rows)
        _sinkhorn_rows(rows, log_a[i0:i1], f_prev[i0:i1], gT, eps, tau, omega,
                       f_out[i0:i1], col_s, W, low, e)


@nb.njit(**_JIT_SUM)
def _cloud_evaluate_rows(
    x: np.ndarray, y: np.ndarray, yT: np.ndarray, code: int, p: float, inv_scale: float,
    tile: np.ndarray,
    f: np.ndarray, gT: np.ndarray, eps: float, rows: np.ndarray, cols: np.ndarray,
    pc: np.ndarray, low: bool,
) -> None:  # pragma: no cover - jit
    """:func:`bigsink.kernels.cpu._evaluate_rows` over a cloud strip, a tile at a time."""
    r = x.shape[0]
    for i0 in range(0, r, _GROUP):
        i1 = min(r, i0 + _GROUP)
        tiles = tile[:i1 - i0]
        _cost_rows(x[i0:i1], y, yT, code, p, inv_scale, tiles)
        _evaluate_rows(tiles, f[i0:i1], gT, eps, rows[i0:i1], cols, pc, low)


@nb.njit(**_JIT_SUM)
def _cloud_apply_rows(
    x: np.ndarray, y: np.ndarray, yT: np.ndarray, code: int, p: float, inv_scale: float,
    tile: np.ndarray, f: np.ndarray, gT: np.ndarray, eps: float, VT: np.ndarray,
    U: np.ndarray, rows: np.ndarray, cols: np.ndarray, low: bool,
) -> None:  # pragma: no cover - jit
    """:func:`bigsink.kernels.cpu._apply_rows` over a cloud strip, a tile at a time."""
    r = x.shape[0]
    for i0 in range(0, r, _GROUP):
        i1 = min(r, i0 + _GROUP)
        tiles = tile[:i1 - i0]
        _cost_rows(x[i0:i1], y, yT, code, p, inv_scale, tiles)
        _apply_rows(tiles, f[i0:i1], gT, eps, VT, U[i0:i1], rows[i0:i1], cols, low)


@nb.njit(**_JIT_SUM)
def _cloud_scan_rows(
    x: np.ndarray, y: np.ndarray, yT: np.ndarray, code: int, p: float, inv_scale: float,
    tile: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - jit
    """``out = [min, max, non-finite count, first non-finite flat index in the strip]`` of
    the strip's finite costs, a tile at a time (``out`` starts ``[inf, -inf, 0, -1]``)."""
    r, m = x.shape[0], yT.shape[1]
    for i0 in range(0, r, _GROUP):
        i1 = min(r, i0 + _GROUP)
        rows = tile[:i1 - i0]
        _cost_rows(x[i0:i1], y, yT, code, p, inv_scale, rows)
        for t in range(i1 - i0):
            for j in range(m):
                c = rows[t, j]
                if np.isfinite(c):
                    out[0] = min(out[0], c)
                    out[1] = max(out[1], c)
                else:
                    if out[3] < 0:
                        out[3] = (i0 + t) * m + j
                    out[2] += 1


_local = threading.local()


def _tile(dtype: np.dtype[Any], m: int) -> np.ndarray:
    """A (_GROUP, m) tile of ``dtype`` kept per thread and dtype across calls."""
    key = f"tile_{np.dtype(dtype).name}"
    buf = getattr(_local, key, None)
    if buf is None or buf.size < _GROUP * m:
        buf = np.zeros(_GROUP * m, dtype=dtype)
        setattr(_local, key, buf)
    return buf[:_GROUP * m].reshape(_GROUP, m)


def _source(C: CloudStrip) -> tuple[Any, ...]:
    """The leading arguments of the cloud row kernels for strip ``C``."""
    x = np.ascontiguousarray(C.x, dtype=np.float64)                  # (r, d)
    y = np.ascontiguousarray(C.y, dtype=np.float64)                  # (m, d)
    return x, y, np.ascontiguousarray(y.T), C.code, float(C.p), 1.0 / C.scale, _tile(
        C.dtype, C.shape[1])


def cost_rows(C: CloudStrip) -> np.ndarray:
    """The strip's costs (r, m) in its dtype, by the fused kernels' own arithmetic (what
    every fused pass uses), for passes that need them whole (plans, column fallback)."""
    out = np.empty(C.shape, dtype=C.dtype)
    _cost_rows(*_source(C)[:-1], out)
    return out


def as_matrix(C: Any) -> Any:
    """A strip as a matrix: a NumPy cloud strip by :func:`cost_rows` (the fused kernels'
    arithmetic), another cloud strip by its array-API :meth:`~CloudStrip.materialise`, any
    other strip unchanged."""
    if not isinstance(C, CloudStrip):
        return C
    return cost_rows(C) if fits(C) else C.materialise()


def sinkhorn_strip(
    C: CloudStrip, start: int, log_a: np.ndarray, f_prev: np.ndarray, g: np.ndarray,
    eps: float, tau: float, omega: float = 1.0,
) -> tuple[np.ndarray, Pair]:
    """:func:`bigsink.kernels.reference.sinkhorn_strip` over a cloud strip, costs computed
    in registers (one pass, one exp per element; :func:`bigsink.kernels.cpu.sinkhorn_pass`)."""
    return cpu.sinkhorn_pass(_cloud_sinkhorn_rows, _source(C), C.shape, C.dtype, log_a,
                             f_prev, g, eps, tau, omega)


def evaluate_strip(
    C: CloudStrip, start: int, f: np.ndarray, g: np.ndarray, eps: float
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """:func:`bigsink.kernels.reference.evaluate_strip` over a cloud strip."""
    return cpu.evaluate_pass(_cloud_evaluate_rows, _source(C), C.shape, C.dtype, f, g, eps)


def apply_strip(
    C: CloudStrip, start: int, f: np.ndarray, U: np.ndarray, g: np.ndarray, eps: float,
    V: np.ndarray,
) -> tuple[np.ndarray, tuple[np.ndarray]]:
    """:func:`bigsink.kernels.reference.apply_strip` over a cloud strip."""
    return cpu.apply_pass(_cloud_apply_rows, _source(C), C.shape, C.dtype, f, U, g, eps, V)


#: Elements of the (rows, m, d) temporaries of :func:`cost_grad_strip` per chunk of rows.
GRAD_CHUNK_ELEMENTS = 1 << 22


def metric_gradient(diff: np.ndarray, code: int, p: float) -> np.ndarray:
    """``grad_x metric(x, y)`` at ``diff = x - y`` (..., d), unscaled (``grad_y`` is its
    negative): ``2 diff`` (squared Euclidean), ``diff / |diff|`` (Euclidean; 0 at 0),
    ``sign(diff)`` (city block), the sign of the largest coordinate (Chebyshev; a
    subgradient), ``sign(diff) |diff|^(p-1) / |diff|_p^(p-1)`` (Minkowski)."""
    a = np.abs(diff)
    if code == SQEUCLIDEAN:
        return 2.0 * diff
    if code == CITYBLOCK:
        return np.sign(diff)
    if code == CHEBYSHEV:
        top = a.argmax(axis=-1)[..., None]                           # first largest
        return np.where(np.arange(diff.shape[-1]) == top, np.sign(diff), 0.0)
    q = 2.0 if code == EUCLIDEAN else p
    norm = (a**q).sum(axis=-1, keepdims=True) ** (1.0 / q)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sign(diff) * a ** (q - 1) / norm ** (q - 1)
    return np.where(norm > 0, out, 0.0)


def cost_grad_strip(
    C: CloudStrip, start: int, f: np.ndarray, g: np.ndarray, eps: float
) -> tuple[np.ndarray, tuple[np.ndarray]]:
    """``sum_j P_kij grad_x c(x_i, y_j)`` (r, d, K) for the strip's rows and the partial
    ``(sum_i P_kij grad_y c(x_i, y_j),)`` ((m, d, K), merged by addition), with the plan
    from the kernels' own costs; rows in chunks of bounded (rows, m, d) temporaries."""
    x, y = np.asarray(C.x, dtype=np.float64), np.asarray(C.y, dtype=np.float64)
    (r, d), m, K = x.shape, y.shape[0], g.shape[1]
    gx, gy = np.zeros((r, d, K)), np.zeros((m, d, K))
    step = max(1, GRAD_CHUNK_ELEMENTS // (m * d))
    for a in range(0, r, step):
        b = min(r, a + step)
        G = metric_gradient(x[a:b, None, :] - y[None, :, :], C.code, C.p) / C.scale
        Cq = np.asarray(as_matrix(C[a:b]), dtype=np.float64)         # (q, m)
        for k in range(K):
            P = np.exp((f[a:b, k, None] + g[None, :, k] - Cq) / eps)  # (q, m)
            gx[a:b, :, k] = np.einsum("qm,qmd->qd", P, G)
            gy[:, :, k] -= np.einsum("qm,qmd->md", P, G)
    return gx, (gy,)


def scan_strip(C: CloudStrip, start: int) -> tuple[None, tuple[float, float, int, int]]:
    """:func:`bigsink.kernels.reference.scan_strip` over a cloud strip (the flat index of
    the first non-finite cost is into the whole matrix)."""
    out = np.array([np.inf, -np.inf, 0.0, -1.0])
    _cloud_scan_rows(*_source(C), out)
    first = int(out[3])
    return None, (float(out[0]), float(out[1]), int(out[2]),
                  first + start * C.shape[1] if first >= 0 else -1)
