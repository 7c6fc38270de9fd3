"""Certified block truncation (TruncatedStep): the same answers as dense solves, a bound the
skipped mass never exceeds, and no skipping where nothing is negligible."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bigsink
from bigsink.executors import LocalExecutor
from bigsink.executors.dask import DaskExecutor
from bigsink.problem import make_problem
from bigsink.solver.steps import BlockBounds, TruncatedStep


def _line(n: int = 400, m: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-D points in sorted order (blocks are intervals: the plan lives near the diagonal)."""
    rng = np.random.default_rng(seed)
    x, y = np.sort(rng.random(n)), np.sort(rng.beta(2, 3, m))
    return x[:, None], y[:, None]


def _banded(seed: int, threads: int) -> tuple[Any, np.ndarray, Any, Any, BlockBounds]:
    """A 300 x 300 sorted-line cloud in 25 x 25 blocks at eps 1e-3, a session over it and
    its block bounds: ``(cost, C, problem, session, bounds)`` for the step-level tests."""
    x, y = _line(300, 300, seed=seed)
    cost = bigsink.PointCloudCost(x, y, block_shape=(25, 25))
    C = cost.rows(0, 300)
    problem = make_problem(C.shape, None, None, 1e-3)
    session = LocalExecutor(threads=threads).open(cost, 1)
    return cost, C, problem, session, BlockBounds(C.shape, (25, 25), cost.block_min())


@pytest.mark.parametrize("eps", [1e-1, 1e-2, 1e-3, 1e-4])
@pytest.mark.parametrize(("rho", "K"), [(math.inf, 1), (0.5, 1), (math.inf, 3)])
def test_truncated_and_dense_solves_agree(eps: float, rho: float, K: int) -> None:
    x, y = _line()
    cost = bigsink.PointCloudCost(x, y, block_shape=(40, 30))
    rng = np.random.default_rng(1)
    a, b = rng.random((400, K)) + 0.5, rng.random((300, K)) + 0.5
    a, b = a / a.sum(0), b / b.sum(0)
    kw = dict(eps=eps, rho=rho, tol=1e-7, progress=False, max_iter=50_000)
    dense = bigsink.solve(cost, a, b, resident_kernel=False, **kw)
    cut = bigsink.solve(cost, a, b, truncate=True, **kw)
    assert cut.converged == dense.converged and cut.converged
    np.testing.assert_allclose(cut.transport_cost, dense.transport_cost, rtol=1e-6)
    assert cut.truncation_bound <= 1e-8 + 1e-20                     # theta = tol / 10
    if eps <= 1e-3:                                  # blocks skipped, more at smaller eps
        assert cut.active_fraction < (0.75 if eps == 1e-3 else 0.5)
    assert dense.active_fraction is None and dense.truncation_bound is None


def test_every_cost_source_and_dask(tmp_path: Path, dask_client: Any) -> None:
    x, y = _line(240, 200, seed=2)
    cloud = bigsink.PointCloudCost(x, y, block_shape=(30, 25))
    C = cloud.rows(0, 240)
    store = bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(30, 25), dtype="float64",
                               progress=False)
    ref = bigsink.solve(C, eps=1e-3, tol=1e-8, progress=False, resident_kernel=False)
    for name, cost in (("dense", bigsink.DenseCost(C, (30, 25))), ("cloud", cloud),
                       ("zarr", store)):
        for where, ex in (("local", LocalExecutor(threads=2)),
                          ("dask", DaskExecutor(dask_client))):
            res = bigsink.solve(cost, eps=1e-3, tol=1e-8, progress=False, truncate=True,
                                executor=ex)
            assert res.converged, (name, where)
            assert res.transport_cost == pytest.approx(ref.transport_cost, rel=1e-7)
            assert res.active_fraction < 0.7, (name, where, res.active_fraction)


def test_the_skipped_mass_never_exceeds_the_reported_bound() -> None:
    _, C, problem, session, bounds = _banded(seed=3, threads=1)
    eps, theta = 1e-3, 1e-6
    step = TruncatedStep(session, problem, eps, theta, bounds)
    f, g = np.zeros((300, 1)), np.zeros((300, 1))
    seen = []
    for _ in range(40):
        f, g = step.step(f, g, 1.0)
        assert step.active is not None
        P = np.exp((f + g.T - C) / eps)                              # (n, m) dense plan
        cut = ~np.kron(step.active, np.ones((25, 25), dtype=bool))  # the skipped entries
        skipped_rows = np.abs(np.where(cut, P, 0.0).sum(1)).sum()    # L1 change of P 1
        skipped_cols = np.abs(np.where(cut, P, 0.0).sum(0)).sum()
        assert max(skipped_rows, skipped_cols) <= step.bound * (1 + 1e-9) + 1e-300
        assert step.bound <= theta
        seen.append(step.fraction)
    session.close()
    assert min(seen) < 0.5


