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
    x, y = _line(300, 300, seed=3)
    cost = bigsink.PointCloudCost(x, y, block_shape=(25, 25))
    C = cost.rows(0, 300)
    eps, theta = 1e-3, 1e-6
    problem = make_problem(C.shape, None, None, eps)
    session = LocalExecutor(threads=1).open(cost, 1)
    step = TruncatedStep(session, problem, eps, theta,
                         BlockBounds(C.shape, (25, 25), cost.block_min()))
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
