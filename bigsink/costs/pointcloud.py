"""Cost matrices defined by two point clouds and a metric, computed block by block.

A cloud's cost never needs to be stored. :meth:`PointCloudCost.rows` materialises a strip
(array API, any namespace); :meth:`PointCloudCost.strip` hands the executors a
:class:`CloudStrip` instead -- the strip's points and the metric, no matrix -- which the
fused kernels (:mod:`bigsink.kernels.cloud`) turn into costs in registers, tile by tile,
for every pass over C (scan, iterations, evaluation, plans).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ..errors import InputError
from .base import BlockGrid, Gridded, default_block_shape

__all__ = [
    "METRICS", "CloudStrip", "PointCloudCost", "box_distance", "metric_code", "pairwise_cost",
    "spatial_order",
]

METRICS = ("sqeuclidean", "euclidean", "minkowski")


def pairwise_cost(x: Any, y: Any, metric: str = "sqeuclidean", p: float = 2.0) -> Any:
    """Cost block between points ``x`` (r, d) and ``y`` (c, d): (r, c) in their namespace.

    ``sqeuclidean``: ``|x - y|^2``; ``euclidean``: ``|x - y|``; ``minkowski``:
    ``(sum |x - y|^p)^(1/p)`` (``p = inf``: ``max |x - y|``, the Chebyshev distance).
    """
    xp = array_namespace(x, y)
    if metric in ("sqeuclidean", "euclidean"):
        # |x|^2 + |y|^2 - 2 x.y, clipped at 0 against rounding                 (r, c)
        d2 = (xp.expand_dims(xp.sum(x * x, axis=1), axis=1)
              + xp.expand_dims(xp.sum(y * y, axis=1), axis=0)
              - 2.0 * (x @ y.T))
        d2 = xp.maximum(d2, xp.zeros_like(d2))
        return d2 if metric == "sqeuclidean" else xp.sqrt(d2)
    if metric == "minkowski":
        diff = xp.abs(xp.expand_dims(x, axis=1) - xp.expand_dims(y, axis=0))  # (r, c, d)
        if math.isinf(p):
            return xp.max(diff, axis=2)
        if p == 1:
            return xp.sum(diff, axis=2)
        return xp.sum(diff**p, axis=2) ** (1.0 / p)
    raise InputError(f"metric must be one of {METRICS}; got {metric!r}.")


def _points(name: str, z: Any) -> Any:
    """Validate a point cloud: (n, d) or (n,) -> (n, d) float, finite, non-empty."""
    if not hasattr(z, "ndim"):
        z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = array_namespace(z).reshape(z, (-1, 1))
    if z.ndim != 2 or z.shape[0] == 0:
        raise InputError(f"{name}: expected points of shape (n, d) or (n,), got {tuple(z.shape)}.")
    xp = array_namespace(z)
    if not bool(xp.all(xp.isfinite(z))):
        raise InputError(f"{name}: point coordinates must be finite.")
    return z


class PointCloudCost(Gridded):
    """``C_ij = metric(x_i, y_j) / scale``, computed strip by strip; never materialised.

    Args:
        x: source points (n, d) (or (n,) for 1-D), NumPy or CuPy.
        y: target points (m, d).
        metric: "sqeuclidean" (default), "euclidean" or "minkowski" (with ``p``).
        p: Minkowski exponent.
        scale: C is divided by this (e.g. the maximum, to put C in [0, 1]).
        block_shape: block partition; default full-width block rows of about 16 MiB.
        dtype: "float64" (default) or "float32" for the computed blocks.
    """

    def __init__(
        self, x: Any, y: Any, metric: str = "sqeuclidean", *, p: float = 2.0,
        scale: float = 1.0, block_shape: tuple[int, int] | None = None, dtype: Any = "float64",
    ) -> None:
        self.x, self.y = _points("x", x), _points("y", y)
        if self.x.shape[1] != self.y.shape[1]:
            raise InputError(
                f"x has dimension {self.x.shape[1]} but y has {self.y.shape[1]}; "
                "points must live in the same space."
            )
        if metric not in METRICS:
            raise InputError(f"metric must be one of {METRICS}; got {metric!r}.")
        if not p >= 1:   # (NaN too; inf is the Chebyshev distance)
            raise InputError(f"p must be >= 1 (or inf) for a Minkowski metric; got {p!r}.")
        if not (np.isfinite(scale) and scale > 0):
            raise InputError(f"scale must be positive and finite; got {scale!r}.")
        self.metric, self.p, self.scale = metric, float(p), float(scale)
        self._dtype = np.dtype(dtype)
        shape = (int(self.x.shape[0]), int(self.y.shape[0]))
        bs = block_shape or default_block_shape(shape, self._dtype.itemsize)
        self._grid = BlockGrid(shape, (min(bs[0], shape[0]), min(bs[1], shape[1])))

    def with_points(self, x: Any, y: Any) -> PointCloudCost:
        """The same cost over other arrays of the same points (e.g. moved to a GPU)."""
        return PointCloudCost(x, y, self.metric, p=self.p, scale=self.scale,
                              block_shape=self._grid.block_shape, dtype=self._dtype)

    def to_namespace(self, xp: Any) -> PointCloudCost:
        """The points moved to ``xp``: blocks are then computed there."""
        return self.with_points(xp.asarray(self.x), xp.asarray(self.y))

    @property
    def namespace(self) -> str:
        """The points' array module."""
        return type(self.x).__module__.split(".")[0]

    @property
    def dtype(self) -> np.dtype[Any]:
        """Element type of the computed blocks."""
        return self._dtype

    def block(self, i: int, j: int) -> Any:
        """Block ``(i, j)``, computed."""
        r0, r1 = self._grid.row_range(i)
        c0, c1 = self._grid.col_range(j)
        return self._strip(self.x[r0:r1, :], self.y[c0:c1, :]).materialise()

    def rows(self, start: int, stop: int) -> Any:
        """Rows ``[start, stop)``, computed."""
        return self.strip(start, stop).materialise()

    def strip(self, start: int, stop: int) -> CloudStrip:
        """Rows ``[start, stop)`` as a :class:`CloudStrip`: their points, not their costs
        (the fused kernels compute the costs where they use them)."""
        return self._strip(self.x[start:stop, :], self.y)

    def _strip(self, x: Any, y: Any) -> CloudStrip:
        """The costs between points ``x`` and ``y`` of this cloud, as a :class:`CloudStrip`."""
        return CloudStrip(x, y, metric_code(self.metric, self.p), self.p, self.scale,
                          self._dtype)

    def reordered(
        self, block_shape: tuple[int, int],
        runs: tuple[Sequence[int], Sequence[int]] = ((), ()),
    ) -> tuple[PointCloudCost, np.ndarray, np.ndarray]:
        """The same cost over the points in :func:`spatial_order` (blocks of
        ``block_shape`` are then compact regions of space, and so are the ``runs`` of
        consecutive points of the given sizes per side, nested with the blocks' sides),
        and the orders ``(rows, cols)``: row ``k`` of the new cost is row ``rows[k]`` of
        this one."""
        rows = spatial_order(np.asarray(self.x), (block_shape[0], *runs[0]))
        cols = spatial_order(np.asarray(self.y), (block_shape[1], *runs[1]))
        cost = PointCloudCost(self.x[rows], self.y[cols], self.metric, p=self.p,
                              scale=self.scale, block_shape=block_shape, dtype=self._dtype)
        return cost, rows, cols

    def cost_range(self) -> tuple[float, float]:
        """Bounds ``(lo, hi)`` of every entry of C, from the clouds' bounding boxes (no pass
        over C): the least and the greatest distance between the boxes, widened by the
        rounding of the cost's dtype."""
        x, y = np.asarray(self.x, np.float64), np.asarray(self.y, np.float64)
        box_x, box_y = (x.min(0)[None], x.max(0)[None]), (y.min(0)[None], y.max(0)[None])
        lo = float(box_distance(box_x, box_y, self.metric, self.p)[0, 0])
        hi = float(box_distance(box_x, box_y, self.metric, self.p, far=True)[0, 0])
        margin = 4.0 * float(np.finfo(self._dtype).eps)
        return lo / self.scale * (1.0 - margin), hi / self.scale * (1.0 + margin)

    def block_min(self) -> np.ndarray:
        """A lower bound of the least cost in each block of the grid (nI, nJ): the metric's
        distance between the blocks' bounding boxes (:func:`box_distance`), lowered by the
        rounding of the cost's dtype."""
        (n, m), (rb, cb) = self.shape, self._grid.block_shape
        x, y = np.asarray(self.x, np.float64), np.asarray(self.y, np.float64)
        rs, cs = np.arange(0, n, rb), np.arange(0, m, cb)
        dist = box_distance((np.minimum.reduceat(x, rs), np.maximum.reduceat(x, rs)),
                            (np.minimum.reduceat(y, cs), np.maximum.reduceat(y, cs)),
                            self.metric, self.p)
        margin = 1.0 - 4.0 * float(np.finfo(self._dtype).eps)  # the cost's rounding
        return dist / self.scale * margin

    def __repr__(self) -> str:
        return (f"PointCloudCost(n={self.shape[0]}, m={self.shape[1]}, d={self.x.shape[1]}, "
                f"metric={self.metric!r}, scale={self.scale:g})")


