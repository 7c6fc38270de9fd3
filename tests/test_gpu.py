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
    cpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9)
    gpu = bigsink.solve(C, a, b, eps=1e-2, tol=1e-9, device="gpu")
    assert isinstance(gpu.f, np.ndarray)
    assert gpu.transport_cost == pytest.approx(cpu.transport_cost, rel=1e-9)
    np.testing.assert_allclose(gpu.f, cpu.f, rtol=1e-8, atol=1e-10)
    on_gpu = bigsink.solve(cupy.asarray(C), a, b, eps=1e-2, tol=1e-9)   # arrays already there
    assert on_gpu.transport_cost == pytest.approx(cpu.transport_cost, rel=1e-9)


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
