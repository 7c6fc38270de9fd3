"""Multiscale point clouds (bigsink.solver.multiscale): the same answers as the points-only
solve, clusters that are compact and honest about their radii, potentials extended so that
the clusters' plan carries over, and a clear word where it does not apply."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bigsink
from bigsink.costs import PointCloudCost
from bigsink.costs.pointcloud import spatial_order
from bigsink.errors import InputError
from bigsink.problem import make_problem
from bigsink.solver.multiscale import FANOUT, Level, assign, extend, hierarchy, runs

#: (dimension, metric, Minkowski p): the three metrics, 1-D to 10-D.
CASES = [(1, "sqeuclidean", 2.0), (2, "sqeuclidean", 2.0), (3, "euclidean", 2.0),
         (2, "minkowski", 1.0), (10, "sqeuclidean", 2.0)]


def _clouds(d: int, n: int = 700, m: int = 600, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points in random order (one side skewed) and random positive weights."""
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, d)), rng.random((m, d)) ** 2
    a, b = rng.random(n) + 0.2, rng.random(m) + 0.2
    return x, y, a / a.sum(), b / b.sum()


@pytest.mark.parametrize(("d", "metric", "p"), CASES)
@pytest.mark.parametrize("rho", [math.inf, 0.5])
def test_multiscale_and_points_only_solves_agree(d: int, metric: str, p: float,
                                                 rho: float) -> None:
    x, y, a, b = _clouds(d)
    cost = PointCloudCost(x, y, metric, p=p, scale=float(d))
    kw: dict[str, Any] = dict(eps=2e-3, eps_scaling=True, rho=rho, tol=1e-7, progress=False)
    plain = bigsink.solve(cost, a, b, multiscale=False, truncate=False, **kw)
    multi = bigsink.solve(cost, a, b, multiscale=True, **kw)
    assert plain.converged and multi.converged
    np.testing.assert_allclose(multi.transport_cost, plain.transport_cost, rtol=1e-5)
    if not math.isinf(rho):              # unbalanced potentials are unique: compare them
        np.testing.assert_allclose(multi.f, plain.f, atol=1e-3 * kw["eps"])
    if d <= 3:                           # the first stages ran on clusters
        assert multi.levels and multi.levels[-1].points[0] < x.shape[0]
        assert multi.eps_stages[0] in multi.levels[0].eps_stages
        assert "cluster levels used" in multi.multiscale
    else:                                # used, or why not; then C was scanned as without
        assert multi.levels or ("none of the" in multi.multiscale
                                and "never scanned" not in multi.placement)
    assert plain.levels == () and plain.multiscale == ""


def test_multiscale_on_a_two_worker_cluster_matches_in_process(dask_client: Any) -> None:
    x, y, a, b = _clouds(2, 900, 800, seed=3)
    cost = PointCloudCost(x, y, scale=2.0)
    kw: dict[str, Any] = dict(eps=1e-3, eps_scaling=True, tol=1e-7, progress=False,
                              multiscale=True, truncate=True)
    local = bigsink.solve(cost, a, b, **kw)
    remote = bigsink.solve(cost, a, b, client=dask_client, **kw)
    assert local.converged and remote.converged and remote.levels
    np.testing.assert_allclose(remote.transport_cost, local.transport_cost, rtol=1e-7)
    np.testing.assert_allclose(remote.f - remote.f[0], local.f - local.f[0], atol=1e-8)


@pytest.mark.parametrize("case", ["duplicates", "coincident"])
def test_duplicate_and_coincident_points(case: str) -> None:
    rng = np.random.default_rng(5)
    y = rng.random((500, 2))
    x = (np.repeat(rng.random((50, 2)), 10, axis=0) if case == "duplicates"
         else np.full((500, 2), 0.5))
    cost = PointCloudCost(x, y, scale=2.0)
    kw: dict[str, Any] = dict(eps=2e-3, eps_scaling=True, tol=1e-7, progress=False)
    plain = bigsink.solve(cost, multiscale=False, truncate=False, **kw)
    multi = bigsink.solve(cost, multiscale=True, **kw)
    assert multi.converged and multi.levels
    np.testing.assert_allclose(multi.transport_cost, plain.transport_cost, rtol=1e-6)
    if case == "coincident":              # every plan has the same cost: <P, C> = <b, C(.5, y)>
        expected = (((y - 0.5) ** 2).sum(axis=1) / 2.0).mean()
        np.testing.assert_allclose(multi.transport_cost, expected, rtol=1e-9)


