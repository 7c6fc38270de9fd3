"""Fused point-cloud kernels (bigsink.kernels.cloud) against materialised strips, whole
solves against today's materialised path, and the kernel's placement."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bigsink
import bigsink.kernels as dispatch
from bigsink.bench.cloud import Materialised  # today's path: every strip formed by rows
from bigsink.costs import CloudStrip, PointCloudCost, read_strip
from bigsink.executors import LocalExecutor
from bigsink.kernels import cloud, reference

METRICS = [("sqeuclidean", 2.0), ("euclidean", 2.0), ("minkowski", 1.0),
           ("minkowski", math.inf), ("minkowski", 2.0), ("minkowski", 3.5)]
RTOL = {"float64": 1e-12, "float32": 1e-5}


def direct(x: np.ndarray, y: np.ndarray, metric: str, p: float, scale: float,
           dtype: str) -> np.ndarray:
    """The cost matrix from coordinate differences, independently of bigsink."""
    diff = np.abs(x[:, None, :] - y[None, :, :])                        # (r, m, d)
    if metric == "sqeuclidean":
        c = (diff**2).sum(-1)
    elif metric == "euclidean" or p == 2:
        c = np.sqrt((diff**2).sum(-1))
    elif math.isinf(p):
        c = diff.max(-1)
    else:
        c = (diff**p).sum(-1) ** (1 / p)
    return (c / scale).astype(dtype)


def close(a: Any, b: Any, rtol: float) -> None:
    """``a`` and ``b`` agree to ``rtol`` relative to the larger magnitude of ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.abs(b[np.isfinite(b)]).max(initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("d", [1, 2, 3, 10, 64])
@pytest.mark.parametrize(("metric", "p"), METRICS)
def test_fused_kernels_match_materialised_strips(metric: str, p: float, d: int,
                                                 dtype: str) -> None:
    rng = np.random.default_rng(d)
    n, m = 41, 53
    x, y = rng.random((n, d)), rng.random((m, d))
    cost = PointCloudCost(x, y, metric, p=p, scale=1.7, dtype=dtype)
    rtol = RTOL[dtype]
    for r0, r1, K, tau, omega in ((0, n, 1, 1.0, 1.0), (5, 6, 3, 0.8, 1.3),
                                  (3, 40, 2, 1.0, 1.6)):          # strips, batches, unbalanced
        strip = cost.strip(r0, r1)
        C = direct(x[r0:r1], y, metric, p, 1.7, dtype)
        close(cloud.cost_rows(strip), C, rtol)
        la = np.log(rng.random((r1 - r0, K)) + 0.1)
        f, g = rng.normal(size=(r1 - r0, K)) * 0.1, rng.normal(size=(m, K)) * 0.1
        out = dispatch.sinkhorn_strip(strip, r0, la, f, g, 0.07, tau, omega)
        ref = reference.sinkhorn_strip(C, r0, la, f, g, 0.07, tau, omega)
        close(out[0], ref[0], rtol)                                  # f rows
        close(reference.pair_to_lse(out[1]), reference.pair_to_lse(ref[1]), rtol)  # columns
        rows, (cols, pc) = dispatch.evaluate_strip(strip, r0, f, g, 0.07)
        rows0, (cols0, pc0) = reference.evaluate_strip(C, r0, f, g, 0.07)
        for a, b in ((rows, rows0), (cols, cols0), (pc, pc0)):
            close(a, b, rtol)
        lo, hi, bad, first = dispatch.scan_strip(strip, r0)[1]
        own = cloud.cost_rows(strip)                                 # the kernels' own costs
        assert (lo, hi, bad, first) == (float(own.min()), float(own.max()), 0, -1)
        close([lo, hi], [C.min(), C.max()], rtol)


@pytest.mark.parametrize(("metric", "p"), METRICS)
def test_blocks_and_slices_of_a_cloud_strip(metric: str, p: float) -> None:
    rng = np.random.default_rng(7)
    x, y = rng.random((30, 3)), rng.random((17, 3))
    cost = PointCloudCost(x, y, metric, p=p, block_shape=(7, 5))
    strip = cost.strip(4, 30)
    part = strip[3:9]                                             # an executor's chunk
    assert isinstance(part, CloudStrip) and part.shape == (6, 17)
    close(cloud.cost_rows(part), direct(x[7:13], y, metric, p, 1.0, "float64"), 1e-12)
    close(strip[2:5, ...].materialise(), direct(x[6:9], y, metric, p, 1.0, "float64"), 1e-12)
    for i, j in ((0, 0), (2, 3), (4, 3)):                          # blocks, ragged edges too
        (r0, r1), (c0, c1) = cost.grid.row_range(i), cost.grid.col_range(j)
        close(cost.block(i, j), direct(x[r0:r1], y[c0:c1], metric, p, 1.0, "float64"), 1e-12)


def test_chebyshev_is_the_max_coordinate_difference() -> None:
    """Minkowski p = inf is the Chebyshev distance (it was once summed with p = inf)."""
    x, y = np.array([[0.0, 0.0], [1.0, 3.0]]), np.array([[2.0, 1.0]])
    cost = PointCloudCost(x, y, "minkowski", p=math.inf)
    np.testing.assert_array_equal(cost.rows(0, 2), [[2.0], [2.0]])
    np.testing.assert_array_equal(cloud.cost_rows(cost.strip(0, 2)), [[2.0], [2.0]])


def test_the_executor_hands_kernels_points_not_matrices() -> None:
    cost = PointCloudCost(np.random.default_rng(1).random((50, 2)), np.zeros((40, 2)))
    assert isinstance(read_strip(cost, 0, 10), CloudStrip)
    assert isinstance(read_strip(Materialised(cost), 0, 10), np.ndarray)
    assert dispatch.runs_whole(dispatch.sinkhorn_strip, cost.strip(0, 50))
    assert dispatch.runs_whole(dispatch.scan_strip, cost.strip(0, 50))
    assert not dispatch.runs_whole(dispatch.plan_strip, cost.strip(0, 50))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("metric", "p", "rho", "K"), [
    ("sqeuclidean", 2.0, math.inf, 1), ("euclidean", 2.0, 0.5, 1),
    ("minkowski", math.inf, math.inf, 3), ("minkowski", 1.0, math.inf, 1)])