#: Metric codes of the fused kernels: sqeuclidean, euclidean (Minkowski p = 2), cityblock
#: (p = 1), Chebyshev (p = inf), general Minkowski p.
SQEUCLIDEAN, EUCLIDEAN, CITYBLOCK, CHEBYSHEV, MINKOWSKI = range(5)


def metric_code(metric: str, p: float) -> int:
    """The fused kernels' code of ``metric`` (with its Minkowski ``p``)."""
    if metric == "sqeuclidean":
        return SQEUCLIDEAN
    if metric == "euclidean" or p == 2:
        return EUCLIDEAN
    if p == 1:
        return CITYBLOCK
    return CHEBYSHEV if math.isinf(p) else MINKOWSKI


@dataclass(frozen=True)
class CloudStrip:
    """Rows of a point cloud's cost, as points: ``C_ij = metric(x_i, y_j) / scale`` for the
    strip's source points ``x`` (r, d) and all target points ``y`` (m, d), never formed
    whole. ``code`` is :func:`metric_code`; ``dtype`` the cost's element type.

    Sliced by rows like a strip (``strip[a:b]``); :meth:`materialise` gives the matrix
    (array API, in the points' namespace) for code that needs one.
    """

    x: Any
    y: Any
    code: int
    p: float
    scale: float
    dtype: np.dtype[Any]

    @property
    def shape(self) -> tuple[int, int]:
        """``(r, m)``."""
        return int(self.x.shape[0]), int(self.y.shape[0])

    @property
    def ndim(self) -> int:
        """2, as a strip."""
        return 2

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        """The points' array namespace (where inputs of the strip's jobs belong)."""
        return array_namespace(self.x)

    def __getitem__(self, key: Any) -> CloudStrip:
        """Rows ``key`` (a slice, or ``(slice, ...)``) of the strip."""
        rows = key[0] if isinstance(key, tuple) else key
        return CloudStrip(self.x[rows, :], self.y, self.code, self.p, self.scale, self.dtype)

    def materialise(self) -> Any:
        """The strip's cost matrix (r, m) in the points' namespace and the cost's dtype."""
        xp = array_namespace(self.x, self.y)
        metric = ("sqeuclidean", "euclidean", "minkowski", "minkowski", "minkowski")[self.code]
        c = pairwise_cost(self.x, self.y, metric, self.p) / self.scale
        return xp.astype(c, getattr(xp, self.dtype.name))