def test_nested_spatial_order_keeps_every_run_compact() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    z = rng.random((n, 2))
    order = spatial_order(z, (256, *runs(256, n)))
    assert sorted(order.tolist()) == list(range(n))
    for size in (16, 256, 4096):
        starts = np.arange(0, n - size + 1, size)                        # whole runs
        pts = z[order]
        span = (np.maximum.reduceat(pts, starts)[:len(starts)]
                - np.minimum.reduceat(pts, starts)[:len(starts)])        # (runs, 2)
        area = span.prod(axis=1)
        assert area.mean() < 4 * size / n                               # a k-d cell each
    shuffled = z[rng.permutation(n)][:16]                               # what random order gives
    assert np.ptp(shuffled, axis=0).prod() > 20 * 16 / n


def test_runs_nest_only_with_powers_of_the_fanout() -> None:
    assert runs(256, 10_000) == (16, 256, 4096)
    assert runs(100, 100) == (16,)                                       # one block: any side
    assert runs(100, 1000) == ()                                         # 100 is no power of 16
    assert runs(16, 16) == ()


def test_hierarchy_masses_centroids_and_radii_are_exact() -> None:
    x, y, a, b = _clouds(2, 1000, 700, seed=2)
    cost, rows, cols = PointCloudCost(x, y, scale=2.0).reordered((256, 256),
                                                               (runs(256, 1000), runs(256, 700)))
    problem = make_problem(cost.shape, a[rows], b[cols], 1e-3)
    levels = hierarchy(cost, problem)
    assert [lv.size for lv in levels] == [16]               # 256-clusters: 4 < 8 on a side
    for lv in levels:
        np.testing.assert_allclose(lv.problem.a.sum(), 1.0)
        np.testing.assert_allclose(lv.problem.b.sum(), 1.0)
        radius = 0.0
        for pts, w, centre in ((cost.x, problem.a[:, 0], lv.cost.x),
                               (cost.y, problem.b[:, 0], lv.cost.y)):
            idx = np.arange(len(pts)) // lv.size
            mean = np.add.reduceat(pts * w[:, None], np.arange(0, len(pts), lv.size))
            mean /= np.add.reduceat(w, np.arange(0, len(pts), lv.size))[:, None]
            np.testing.assert_allclose(centre, mean)
            radius += np.sqrt(((pts - centre[idx]) ** 2).sum(axis=1)).max()
        assert lv.radius == pytest.approx(radius)
        xi, yj = cost.x[:, None, :], cost.y[None, :, :]
        exact = ((xi - yj) ** 2).sum(axis=2) / 2.0                      # (n, m) points' costs
        coarse = lv.cost.rows(0, lv.cost.shape[0])[np.arange(1000) // 16][:, np.arange(700) // 16]
        s = math.sqrt(1e-3 * 2.0)                # the error bound at the plan's length scale
        near = np.sqrt(((lv.cost.x[np.arange(1000) // 16][:, None]
                         - lv.cost.y[np.arange(700) // 16][None]) ** 2).sum(axis=2)) <= s
        assert np.abs(exact - coarse)[near].max() <= lv.error(1e-3) + 1e-12


def _level(radius: float) -> Level:
    cloud = PointCloudCost(np.zeros((2, 1)), np.zeros((2, 1)), scale=1.0)
    return Level(16, cloud, make_problem((2, 2), None, None, 1.0), radius)


def test_assign_gives_coarse_levels_the_large_eps_and_the_points_the_last() -> None:
    levels = [_level(0.01), _level(0.1), _level(1.0)]                   # finest first
    schedule = (10.0, 1.0, 0.1, 0.01, 1e-3, 1e-4)
    plan = assign(levels, schedule)
    assert plan[-1] is None and plan[0] == 2
    coarse = [k for k in plan if k is not None]
    assert coarse == sorted(coarse, reverse=True)                       # never coarser again
    for k, eps in zip(plan, schedule, strict=True):
        if k is not None:
            assert levels[k].fits(eps) and (k == 2 or not levels[k + 1].fits(eps))
    assert assign([_level(0.0)], (1.0, 0.1)) == [0, None]              # coincident points
    assert assign([_level(5.0)], (1.0, 0.1)) == [None, None]            # too wide for any


def test_extending_exact_clusters_gives_the_points_solution() -> None:
    # clusters of 16 identical points: the clusters' problem is the points' problem, so
    # the extended potentials satisfy the points' marginals as well as the clusters' do
    rng = np.random.default_rng(4)
    cx, cy = rng.random((12, 2)), rng.random((10, 2))
    x, y = np.repeat(cx, FANOUT, axis=0), np.repeat(cy, FANOUT, axis=0)
    a, b = rng.random(len(x)) + 0.1, rng.random(len(y)) + 0.1
    a, b = a / a.sum(), b / b.sum()
    A = np.add.reduceat(a, np.arange(0, len(x), FANOUT))
    B = np.add.reduceat(b, np.arange(0, len(y), FANOUT))
    coarse = bigsink.solve(PointCloudCost(cx, cy), A, B, eps=0.05, tol=1e-12, progress=False)
    f = extend(coarse.f[:, None], a[:, None], A[:, None], FANOUT, 0.05)[:, 0]
    g = extend(coarse.g[:, None], b[:, None], B[:, None], FANOUT, 0.05)[:, 0]
    C = ((x[:, None] - y[None]) ** 2).sum(axis=2)
    P = np.exp((f[:, None] + g[None] - C) / 0.05)
    np.testing.assert_allclose(P.sum(axis=1), a, atol=1e-11)
    np.testing.assert_allclose(P.sum(axis=0), b, atol=1e-11)


def test_cost_range_bounds_every_entry() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(80, 3)), rng.normal(2.0, 1.0, size=(70, 3))
    for metric, p in (("sqeuclidean", 2.0), ("euclidean", 2.0), ("minkowski", 1.0),
                      ("minkowski", math.inf)):
        cost = PointCloudCost(x, y, metric, p=p, scale=3.0)
        C = cost.rows(0, 80)
        lo, hi = cost.cost_range()
        assert lo <= C.min() and C.max() <= hi <= 2 * C.max()


def test_multiscale_arguments_and_where_it_does_not_apply(tmp_path: Path) -> None:
    C = np.random.default_rng(0).random((40, 30))
    with pytest.raises(InputError, match="multiscale=True needs a point-cloud cost"):
        bigsink.solve(C, eps=0.1, multiscale=True, progress=False)
    with pytest.raises(InputError, match="multiscale must be None"):
        bigsink.solve(C, eps=0.1, multiscale="yes", progress=False)
    x, y, a, b = _clouds(2, 400, 300)
    odd = PointCloudCost(x, y, block_shape=(50, 40))      # blocks that clusters cannot nest in
    r = bigsink.solve(odd, a, b, eps=1e-2, multiscale=True, progress=False)
    assert r.levels == () and "not powers of 16" in r.multiscale
    cloud = PointCloudCost(x, y, scale=2.0)
    kw: dict[str, Any] = dict(eps=2e-3, eps_scaling=True, progress=False, multiscale=True)
    staged = bigsink.solve(cloud, a, b, **kw)
    warm = bigsink.solve(cloud, a, b, init=(staged.f, staged.g), **kw)
    assert warm.levels == () and "starts from the given potentials" in warm.multiscale
    single = bigsink.solve(cloud, a, b, eps=1e-2, progress=False, multiscale=True)
    assert single.levels == () and "none of the 1 cluster levels fits" in single.multiscale
    # the summary names the levels, and a saved result keeps them
    assert staged.levels and "clusters: eps" in staged.summary()
    back = bigsink.load_result(staged.save(tmp_path / "r.zarr"))
    assert back.levels == staged.levels and back.multiscale == staged.multiscale


def test_a_multiscale_solve_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    x, y, a, b = _clouds(2, 600, 500, seed=8)
    cost = PointCloudCost(x, y, scale=2.0)
    kw: dict[str, Any] = dict(eps=1e-3, eps_scaling=True, tol=1e-7, progress=False,
                              multiscale=True, checkpoint=tmp_path / "ck", checkpoint_every=5)
    with pytest.warns(bigsink.ConvergenceWarning):
        stopped = bigsink.solve(cost, a, b, max_iter=40, **kw)      # the points' stages cut
    assert stopped.levels and not stopped.converged
    resumed = bigsink.solve(cost, a, b, resume=True, **kw)        # the same cost range
    whole = bigsink.solve(cost, a, b, eps=1e-3, eps_scaling=True, tol=1e-7, progress=False,
                          multiscale=True)
    assert resumed.converged and resumed.levels == ()          # the clusters ran before
    np.testing.assert_allclose(resumed.transport_cost, whole.transport_cost, rtol=1e-6)
