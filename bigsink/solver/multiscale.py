"""Multiscale point clouds: the early eps stages on clusters, the late ones on the points.

At large eps the plan of a point cloud is spread over most of the cost's blocks, so
certified block truncation (:class:`~bigsink.solver.steps.TruncatedStep`) cannot skip
them, and those first stages read all ``n m`` entries. But at large eps a cloud is as good
as a coarser one: replacing each point by its cluster's centroid moves a cost by at most
the clusters' radii, which is negligible against ``eps`` (Schmitzer 2019, coarse-to-fine;
GeomLoss's multiscale backend). So:

1. **A hierarchy, built once** (:func:`hierarchy`). The cloud is in the solve's spatial
   order (:func:`~bigsink.costs.pointcloud.spatial_order` with runs nested by
   ``FANOUT``), so every run of ``FANOUT**k`` consecutive points is a k-d subtree: level
   ``k``'s clusters. A level is a smaller point cloud of the clusters' weighted centroids,
   with the clusters' summed marginals and the largest distance ``r`` of a point from its
   centroid on each side (``R = r_x + r_y``).
2. **Which level at which eps** (:func:`assign`): the coarsest whose cost error is at most
   eps. For a distance (Lipschitz 1), ``|d(x, y) - d(cx, cy)| <= R``; for the squared
   Euclidean cost at the plan's length scale ``s = sqrt(eps * scale)``,
   ``| |x - y|^2 - |cx - cy|^2 | <= 2 s R + R^2`` (both divided by ``scale``). The last
   stage always runs on the points.
3. **Coarse to fine** (:func:`coarse_to_fine`): each level runs its stages with the one
   loop, then its potentials are extended to the next finer level, each member of a
   cluster taking the cluster's potential shifted by its share of the cluster's mass,
   ``f_i = f_I + eps log(a_i / a_I)`` (so the fine plan's block ``I x J`` carries the
   coarse plan's ``P_IJ`` when the costs agree). The first fine iteration is then the
   c-transform of those potentials over the blocks truncation keeps.

Nothing here is trusted for the answer: the coarse levels only warm-start the points'
stages, whose truncation is certified and whose convergence is measured as always.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from ..costs import PointCloudCost
from ..costs.pointcloud import CHEBYSHEV, CITYBLOCK, EUCLIDEAN, SQEUCLIDEAN, metric_code
from ..problem import Problem, log0
from ..result import LevelRun
from .config import AUTO_TRUNCATE_ELEMENTS, CLOUD_BLOCK
from .loop import SolverState

__all__ = ["FANOUT", "FIT", "MIN_CLUSTERS", "Level", "LevelSolver", "assign", "coarse_to_fine",
           "extend", "hierarchy", "runs"]

#: Points per cluster of the first level; each coarser level groups this many of the last.
FANOUT = 16
#: The coarsest level keeps at least this many clusters on each side.
MIN_CLUSTERS = 8
#: A level serves an eps stage when its cost error is at most this many eps: the next
#: stage (eps-scaling divides eps by 10) starts from potentials that are off by more than
#: that anyway. Measured at 10^5 2-D points, eps 1e-4: with 1 the 1e-3 stage ran on the
#: points (80 s in all), with 4 on 6250 clusters (38 s), the same answer.
FIT = 4.0


def runs(block: int, n: int) -> tuple[int, ...]:
    """The cluster sizes ``FANOUT**k`` below ``n`` when they nest with the block side
    ``block`` (each of them and ``block`` divides the next larger, or ``block`` is the
    whole side), so that :func:`~bigsink.costs.pointcloud.spatial_order` keeps every run
    of each size compact; else none."""
    sizes, s = [], FANOUT
    while s < n:
        sizes.append(s)
        s *= FANOUT
    chain = sorted({*sizes, block}) if block < n else sizes
    if any(big % small for small, big in pairwise(chain)):
        return ()
    return tuple(sizes)


@dataclass(frozen=True)
class Level:
    """One coarse level: clusters of ``size`` consecutive points of the solve's order.

    ``cost`` is the cloud of their centroids (same metric and scale), ``problem`` carries
    their summed marginals, ``radius`` is ``R = r_x + r_y`` (the largest distance of a
    point from its cluster's centroid, each side, in the metric; Euclidean for the squared
    Euclidean cost)."""

    size: int
    cost: PointCloudCost
    problem: Problem
    radius: float

    def error(self, eps: float) -> float:
        """The bound on how far a cost between points is from the cost between their
        clusters' centroids, at the plan's length scale for ``eps`` (module docstring)."""
        cost, R = self.cost, self.radius
        if metric_code(cost.metric, cost.p) == SQEUCLIDEAN:
            s = math.sqrt(eps * cost.scale)                   # sqrt(eps)-scale distances
            return (2.0 * s * R + R * R) / cost.scale
        return R / cost.scale

    def fits(self, eps: float) -> bool:
        """Whether the level's costs are within ``FIT * eps`` of the points' (see
        :meth:`error`)."""
        return self.error(eps) <= FIT * eps


def _norm(diff: np.ndarray, code: int, p: float) -> np.ndarray:
    """The metric's norm of each row of ``diff`` (n, d) (Euclidean for sqeuclidean)."""
    if code in (SQEUCLIDEAN, EUCLIDEAN):
        return np.sqrt(np.einsum("nd,nd->n", diff, diff))
    if code == CITYBLOCK:
        return np.abs(diff).sum(axis=1)
    if code == CHEBYSHEV:
        return np.abs(diff).max(axis=1)
    return (np.abs(diff) ** p).sum(axis=1) ** (1.0 / p)


