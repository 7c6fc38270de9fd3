"""The plan as an operator (bigsink.operators, SinkhornResult.apply / map_* / grad_*) against
the dense plan, for every cost source and executor; relative eps; warm starts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bigsink
from bigsink.executors import LocalExecutor
from bigsink.executors.dask import DaskExecutor


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, y = rng.random((70, 2)), rng.random((55, 2))
    a, b = rng.random(70) + 0.1, rng.random(55) + 0.1
    return x, y, a / a.sum(), b / b.sum()


def _sources(x: np.ndarray, y: np.ndarray, tmp: Path) -> dict[str, Any]:
    C = bigsink.PointCloudCost(x, y).rows(0, len(x))
    return {
        "dense": C,
        "dense-float32": C.astype(np.float32),
        "pointcloud": bigsink.PointCloudCost(x, y, block_shape=(16, 55)),
        "zarr": bigsink.write_cost(x, y, tmp / "C.zarr", chunks=(16, 55), dtype="float64",
                                   progress=False),
    }


def test_apply_matches_the_dense_plan_for_every_source_and_executor(
    tmp_path: Path, dask_client: Any,
) -> None:
    x, y, a, b = _problem()
    rng = np.random.default_rng(1)
    v, u = rng.normal(size=(55, 3)), rng.normal(size=70)
    executors = {"local": LocalExecutor(threads=2), "threads1": LocalExecutor(threads=1),
                 "dask": DaskExecutor(dask_client)}
    for name, cost in _sources(x, y, tmp_path).items():
        tol = 1e-6 if name == "dense-float32" else 1e-10
        res = bigsink.solve(cost, a, b, eps=0.03, tol=tol, progress=False)
        assert res.converged
        P = res.plan(cost if name != "zarr" else cost.rows(0, 70))
        rtol = 1e-6 if name == "dense-float32" else 1e-12
        for where, ex in executors.items():
            Pv = res.apply(v, cost, executor=ex)
            Ptu = res.apply(u, cost, axis=0, executor=ex)
            np.testing.assert_allclose(Pv, P @ v, rtol=rtol, atol=1e-15,
                                       err_msg=f"{name} {where}")
            np.testing.assert_allclose(Ptu, P.T @ u, rtol=rtol, atol=1e-15,
                                       err_msg=f"{name} {where}")
            assert Pv.shape == (70, 3) and Ptu.shape == (55,)


def test_batched_apply_and_barycentric_maps() -> None:
    x, y, a, _ = _problem(2)
    rng = np.random.default_rng(3)
    B = rng.random((55, 3)) + 0.1
    B /= B.sum(0)
    cost = bigsink.PointCloudCost(x, y)
    res = bigsink.solve(cost, a, B, eps=0.03, tol=1e-10, progress=False)
    P = res.plan()                                                   # (n, m, K)
    v = rng.random(55)
    np.testing.assert_allclose(res.apply(v), np.einsum("nmk,m->nk", P, v), rtol=1e-12)
    one = bigsink.solve(cost, a, B[:, 1], eps=0.03, tol=1e-10, progress=False)
    T = one.map_sources()                                            # y defaults to the cloud's
    Pk = one.plan()
    np.testing.assert_allclose(T, (Pk @ y) / Pk.sum(1)[:, None], rtol=1e-12)
    np.testing.assert_allclose(one.map_targets(), (Pk.T @ x) / Pk.sum(0)[:, None], rtol=1e-12)
    assert np.all((T >= 0) & (T <= 1))                              # means of target points
    with pytest.raises(bigsink.InputError, match="pass the points"):
        bigsink.solve(Pk * 0 + cost.rows(0, 70), a, eps=0.1, progress=False).map_sources()
    with pytest.raises(bigsink.InputError, match="axis"):
        one.apply(v, axis=2)
    with pytest.raises(bigsink.InputError, match="shape"):
        one.apply(np.ones(54))


def test_relative_eps_follows_otts_definition() -> None:
    x, y, a, b = _problem(4)
    cost = bigsink.PointCloudCost(x, y)
    C = cost.rows(0, 70)
    for rule, stat in (("std", C.std()), ("mean", C.mean())):
        res = bigsink.solve(cost, a, b, eps=f"{rule}:0.05", tol=1e-9, progress=False)
        assert res.eps == pytest.approx(0.05 * stat, rel=1e-12)      # OTT: eps * stat(C)
        assert res.relative_eps.startswith(f"{rule}:0.05")
        absolute = bigsink.solve(cost, a, b, eps=0.05 * stat, tol=1e-9, progress=False)
        assert res.transport_cost == pytest.approx(absolute.transport_cost, rel=1e-9)
    for bad in ("median:0.1", "std:", "std:-1", "std:x"):
        with pytest.raises(bigsink.InputError, match="eps"):
            bigsink.solve(cost, eps=bad)
    with pytest.raises(bigsink.InputError, match="std of C is 0"):
        bigsink.solve(np.ones((4, 5)), eps="std:0.1", progress=False)


def test_warm_start_from_a_result_with_zero_weights_takes_one_iteration() -> None:
    x, y, a, b = _problem(5)
    a[[3, 40]] = 0.0
    b[7] = 0.0
    a, b = a / a.sum(), b / b.sum()
    first = bigsink.solve(bigsink.PointCloudCost(x, y), a, b, eps=0.02, tol=1e-9,
                          progress=False)
    assert np.isneginf(first.f).sum() == 2 and np.isneginf(first.g).sum() == 1
    again = bigsink.solve(bigsink.PointCloudCost(x, y), a, b, eps=0.02, tol=1e-9,
                          progress=False, init=(first.f, first.g))
    assert again.converged and again.n_iter == 1
    bad = first.f.copy()
    bad[0] = -math.inf                                               # a weighted row
    with pytest.raises(bigsink.InputError, match="weight is not 0"):
        bigsink.solve(bigsink.PointCloudCost(x, y), a, b, eps=0.02, init=(bad, None))