def test_a_random_cost_keeps_every_block_and_the_same_answer() -> None:
    rng = np.random.default_rng(4)
    C = rng.random((200, 150))
    dense = bigsink.solve(bigsink.DenseCost(C, (20, 15)), eps=0.05, tol=1e-9, progress=False,
                          resident_kernel=False)
    cut = bigsink.solve(bigsink.DenseCost(C, (20, 15)), eps=0.05, tol=1e-9, progress=False,
                        truncate=True)
    assert cut.active_fraction > 0.99
    assert cut.transport_cost == pytest.approx(dense.transport_cost, rel=1e-12)
    assert "truncation" in cut.summary()


def test_truncation_arguments_are_checked() -> None:
    C = np.random.default_rng(5).random((20, 20))
    with pytest.raises(bigsink.InputError, match="resident_kernel=True"):
        bigsink.solve(C, eps=0.1, truncate=True, resident_kernel=True)
    with pytest.raises(bigsink.InputError, match="truncate=None or True"):
        bigsink.solve(C, eps=0.1, truncate=False, theta=1e-7)
    with pytest.raises(bigsink.InputError, match="theta"):
        bigsink.solve(C, eps=0.1, truncate=True, theta=-1.0)
    with pytest.raises(bigsink.InputError, match="truncate"):
        bigsink.solve(C, eps=0.1, truncate="yes")


def test_block_rows_split_across_strips_and_chunks() -> None:
    """Blocks taller than a strip's chunk: each block row's statistics come from several
    pieces and are merged, not duplicated."""
    x, y = _line(300, 200, seed=6)
    cost = bigsink.PointCloudCost(x, y, block_shape=(150, 50))
    ex = LocalExecutor(threads=2, strip_bytes=1)                    # 1-row chunks
    dense = bigsink.solve(cost, eps=1e-3, tol=1e-8, progress=False, resident_kernel=False)
    cut = bigsink.solve(cost, eps=1e-3, tol=1e-8, progress=False, truncate=True, executor=ex)
    assert cut.converged
    assert cut.transport_cost == pytest.approx(dense.transport_cost, rel=1e-7)


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "minkowski"])
def test_clouds_in_random_order_are_solved_in_spatial_order_and_handed_back(
        metric: str) -> None:
    """A cloud in random order is solved in k-d order; potentials, marginals and plan come
    back in the user's order (non-uniform weights would not match otherwise)."""
    rng = np.random.default_rng(7)
    x, y = rng.random((700, 2)), rng.random((600, 2)) * 0.8 + 0.1
    a, b = rng.random(700) + 0.2, rng.random(600) + 0.2
    a, b = a / a.sum(), b / b.sum()
    cost = bigsink.PointCloudCost(x, y, metric, p=1.0 if metric == "minkowski" else 2.0,
                                  block_shape=(50, 40))
    kw: dict[str, Any] = dict(eps=1e-3, tol=1e-8, progress=False)
    dense = bigsink.solve(cost, a, b, truncate=False, resident_kernel=False, **kw)
    cut = bigsink.solve(cost, a, b, truncate=True, **kw)
    assert cut.converged and cut.active_fraction < 0.6
    assert cut.cost is cost                                  # the user's cost, user's order
    shift = np.mean(cut.f - dense.f)                         # potentials: up to a constant
    np.testing.assert_allclose(cut.f - shift, dense.f, atol=1e-8)
    np.testing.assert_allclose(cut.g + shift, dense.g, atol=1e-8)
    P = cut.plan()
    assert np.abs(P.sum(1) - a).sum() <= 1e-8 and np.abs(P.sum(0) - b).sum() <= 1e-8
    assert cut.transport_cost == pytest.approx(dense.transport_cost, rel=1e-9)


def test_spatial_order_makes_compact_blocks_and_box_bounds_hold() -> None:
    from bigsink.costs.pointcloud import spatial_order

    rng = np.random.default_rng(8)
    starts = np.arange(0, 1000, 64)

    def extent(p: np.ndarray) -> float:
        lo, hi = np.minimum.reduceat(p, starts), np.maximum.reduceat(p, starts)
        return float((hi - lo).mean())                           # mean side of the boxes

    for d in (1, 2, 3, 10):
        z = rng.random((1000, d))
        order = spatial_order(z, 64)
        assert sorted(order.tolist()) == list(range(1000))   # a permutation

        assert extent(z[order]) < (0.5 if d <= 3 else 0.9) * extent(z)   # compact blocks
    x, y = rng.random((500, 3)), rng.random((400, 3))
    for metric, p in (("sqeuclidean", 2.0), ("euclidean", 2.0), ("minkowski", 1.0),
                      ("minkowski", 3.0), ("minkowski", math.inf)):
        cost, _, _ = bigsink.PointCloudCost(x, y, metric, p=p, dtype="float32",
                                            block_shape=(50, 40)).reordered((50, 40))
        C = cost.rows(0, 500)
        least = np.minimum.reduceat(np.minimum.reduceat(C, np.arange(0, 500, 50), 0),
                                    np.arange(0, 400, 40), 1)
        assert np.all(cost.block_min() <= least), metric
        assert (cost.block_min() > 0).mean() > 0.3                # and says something


