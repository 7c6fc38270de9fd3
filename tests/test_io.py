"""bigsink.io: writing costs, saving results, exporting plans (real Zarr stores, real Dask)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from scipy.spatial.distance import cdist

import bigsink
from bigsink.errors import InputError, NumericalError
from bigsink.executors import LocalExecutor

HAS_DASK_EXECUTOR = importlib.util.find_spec("bigsink.executors.dask") is not None
needs_dask_executor = pytest.mark.skipif(
    not HAS_DASK_EXECUTOR, reason="bigsink.executors.dask (DaskExecutor) not merged yet"
)


def clouds(n: int = 70, m: int = 45, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.random((m, d))


def scipy_cost(x: np.ndarray, y: np.ndarray, metric: str, p: float) -> np.ndarray:
    """The reference cost from SciPy's cdist (independent of bigsink)."""
    if metric == "minkowski":
        return cdist(x, y, "minkowski", p=p)
    return cdist(x, y, metric)


def assert_same_as_pointcloud(cost: Any, x: np.ndarray, y: np.ndarray, metric: str, p: float,
                              scale: float, dtype: str) -> None:
    """Every chunk equals PointCloudCost's block bit for bit; all close to SciPy."""
    ref = bigsink.PointCloudCost(x, y, metric, p=p, scale=scale, dtype=dtype,
                                 block_shape=cost.grid.block_shape)
    nb = ref.grid.n_blocks
    for i in range(nb[0]):
        for j in range(nb[1]):
            np.testing.assert_array_equal(cost.block(i, j), ref.block(i, j))
    rtol = 1e-5 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(cost.rows(0, x.shape[0]), scipy_cost(x, y, metric, p) / scale,
                               rtol=rtol, atol=rtol)


def leftovers(parent: Path) -> list[str]:
    """Temporary names left in ``parent`` by a writer."""
    return [p for p in os.listdir(parent) if ".tmp-" in p or ".old-" in p]


@pytest.mark.parametrize(("metric", "p", "dtype"), [
    ("sqeuclidean", 2.0, "float32"), ("euclidean", 2.0, "float64"), ("minkowski", 3.0, "float64"),
])
def test_write_cost_threads_equals_pointcloud(tmp_path: Path, metric: str, p: float,
                                               dtype: str) -> None:
    x, y = clouds()
    cost = bigsink.write_cost(x, y, tmp_path / "C.zarr", metric, p=p, chunks=(16, 20),
                              dtype=dtype, threads=2, progress=False)
    assert cost.shape == (70, 45) and cost.grid.block_shape == (16, 20)
    assert cost.dtype == np.dtype(dtype)
    assert_same_as_pointcloud(cost, x, y, metric, p, 1.0, dtype)
    attrs = cost.attrs
    assert attrs["metric"] == metric and attrs["p"] == p and attrs["scale"] == 1.0
    assert attrs["x_shape"] == [70, 3] and attrs["y_shape"] == [45, 3]
    full = cost.rows(0, 70)
    assert attrs["min"] == float(full.min()) and attrs["max"] == float(full.max())
    assert zarr.open_array(cost.path).compressors == ()  # uncompressed by default
    assert leftovers(tmp_path) == []


def test_write_cost_scale_max_and_compressors(tmp_path: Path) -> None:
    x, y = clouds(40, 30, 2)
    cost = bigsink.write_cost(x, y, tmp_path / "C.zarr", scale="max", chunks=(7, 9),
                              dtype="float64", progress=False,
                              compressors=zarr.codecs.ZstdCodec(level=1))
    ref = cdist(x, y, "sqeuclidean")
    assert cost.attrs["scale"] == pytest.approx(ref.max(), rel=1e-12)
    assert cost.attrs["max"] == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(cost.rows(0, 40), ref / ref.max(), rtol=1e-10, atol=1e-12)
    assert len(zarr.open_array(cost.path).compressors) == 1


