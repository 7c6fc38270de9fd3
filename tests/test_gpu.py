"""CuPy paths against the CPU path. Marked ``gpu``; skipped where CuPy or a GPU is missing."""

from __future__ import annotations

import numpy as np
import pytest

import bigsink

pytestmark = pytest.mark.gpu

cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'bigsink[gpu]')")
try:
    if cupy.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no CUDA device", allow_module_level=True)
except Exception as exc:  # CUDA driver missing
    pytest.skip(f"CUDA unavailable: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 2)), rng.random((250, 2))
    a = rng.random(300) + 0.1
    return x, y, a / a.sum(), np.full(250, 1 / 250)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dense_gpu_matches_cpu(problem, dtype: str) -> None:
    x, y, a, b = problem
    C = (((x[:, None] - y[None]) ** 2).sum(-1) / 2).astype(dtype)
    tol = 1e-9 if dtype == "float64" else 1e-7
    # float32: the CPU and GPU float32 paths (float32 resident kernel / exp_poly7) agree to
    # float32 precision only
    rel = 1e-9 if dtype == "float64" else 1e-6
    cpu = bigsink.solve(C, a, b, eps=1e-2, tol=tol)
    gpu = bigsink.solve(C, a, b, eps=1e-2, tol=tol, device="gpu")
    assert isinstance(gpu.f, np.ndarray)
    assert gpu.transport_cost == pytest.approx(cpu.transport_cost, rel=rel)
    np.testing.assert_allclose(gpu.f, cpu.f, rtol=rel, atol=1e-10 if rel < 1e-8 else 1e-7)
    on_gpu = bigsink.solve(cupy.asarray(C), a, b, eps=1e-2, tol=tol)   # arrays already there
    assert on_gpu.transport_cost == pytest.approx(cpu.transport_cost, rel=rel)


def test_pointcloud_and_zarr_gpu_match_cpu(problem, tmp_path) -> None:
    import zarr

    x, y, a, b = problem
    pc = bigsink.PointCloudCost(x, y, scale=2.0)
    C = np.asarray(pc.rows(0, 300))
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=C.shape, chunks=(64, 64), dtype="f8")
    z[:] = C
    cpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9)
    for src in (pc, str(tmp_path / "c.zarr")):
        gpu = bigsink.solve(src, a, b, eps=1e-2, tol=1e-9, device="gpu")
        assert gpu.transport_cost == pytest.approx(cpu.transport_cost, rel=1e-9)


def test_batched_gpu_matches_cpu(problem) -> None:
    x, y, a, b = problem
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    B = np.stack([b, np.roll(b, 3) * 0 + 1 / 250], axis=1)
    cpu = bigsink.solve(C, a, B, eps=5e-2, tol=1e-9)
    gpu = bigsink.solve(C, a, B, eps=5e-2, tol=1e-9, device="gpu")
    np.testing.assert_allclose(gpu.transport_cost, cpu.transport_cost, rtol=1e-9)


# ----------------------------------------------------------------- fused CUDA strip kernels


def _strip_problem(r: int, m: int, K: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    C = rng.random((r, m)).astype(dtype)
    a = rng.random((r, K))
    a[1, 0] = 0.0
    g = rng.normal(scale=0.05, size=(m, K))
    g[3, -1] = -np.inf
    with np.errstate(divide="ignore"):
        log_a = np.log(a)
    return C, log_a, rng.normal(scale=0.05, size=(r, K)), g


def _close(x, y, rtol: float, atol: float = 1e-300) -> None:
    x, y = cupy.asnumpy(x), np.asarray(y)
    np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y))
    fin = np.isfinite(y)
    np.testing.assert_allclose(x[fin], y[fin], rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("r", "m", "K", "tau", "omega"),
                         [(300, 1000, 1, 1.0, 1.0), (77, 513, 2, 0.8, 1.4),
                          (5, 70000, 1, 0.9, 0.7)])
