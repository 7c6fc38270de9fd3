"""The device path (``solve(device=...)``, ``on_device``) exercised without a GPU.

array-api-strict stands in for CuPy: strips are produced in a foreign namespace, the
generic kernels run on them, and results come back as NumPy, equal to the CPU path.
"""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest
import zarr

import bigsink
from bigsink.costs import DeviceCost, on_device


@pytest.fixture(scope="module")
def clouds() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((50, 2)), rng.random((37, 2))


def _sources(clouds, tmp_path):
    x, y = clouds
    pc = bigsink.PointCloudCost(x, y, block_shape=(16, 37))
    C = np.asarray(pc.rows(0, 50))
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=C.shape, chunks=(16, 16), dtype="f8")
    z[:] = C
    return C, [bigsink.DenseCost(C, (16, 37)), pc, bigsink.ZarrCost(str(tmp_path / "c.zarr"))]


def test_every_source_solves_in_a_foreign_namespace(clouds, tmp_path) -> None:
    C, sources = _sources(clouds, tmp_path)
    a = np.linspace(1, 2, 50)
    a /= a.sum()
    ref = bigsink.solve(C, a, eps=0.02, tol=1e-10)
    for src in sources:
        dev = on_device(src, xps)
        assert type(dev.rows(0, 3)).__module__.startswith("array_api_strict")
        r = bigsink.solve(dev, a, eps=0.02, tol=1e-10)
        assert isinstance(r.f, np.ndarray) and r.converged
        np.testing.assert_allclose(r.f, ref.f, rtol=1e-10, atol=1e-12)
        assert r.transport_cost == pytest.approx(ref.transport_cost, rel=1e-10)


def test_stored_sources_are_wrapped_and_moved_per_strip(clouds, tmp_path) -> None:
    _, (dense, pc, zc) = _sources(clouds, tmp_path)
    assert isinstance(on_device(zc, xps), DeviceCost)
    assert isinstance(on_device(dense, xps), bigsink.DenseCost)
    assert isinstance(on_device(pc, xps), bigsink.PointCloudCost)
    wrapped = on_device(on_device(zc, xps), np)        # re-targeting unwraps, never nests
    assert isinstance(wrapped, DeviceCost) and wrapped.source is zc


def test_bad_device_is_rejected() -> None:
    with pytest.raises(bigsink.InputError, match="device must be one of"):
        bigsink.solve(np.ones((2, 2)), eps=1.0, device="tpu")


def test_gpu_without_cupy_says_how_to_install() -> None:
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed here")
    except ImportError:
        pass
    with pytest.raises(bigsink.InputError, match=r"needs CuPy: pip install cupy-cuda12x"):
        bigsink.solve(np.ones((2, 2)), eps=1.0, device="gpu")