@pytest.mark.dask
def test_write_cost_on_dask_equals_pointcloud(tmp_path: Path, dask_client: Any) -> None:
    x, y = clouds(90, 50, 2, seed=3)
    cost = bigsink.write_cost(x, y, tmp_path / "C.zarr", "euclidean", chunks=(32, 16),
                              dtype="float32", client=dask_client, progress=False)
    assert_same_as_pointcloud(cost, x, y, "euclidean", 2.0, 1.0, "float32")
    # the same through a scheduler address (connects and disconnects itself)
    addr = dask_client.scheduler.address
    again = bigsink.write_cost(x, y, tmp_path / "C2.zarr", "euclidean", chunks=(32, 16),
                               dtype="float32", client=addr, progress=False)
    np.testing.assert_array_equal(again.rows(0, 90), cost.rows(0, 90))
    assert leftovers(tmp_path) == []


def overflowing_clouds() -> tuple[np.ndarray, np.ndarray]:
    """Points whose squared distances overflow float32 in the last row chunk only."""
    x, y = clouds(60, 20, 2)
    x[55] = 1e30  # |x - y|^2 ~ 1e60: finite in float64, inf in float32
    return x, y


def test_write_cost_failure_leaves_nothing(tmp_path: Path) -> None:
    x, y = overflowing_clouds()
    with pytest.raises(NumericalError, match=r"rows 48:60"):
        bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(16, 20), progress=False)
    assert os.listdir(tmp_path) == []
    # an existing array survives a failed overwrite untouched
    good = bigsink.write_cost(*clouds(60, 20, 2), tmp_path / "C.zarr", chunks=(16, 20),
                              progress=False)
    before = good.rows(0, 60).copy()
    with pytest.raises(NumericalError):
        bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(16, 20), overwrite=True,
                           progress=False)
    np.testing.assert_array_equal(bigsink.ZarrCost(tmp_path / "C.zarr").rows(0, 60), before)
    assert os.listdir(tmp_path) == ["C.zarr"]


@pytest.mark.dask
def test_write_cost_failure_on_dask_leaves_nothing(tmp_path: Path, dask_client: Any) -> None:
    x, y = overflowing_clouds()
    with pytest.raises(NumericalError, match="non-finite"):
        bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(16, 20), client=dask_client,
                           progress=False)
    assert os.listdir(tmp_path) == []


def test_write_cost_bad_input(tmp_path: Path) -> None:
    x, y = clouds(10, 8, 2)
    (tmp_path / "C.zarr").mkdir()
    with pytest.raises(InputError, match="already exists"):
        bigsink.write_cost(x, y, tmp_path / "C.zarr")
    with pytest.raises(InputError, match="metric"):
        bigsink.write_cost(x, y, tmp_path / "D.zarr", "cosine")
    with pytest.raises(InputError, match="dimension"):
        bigsink.write_cost(x, y[:, :1], tmp_path / "D.zarr")
    with pytest.raises(InputError, match="parent directory"):
        bigsink.write_cost(x, y, tmp_path / "no" / "D.zarr")
    with pytest.raises(InputError, match="chunks"):
        bigsink.write_cost(x, y, tmp_path / "D.zarr", chunks=(0, 4))
    with pytest.raises(InputError, match="could not reach"):
        bigsink.write_cost(x, y, tmp_path / "D.zarr", client="tcp://127.0.0.1:9")
    assert sorted(os.listdir(tmp_path)) == ["C.zarr"]


# --------------------------------------------------------------------------------------------
# results


def assert_same_result(r: bigsink.SinkhornResult, s: bigsink.SinkhornResult) -> None:
    """Every field equal, with the same types (floats stay floats, arrays stay arrays)."""
    for name in ("f", "g", "transport_cost", "reg_cost", "dual_cost", "mass", "eps", "rho_a",
                 "rho_b", "tol", "seconds", "n_iter", "converged", "eps_stages"):
        u, v = getattr(r, name), getattr(s, name)
        assert type(u) is type(v) or (isinstance(u, np.ndarray) and isinstance(v, np.ndarray)), name
        np.testing.assert_array_equal(u, v, err_msg=name)
    for u, v in zip(r.marginal_error, s.marginal_error, strict=True):
        assert type(u) is type(v) or isinstance(u, np.ndarray)
        np.testing.assert_array_equal(u, v)
    for name in ("iteration", "eps", "error"):
        np.testing.assert_array_equal(getattr(r.history, name), getattr(s.history, name))
    assert r.batched == s.batched