def test_cuda_sinkhorn_strip_matches_generic(dtype, r, m, K, tau, omega) -> None:
    import bigsink.kernels as fused
    from bigsink.kernels import cuda as _cuda
    from bigsink.kernels import reference as kernels

    C, log_a, f_prev, g = _strip_problem(r, m, K, dtype)
    args = [cupy.asarray(x) for x in (C, log_a, f_prev, g)]
    f, (cm, cs) = fused.sinkhorn_strip(args[0], 0, *args[1:], 0.03, tau, omega)
    assert isinstance(f, cupy.ndarray) and f.dtype == cupy.float64
    f0, (cm0, cs0) = kernels.sinkhorn_strip(C, 0, log_a, f_prev, g, 0.03, tau, omega)
    # float64 C: double exp on both sides; float32 C: the CUDA kernels' exp_poly7 (< 5e-9)
    rtol = 1e-12 if dtype == "float64" else 2e-8
    for x, y in ((f, f0), (cm, cm0), (cs, cs0)):
        _close(x, y, rtol)
    gen = kernels.sinkhorn_strip(*[args[0], 0, *args[1:]], 0.03, tau, omega)  # generic on CuPy
    _close(f, gen[0], rtol)
    _close(cs, gen[1][1], rtol)
    if dtype == "float32":
        f64 = kernels.sinkhorn_strip(C.astype("float64"), 0, log_a, f_prev, g, 0.03, tau, omega)
        _close(f, f64[0], 1e-5, atol=1e-6)
    assert _cuda.fits(args[0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_evaluate_strip_matches_generic(dtype) -> None:
    import bigsink.kernels as fused
    from bigsink.kernels import reference as kernels

    C, log_a, f_prev, g = _strip_problem(120, 3000, 2, dtype, seed=1)
    f, _ = kernels.sinkhorn_strip(C, 0, log_a, f_prev, g, 0.05, 1.0)
    rows, (cols, pc) = fused.evaluate_strip(cupy.asarray(C), 0, cupy.asarray(f),
                                            cupy.asarray(g), 0.05)
    rows0, (cols0, pc0) = kernels.evaluate_strip(C, 0, f, g, 0.05)
    rtol = 1e-12 if dtype == "float64" else 2e-8
    _close(rows, rows0, rtol)
    _close(cols, cols0, rtol)
    _close(pc, pc0, rtol)


# ----------------------------------------------------------------- every GPU path vs the CPU


def test_unbalanced_and_fixed_omega_gpu_match_cpu(problem) -> None:
    x, y, a, b = problem
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    for kw in ({"rho": 0.5}, {"omega": 1.5}, {"omega": 1.0, "eps_scaling": True}):
        cpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9, **kw)
        gpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9, device="gpu", **kw)
        # same iterates up to rounding; a stop one iteration apart moves them by ~tol
        np.testing.assert_allclose(gpu.transport_cost, cpu.transport_cost, rtol=1e-8)
        np.testing.assert_allclose(gpu.f, cpu.f, rtol=1e-7, atol=1e-9)


def test_zarr_gpu_reads_ahead_and_matches_cpu(problem, tmp_path, monkeypatch) -> None:
    import zarr

    from bigsink.costs import DeviceCost, on_device
    from bigsink.costs.device import PinnedCopier
    from bigsink.executors import LocalExecutor

    x, y, a, b = problem
    C = ((x[:, None] - y[None]) ** 2).sum(-1).astype("float32")
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=C.shape, chunks=(32, 250),
                          dtype="f4")
    z[:] = C
    dev = on_device(bigsink.ZarrCost(str(tmp_path / "c.zarr")), cupy)
    assert isinstance(dev, DeviceCost)
    import bigsink.executors.local as local

    monkeypatch.setattr(local, "DEVICE_STRIP_BYTES", 64 * 250 * 4)     # strips of 64 rows
    res = bigsink.solve(dev, a, b, eps=1e-2, tol=1e-7, executor=LocalExecutor())
    cpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-7)
    # float32 C on both: the GPU and CPU float32 paths (exp_poly7 / a float32 resident
    # kernel) agree to float32 precision
    assert res.transport_cost == pytest.approx(cpu.transport_cost, rel=1e-6)
    st = dev.prefetcher.stats
    assert st.hits > 5 * st.misses
    strip = dev.rows(0, 64)
    assert isinstance(strip, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(strip), C[:64])
    pc = PinnedCopier(cupy)
    host = pc.staging((3, 4), np.dtype("float32"))
    host[...] = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(cupy.asnumpy(pc.move(host)), host)