def _clusters(z: np.ndarray, w: np.ndarray, size: int, code: int, p: float
              ) -> tuple[np.ndarray, np.ndarray, float]:
    """Runs of ``size`` points of ``z`` (n, d) with weights ``w`` (n, K): their centroids
    (nc, d) (weighted by the problems' summed weights; the plain mean for a massless
    cluster), masses (nc, K) and the largest distance of a point from its centroid."""
    n = z.shape[0]
    starts = np.arange(0, n, size)
    counts = np.diff(np.append(starts, n))
    mass = np.add.reduceat(w, starts, axis=0)                            # (nc, K)
    weight = w.sum(axis=1)                                               # (n,)
    total = np.add.reduceat(weight, starts)                              # (nc,)
    plain = np.add.reduceat(z, starts, axis=0) / counts[:, None]         # (nc, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        weighted = np.add.reduceat(z * weight[:, None], starts, axis=0) / total[:, None]
    centre = np.where(total[:, None] > 0, weighted, plain)               # (nc, d)
    radius = float(_norm(z - np.repeat(centre, counts, axis=0), code, p).max(initial=0.0))
    return centre, mass, radius


def hierarchy(cost: PointCloudCost, problem: Problem) -> tuple[Level, ...]:
    """The coarse levels of a cloud in the solve's spatial order, finest first: clusters of
    ``FANOUT**k`` points for k = 1, 2, ... while each side keeps ``MIN_CLUSTERS``. A level
    large enough to be truncated gets square blocks of ``CLOUD_BLOCK`` clusters (compact:
    its clusters are in the points' k-d order)."""
    x, y = np.asarray(cost.x, np.float64), np.asarray(cost.y, np.float64)
    n, m = cost.shape
    code = metric_code(cost.metric, cost.p)
    levels: list[Level] = []
    size = FANOUT
    while min(-(-n // size), -(-m // size)) >= MIN_CLUSTERS:
        cx, a, rx = _clusters(x, problem.a, size, code, cost.p)
        cy, b, ry = _clusters(y, problem.b, size, code, cost.p)
        shape = None
        if len(cx) * len(cy) >= AUTO_TRUNCATE_ELEMENTS:
            shape = (CLOUD_BLOCK, CLOUD_BLOCK)
        coarse = PointCloudCost(cx, cy, cost.metric, p=cost.p, scale=cost.scale,
                                block_shape=shape, dtype=cost.dtype)
        levels.append(Level(size, coarse, dataclasses.replace(problem, a=a, b=b), rx + ry))
        size *= FANOUT
    return tuple(levels)


def assign(levels: Sequence[Level], schedule: Sequence[float]) -> list[int | None]:
    """Per eps stage, the index of the coarsest level that :meth:`~Level.fits` it (never
    coarser than the stage before's), or None: the points. The last stage is the points'."""
    out: list[int | None] = []
    prev = len(levels) - 1
    for k, eps in enumerate(schedule):
        fit = [i for i in range(prev + 1) if levels[i].fits(eps)]
        if k == len(schedule) - 1 or not fit:
            out += [None] * (len(schedule) - k)
            break
        prev = max(fit)
        out.append(prev)
    return out


def extend(pot: np.ndarray, w: np.ndarray, coarse_w: np.ndarray, size: int, eps: float
           ) -> np.ndarray:
    """Potentials of clusters (nc, K) extended to their members (n, K), runs of ``size``:
    ``pot_I + eps log(w_i / w_I)`` (0 where a member or its cluster has no mass)."""
    idx = np.arange(w.shape[0]) // size                                  # member -> cluster
    with np.errstate(invalid="ignore"):
        out = pot[idx] + eps * (log0(w) - log0(coarse_w)[idx])           # (n, K)
    return np.where(np.isfinite(out), out, 0.0)


#: ``(level, schedule, start) -> state``: runs ``start.stage .. len(schedule) - 1`` of the
#: schedule on a level (the solver's side: a session on the level's cloud, the one loop).
LevelSolver = Callable[[Level, Sequence[float], SolverState], SolverState]


def coarse_to_fine(
    levels: Sequence[Level], schedule: Sequence[float], problem: Problem, run: LevelSolver,
) -> tuple[SolverState | None, tuple[LevelRun, ...]]:
    """Run the stages :func:`assign` gives the coarse levels, coarsest first, each from
    the last's potentials extended (:func:`extend`); returns the state to start the points'
    stages from (None when no level fits a stage) and what each level ran."""
    plan = assign(levels, schedule)
    state: SolverState | None = None
    done: list[LevelRun] = []
    prev: Level | None = None
    stage = 0
    while (k := plan[stage]) is not None:
        stop = next(i for i in range(stage, len(plan)) if plan[i] != k)  # (last: None)
        level = levels[k]
        if state is None or prev is None:
            start = SolverState(stage, None, np.zeros(level.problem.b.shape), 0)
        else:
            start = SolverState(stage, *_down(state, prev, level.problem, level.size,
                                              schedule[stage - 1]), 0)
        t0 = time.perf_counter()
        state = run(level, schedule[:stop], start)
        done.append(LevelRun(level.cost.shape, tuple(schedule[stage:stop]), state.n_iter,
                             time.perf_counter() - t0))
        prev, stage = level, stop
    if state is None or prev is None:
        return None, ()
    f, g = _down(state, prev, problem, 1, schedule[stage - 1])
    return SolverState(stage, f, g, 0), tuple(done)


def _down(state: SolverState, coarse: Level, fine: Problem, fine_size: int, eps: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """A coarse level's potentials extended to the next finer level (clusters of
    ``fine_size`` points, or the points when 1)."""
    assert state.f is not None
    ratio = coarse.size // fine_size
    return (extend(state.f, fine.a, coarse.problem.a, ratio, eps),
            extend(state.g, fine.b, coarse.problem.b, ratio, eps))