def test_save_load_round_trip(tmp_path: Path, r3_problem: Any) -> None:
    C, a, b = r3_problem
    r = bigsink.solve(C, a, b, eps=1e-2, progress=False)
    where = r.save(tmp_path / "R")
    assert where == str(tmp_path / "R") and leftovers(tmp_path) == []
    s = bigsink.load_result(tmp_path / "R")
    assert_same_result(r, s)
    assert isinstance(s.transport_cost, float)
    np.testing.assert_allclose(s.plan(C), r.plan(), rtol=0, atol=0)
    with pytest.raises(InputError, match="already exists"):
        r.save(tmp_path / "R")
    r.save(tmp_path / "R", overwrite=True)
    assert os.listdir(tmp_path) == ["R"]


def test_save_load_round_trip_batched_unbalanced(tmp_path: Path, r3_problem: Any) -> None:
    C, a, b = r3_problem
    A = np.stack([a, b], axis=1)                                       # (n, 2)
    B = np.stack([b, a], axis=1)
    r = bigsink.solve(C, A, B, eps=5e-2, rho=1.0, progress=False)
    r.save(tmp_path / "R")
    s = bigsink.load_result(tmp_path / "R")
    assert s.batched and s.f.shape == (100, 2) and s.rho_a == 1.0
    assert_same_result(r, s)


def test_load_result_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no saved result"):
        bigsink.load_result(tmp_path / "missing")
    zarr.open_group(tmp_path / "G", mode="w")
    with pytest.raises(InputError, match="not a saved bigsink result"):
        bigsink.load_result(tmp_path / "G")


# --------------------------------------------------------------------------------------------
# plans