def test_stores_with_and_without_bounds_read_only_active_chunks(tmp_path: Path) -> None:
    """A store written by write_cost has its chunks' least costs; a store without them
    still truncates (the first pass reads all). A chunk never read is proven unread: its
    file is replaced by garbage of the wrong size, which any read would refuse."""
    import zarr

    x, y = _line(300, 250, seed=9)
    store = bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(30, 25), dtype="float64",
                               progress=False)
    assert store.block_min() is not None and store.block_min().shape == (10, 10)
    C = store.rows(0, 300)
    ref = bigsink.solve(C, eps=1e-4, tol=1e-8, progress=False, resident_kernel=False)
    cut = bigsink.solve(store, eps=1e-4, tol=1e-8, progress=False, truncate=True)
    assert cut.converged and cut.active_fraction < 0.4
    assert cut.transport_cost == pytest.approx(ref.transport_cost, rel=1e-7)
    bare = tmp_path / "bare.zarr"
    bigsink.write_cost(x, y, bare, chunks=(30, 25), dtype="float64", progress=False)
    arr = zarr.open_array(str(bare), mode="r+")
    del arr.attrs["block_min"]
    no_bounds = bigsink.ZarrCost(bare)
    assert no_bounds.block_min() is None
    res = bigsink.solve(no_bounds, eps=1e-4, tol=1e-8, progress=False, truncate=True)
    assert res.converged
    assert res.transport_cost == pytest.approx(ref.transport_cost, rel=1e-7)
    # the corner chunk (0, 9) is far from the diagonal: never read by a truncated strip
    key = arr.metadata.chunk_key_encoding.encode_chunk_key((0, 9))
    (bare / key).write_bytes(b"not a chunk")
    mask = np.zeros(10, dtype=bool)
    mask[:3] = True
    strip = bigsink.ZarrCost(bare).rows_in(0, 30, mask)    # only those chunks, compact
    np.testing.assert_array_equal(strip.cols, np.arange(75))
    np.testing.assert_array_equal(strip.data, C[:30, :75])
    mask[5] = True
    np.testing.assert_array_equal(bigsink.ZarrCost(bare).rows_in(0, 30, mask).data,
                                  C[:30, np.r_[0:75, 125:150]])
    with pytest.raises(bigsink.InputError, match="truncated"):
        bigsink.ZarrCost(bare).rows(0, 30)                   # a full read does see it


def test_history_verify_and_the_reported_bound() -> None:
    x, y = _line(400, 300, seed=10)
    cost = bigsink.PointCloudCost(x, y, block_shape=(40, 30))
    cut = bigsink.solve(cost, eps=1e-4, tol=1e-7, progress=False, truncate=True)
    exact = bigsink.solve(cost, eps=1e-4, tol=1e-7, progress=False, truncate=True,
                          verify=True)
    assert cut.history.active[0] == 1.0 and cut.history.active[-1] == cut.active_fraction
    assert cut.history.active.min() < 0.5
    # the truncated evaluation's error includes the skipped blocks' bound: never below the
    # exact error of the same potentials
    P = cut.plan()
    exact_row = np.abs(P.sum(1) - 1 / 400).sum()
    # (plan() forms C as |x|^2 + |y|^2 - 2 x.y, the kernels by differences: 1e-13 apart)
    assert exact_row - 1e-13 <= cut.marginal_error.row
    assert cut.marginal_error.row <= exact_row + cut.truncation_bound + 1e-13
    Pv = exact.plan()
    assert exact.marginal_error.row == pytest.approx(np.abs(Pv.sum(1) - 1 / 400).sum(),
                                                     rel=1e-6, abs=1e-14)
    assert "truncation" in cut.summary()


def test_history_round_trips_and_old_checkpoints_load(tmp_path: Path) -> None:
    import zarr

    x, y = _line(200, 150, seed=11)
    cost = bigsink.PointCloudCost(x, y, block_shape=(20, 15))
    res = bigsink.solve(cost, eps=1e-3, tol=1e-7, progress=False, truncate=True,
                        checkpoint=tmp_path / "ck", checkpoint_every=5)
    res.save(tmp_path / "r.zarr")
    back = bigsink.load_result(tmp_path / "r.zarr")
    np.testing.assert_array_equal(back.history.active, res.history.active)
    group = zarr.open_group(str(tmp_path / "ck"), mode="r+")
    hist = np.asarray(group["history"][...])
    assert hist.shape[1] == 4
    del group["history"]                                     # as an older version wrote it
    group.create_array("history", data=np.ascontiguousarray(hist[:, :3]))
    again = bigsink.solve(cost, eps=1e-3, tol=1e-7, progress=False, truncate=True,
                          checkpoint=tmp_path / "ck", resume=True)
    assert again.converged