def spatial_order(z: np.ndarray, leaf: int | Sequence[int]) -> np.ndarray:
    """A permutation of the points ``z`` (n, d) after which every run of ``leaf``
    consecutive points (a block of the grid) is a compact region of space: a k-d tree
    whose splits fall on multiples of ``leaf``, each node split at that rank along its
    widest coordinate. O(n log(n / leaf)); any dimension.

    ``leaf`` may be nested sizes (each dividing the next, e.g. ``(16, 256, 4096)``): a node
    is then split at a multiple of the largest size below its own, so the runs of every
    size are subtrees (the clusters of :mod:`bigsink.solver.multiscale`)."""
    sizes = sorted({int(leaf)} if isinstance(leaf, int | np.integer) else set(leaf))
    n = z.shape[0]
    order = np.arange(n)
    todo = [(0, n)]
    while todo:
        lo, hi = todo.pop()
        if hi - lo <= sizes[0]:
            continue
        step = max(s for s in sizes if s < hi - lo)                      # on a run's edge
        pts = z[order[lo:hi]]                                            # (hi - lo, d)
        axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
        mid = lo + max(1, math.ceil((hi - lo) / step) // 2) * step
        part = np.argpartition(pts[:, axis], mid - lo - 1)
        order[lo:hi] = order[lo:hi][part]
        todo += [(lo, mid), (mid, hi)]
    return order


def box_distance(
    box_x: tuple[np.ndarray, np.ndarray], box_y: tuple[np.ndarray, np.ndarray], metric: str,
    p: float = 2.0, far: bool = False,
) -> np.ndarray:
    """The least ``metric`` distance between boxes: ``box_x = (lo, hi)`` (I, d) each,
    ``box_y`` (J, d); (I, J). Per coordinate the gap ``max(0, ylo - xhi, xlo - yhi)`` is
    at most ``|x_k - y_k|`` for any two points of the boxes, and every metric here grows
    with each ``|x_k - y_k|``. ``far``: the greatest distance instead, from the widest
    gap ``max(yhi - xlo, xhi - ylo)``."""
    (xlo, xhi), (ylo, yhi) = box_x, box_y
    code = metric_code(metric, p)
    out = np.zeros((xlo.shape[0], ylo.shape[0]))
    for k in range(xlo.shape[1]):
        a, b = (yhi, xhi) if far else (ylo, xlo)
        c, d = (xlo, ylo) if far else (xhi, yhi)
        gap = np.maximum(np.maximum(a[None, :, k] - c[:, None, k],
                                    b[:, None, k] - d[None, :, k]), 0.0)  # (I, J)
        if code in (SQEUCLIDEAN, EUCLIDEAN):
            out += gap * gap
        elif code == CHEBYSHEV:
            out = np.maximum(out, gap)
        elif code == CITYBLOCK:
            out += gap
        else:
            out += gap ** p
    if code == EUCLIDEAN:
        return np.sqrt(out)
    return out ** (1.0 / p) if code == MINKOWSKI else out