@pytest.fixture(scope="module")
def small_solve(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """A 2-D point problem with a Zarr cost of ragged chunks, solved; (cost, result, C)."""
    x, y = clouds(57, 43, 2, seed=5)
    rng = np.random.default_rng(6)
    a, b = rng.random(57) + 0.1, rng.random(43) + 0.1
    a, b = a / a.sum(), b / b.sum()
    cost = bigsink.write_cost(x, y, tmp_path_factory.mktemp("plan") / "C.zarr", chunks=(10, 16),
                              dtype="float64", scale="max", progress=False)
    r = bigsink.solve(cost, a, b, eps=0.05, tol=1e-10, progress=False)
    return cost, r, cost.rows(0, 57)


def test_plan_matches_pot(small_solve: Any) -> None:
    """The plan agrees with POT's log-domain Sinkhorn on the same problem."""
    import ot

    _, r, C = small_solve
    P = r.plan()
    a, b = P.sum(axis=1), P.sum(axis=0)
    P_ot = ot.sinkhorn(a, b, C, 0.05, method="sinkhorn_log", stopThr=1e-13, numItermax=20000)
    np.testing.assert_allclose(P, P_ot, rtol=1e-6, atol=1e-12)


def test_write_plan_equals_dense_plan(tmp_path: Path, small_solve: Any) -> None:
    cost, r, _ = small_solve
    # 10-row kernel calls inside one 57-row strip: each writes part of a chunk, in turn
    ex = LocalExecutor(threads=2, strip_bytes=3 * 8 * 43 * 10)
    assert ex.open(cost, 1).pieces[:2] == [(0, 10), (10, 20)]
    where = bigsink.write_plan(r, cost, tmp_path / "P.zarr", executor=ex)
    arr = zarr.open_array(where)
    assert arr.shape == (57, 43) and arr.chunks[0] == 57
    np.testing.assert_allclose(arr[...], r.plan(), rtol=1e-15, atol=0)
    # the default executor and a loaded result (no cost attached) give the same plan
    r.save(tmp_path / "R")
    again = bigsink.write_plan(bigsink.load_result(tmp_path / "R"), cost.path,
                               tmp_path / "P2.zarr", dtype="float32")
    np.testing.assert_allclose(zarr.open_array(again)[...], r.plan(), rtol=1e-6)
    assert leftovers(tmp_path) == []


def test_write_plan_batched(tmp_path: Path, r3_problem: Any) -> None:
    C, a, b = r3_problem
    r = bigsink.solve(C, np.stack([a, b], 1), np.stack([b, a], 1), eps=0.1, progress=False)
    ex = LocalExecutor(threads=2, strip_bytes=3 * 8 * 100 * 2 * 7)   # 7-row calls
    arr = zarr.open_array(bigsink.write_plan(r, C, tmp_path / "P.zarr", executor=ex))
    assert arr.shape == (100, 100, 2)
    np.testing.assert_allclose(arr[...], r.plan(), rtol=1e-15, atol=0)


def test_write_plan_bad_input(tmp_path: Path, small_solve: Any, r3_problem: Any) -> None:
    _, r, _ = small_solve
    with pytest.raises(InputError, match="shape"):
        bigsink.write_plan(r, r3_problem[0], tmp_path / "P.zarr")
    assert os.listdir(tmp_path) == []


@needs_dask_executor
@pytest.mark.dask
def test_write_plan_on_dask(tmp_path: Path, small_solve: Any, dask_client: Any) -> None:
    cost, r, _ = small_solve
    arr = zarr.open_array(bigsink.write_plan(r, cost, tmp_path / "P.zarr", client=dask_client))
    np.testing.assert_allclose(arr[...], r.plan(), rtol=1e-15, atol=0)
    top = bigsink.plan_topk(r, cost, 4, client=dask_client)
    np.testing.assert_array_equal(top.indices, bigsink.plan_topk(r, cost, 4).indices)


@pytest.mark.parametrize("k", [1, 5, 43])
def test_plan_topk_equals_dense_topk(small_solve: Any, k: int) -> None:
    cost, r, _ = small_solve
    P = r.plan()
    top = bigsink.plan_topk(r, cost, k, executor=LocalExecutor(threads=2, strip_bytes=5000))
    want = np.argsort(-P, axis=1, kind="stable")[:, :k]               # (n, k)
    np.testing.assert_array_equal(top.indices, want)
    np.testing.assert_allclose(top.values, np.take_along_axis(P, want, axis=1), rtol=1e-14)
    S = top.to_sparse()
    assert S.shape == (57, 43) and S.nnz == 57 * k
    dense = np.zeros_like(P)
    np.put_along_axis(dense, want, np.take_along_axis(P, want, axis=1), axis=1)
    np.testing.assert_allclose(S.toarray(), dense, rtol=1e-14)
    with pytest.raises(InputError, match="k must be"):
        bigsink.plan_topk(r, cost, 44)


def test_plan_topk_batched(r3_problem: Any) -> None:
    C, a, b = r3_problem
    r = bigsink.solve(C, np.stack([a, b], 1), np.stack([b, a], 1), eps=0.1, progress=False)
    top = bigsink.plan_topk(r, C, 3)
    P = r.plan()                                                       # (n, m, 2)
    assert top.indices.shape == (100, 3, 2)
    for q in range(2):
        want = np.argsort(-P[:, :, q], axis=1, kind="stable")[:, :3]
        np.testing.assert_array_equal(top.indices[:, :, q], want)
        assert top.to_sparse(q).nnz == 300


def test_plan_marginals(small_solve: Any) -> None:
    cost, r, C = small_solve
    P = r.plan()
    pm = bigsink.plan_marginals(r, cost)
    np.testing.assert_allclose(pm.rows, P.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(pm.cols, P.sum(axis=0), rtol=1e-12)
    assert pm.transport_cost == pytest.approx(float((P * C).sum()), rel=1e-12)
    assert np.abs(pm.rows - P.sum(axis=1)).sum() <= 1e-12