def test_auto_truncation_only_where_it_pays() -> None:
    from bigsink.costs import BlockGrid
    from bigsink.solver.config import Placement, SinkhornConfig, truncating

    class Grid:
        def __init__(self, n: int, m: int, block: tuple[int, int]) -> None:
            self.shape, self.grid = (n, m), BlockGrid((n, m), block)

    auto, log, kept = (SinkhornConfig.make(), Placement("log domain", "test"),
                       Placement("resident", "test", np.dtype("float32")))
    big = Grid(8192, 4096, (1024, 1024))
    assert truncating(auto, log, big)                        # type: ignore[arg-type]
    assert not truncating(auto, kept, big)                   # type: ignore[arg-type]
    assert not truncating(auto, log, Grid(8192, 4096, (512, 4096)))  # type: ignore[arg-type]
    assert not truncating(auto, log, Grid(1000, 1000, (100, 100)))   # type: ignore[arg-type]
    assert truncating(SinkhornConfig.make(truncate=True, resident_kernel=False), log,
                      Grid(10, 10, (5, 5)))                  # type: ignore[arg-type]
    assert not truncating(SinkhornConfig.make(truncate=False), log, big)  # type: ignore[arg-type]


def test_the_block_sparse_kernel_keeps_only_kept_blocks_and_stays_certified() -> None:
    """SparseScalingStep: after its log-domain warm-up, a kernel over the kept blocks only
    (fewer entries than n m), the skipped mass within the reported bound at every pass;
    over its room it breaks down (None) for the Fallback to take over."""
    from bigsink.kernels.scaling import BlockKernel
    from bigsink.solver.steps import WARMUP, SparseScalingStep

    _, C, problem, session, bounds = _banded(seed=12, threads=2)
    eps, theta = 1e-3, 1e-6
    f, g = np.zeros((300, 1)), np.zeros((300, 1))
    errors = []
    step = SparseScalingStep(session, problem.a, problem.b, eps, np.dtype("float64"), f, g,
                             theta=theta, bounds=bounds,
                             warmup=TruncatedStep(session, problem, eps, theta, bounds))
    for it in range(60):
        out = step.step(f, g, 1.0)
        assert out is not None
        f, g = out
        P = np.exp((f + g.T - C) / eps)
        errors.append(np.abs(P.sum(1) - 1 / 300).sum())
        cut = ~np.kron(step.kept, np.ones((25, 25), dtype=bool))
        skipped = max(np.where(cut, P, 0.0).sum(1).sum(), np.where(cut, P, 0.0).sum(0).sum())
        assert skipped <= step.bound * (1 + 1e-6) + 1e-300 and step.bound <= theta
        if it >= WARMUP:
            assert step.held is not None
            kernel = step.held[0].obj
            assert isinstance(kernel, BlockKernel)
            assert kernel.entries == bounds.sizes[step.kept].sum() < 300 * 300
    assert step.kept.mean() < 0.5
    assert errors[-1] < 0.5 * errors[WARMUP]                 # it iterates
    step.close()
    tight = SparseScalingStep(session, problem.a, problem.b, eps, np.dtype("float64"), f, g,
                              budget=1, theta=theta, bounds=bounds,
                              warmup=TruncatedStep(session, problem, eps, theta, bounds))
    results = [tight.step(f, g, 1.0) for _ in range(WARMUP + 1)]
    assert all(r is not None for r in results[:WARMUP]) and results[-1] is None
    session.close()


def test_select_blocks_is_the_cheapest_first_greedy() -> None:
    from bigsink.solver.steps import select_blocks

    rng = np.random.default_rng(7)
    for trial in range(20):
        log_u = rng.normal(-25.0, 8.0, size=(30, 40, 1 + trial % 2))
        log_u[rng.random(log_u.shape) < 0.1] = -np.inf                  # massless blocks
        theta = 10.0 ** rng.uniform(-12, -4)
        worst = log_u.max(axis=2).ravel()
        order = np.argsort(worst, kind="stable")
        skipped = np.cumsum(np.exp(worst[order])) <= theta              # the greedy, whole
        expected = np.ones(worst.size, dtype=bool)
        expected[order[skipped]] = False
        expected = expected.reshape(30, 40)
        expected[np.arange(30), log_u.max(axis=2).argmax(axis=1)] = True
        expected[log_u.max(axis=2).argmax(axis=0), np.arange(40)] = True
        np.testing.assert_array_equal(select_blocks(log_u, theta), expected)