def test_dense_gpu_is_one_strip_on_one_thread(problem) -> None:
    from bigsink.executors import LocalExecutor

    x, y, _, _ = problem
    C = cupy.asarray(((x[:, None] - y[None]) ** 2).sum(-1))
    session = LocalExecutor().open(bigsink.DenseCost(C, (64, 250)), 1)
    assert session.strips == [(0, 300)] and session._pool is None


@pytest.mark.dask
def test_dask_zarr_gpu_matches_cpu(problem, tmp_path, dask_client) -> None:
    import zarr

    x, y, a, b = problem
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=C.shape, chunks=(64, 250),
                          dtype="f8")
    z[:] = C
    cpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9)
    gpu = bigsink.solve(str(tmp_path / "c.zarr"), a, b, eps=1e-2, tol=1e-9, device="gpu",
                        client=dask_client)
    assert gpu.transport_cost == pytest.approx(cpu.transport_cost, rel=1e-9)


@pytest.mark.ray
def test_ray_sweep_on_gpu_matches_cpu(problem, ray_session) -> None:
    if ray_session.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the Ray session sees no GPU")
    x, y, a, b = problem
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    pairs = [(a, b), (a, np.roll(b, 7))]
    cpu = bigsink.sweep(C, pairs, [0.1, 0.02], tol=1e-9)
    gpu = bigsink.sweep(C, pairs, [0.1, 0.02], tol=1e-9, num_gpus=1)
    assert not gpu.errors
    np.testing.assert_allclose(gpu.column("transport_cost"), cpu.column("transport_cost"),
                               rtol=1e-8)


def test_bench_device_gpu(tmp_path) -> None:
    from bigsink import bench

    cfg = bench.BenchConfig(sizes=(300,), eps=(5e-2,), dtypes=("float32",), device="gpu",
                            pot_max_seconds=2.0, methods=("sinkhorn",), max_iter=2000)
    report = bench.run_bench(cfg)
    assert report["machine"]["device_copy_bytes_per_s"] > 1e10
    run = report["runs"][0]
    assert run["device"] == "gpu" and run["bound_s"] > 0 and run["reads_per_iter"] == 2
    big, pot = run["solvers"]
    assert big["failure"] is None and big["pc_rel_diff"] < 1e-4
    assert pot["solver"] == "pot.sinkhorn" and pot.get("failure") is None
    assert pot["pc_rel_diff"] < 1e-3
    assert "device:" in bench.format_table(report)
    zarr_cfg = bench.BenchConfig(sizes=(200,), eps=(0.1,), device="gpu", executor="zarr",
                                 pot=False, reference=False)
    assert bench.run_bench(zarr_cfg)["runs"][0]["store_read_once_s"] > 0


@pytest.mark.dask
def test_dask_dense_gpu_matches_cpu(problem, dask_client) -> None:
    """A matrix given on the GPU is held on the workers' GPUs and its strips run there."""
    x, y, a, b = problem
    C = ((x[:, None] - y[None]) ** 2).sum(-1)
    cpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9)
    gpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9, device="gpu", client=dask_client)
    assert gpu.transport_cost == pytest.approx(cpu.transport_cost, rel=1e-9)