def test_whole_solves_agree_with_the_materialised_path(metric: str, p: float, rho: float,
                                                       K: int, dtype: str) -> None:
    rng = np.random.default_rng(11)
    x, y = rng.random((120, 2)), rng.random((90, 2))
    a, b = rng.random((120, K)) + 0.1, rng.random((90, K)) + 0.1
    a, b = a / a.sum(0), b / b.sum(0)
    cost = PointCloudCost(x, y, metric, p=p, dtype=dtype)
    tol = 1e-9 if dtype == "float64" else 1e-6
    kw = dict(eps=5e-3, rho=rho, tol=tol, progress=False, resident_kernel=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bigsink.PrecisionWarning)
        fused = bigsink.solve(cost, a, b, **kw)
        today = bigsink.solve(Materialised(cost), a, b, **kw)
    assert fused.converged and today.converged
    assert fused.placement.startswith("recompute") and today.placement.startswith("log domain")
    rel = 1e-7 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(fused.transport_cost, today.transport_cost, rtol=rel)
    np.testing.assert_allclose(fused.f, today.f, rtol=rel, atol=rel)


def test_plans_of_a_cloud_go_through_its_kernels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x, y = rng.random((60, 2)), rng.random((45, 2))
    cost = PointCloudCost(x, y, "minkowski", p=math.inf, block_shape=(16, 45))
    res = bigsink.solve(cost, eps=0.02, tol=1e-9, progress=False)
    C = direct(x, y, "minkowski", math.inf, 1.0, "float64")
    P = np.exp((res.f[:, None] + res.g[None, :] - C) / res.eps)
    marg = bigsink.plan_marginals(res, cost, executor=LocalExecutor(threads=2))
    close(marg.rows, P.sum(1), 1e-12)
    close(marg.cols, P.sum(0), 1e-12)
    top = bigsink.plan_topk(res, cost, 3)
    np.testing.assert_array_equal(top.indices, np.argsort(-P, axis=1, kind="stable")[:, :3])
    path = bigsink.write_plan(res, cost, tmp_path / "P.zarr")
    import zarr

    close(zarr.open_array(path, mode="r")[...], P, 1e-12)


def test_placement_is_visible_for_a_kernel_that_fits_and_one_that_does_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    cost = PointCloudCost(rng.random((200, 2)), rng.random((150, 2)))
    fits = bigsink.solve(cost, eps=0.05, progress=False)
    assert fits.placement.startswith("resident: the float32 kernel")
    assert "recomputing the cloud's costs" in fits.placement
    assert "kernel           resident" in fits.summary()
    from bigsink.executors import local

    monkeypatch.setattr(local, "kernel_budget", lambda: 1000)       # 1000 bytes of room
    big = bigsink.solve(cost, eps=0.05, progress=False)
    assert big.placement.startswith("recompute: the kernel")
    assert "exceeds 40% of memory" in big.placement
    assert big.transport_cost == pytest.approx(fits.transport_cost, rel=1e-6)
    stored = bigsink.solve(cost.rows(0, 200), eps=0.05, progress=False)
    assert stored.placement.startswith("log domain: the kernel")   # nothing to recompute
    from bigsink.cli import main

    monkeypatch.undo()
    np.save(tmp_path / "C.npy", cost.rows(0, 200))
    assert main(["solve", str(tmp_path / "C.npy"), "--eps", "0.1", "--out",
                 str(tmp_path / "r.zarr"), "--json", "--quiet"]) == 0
    assert '"placement": "resident: the float32 kernel' in capsys.readouterr().out
