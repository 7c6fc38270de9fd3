"""Strip prefetching (bigsink.costs.device) on the CPU, NumPy as the target namespace."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import zarr

import bigsink
from bigsink.costs import DeviceCost, strip_module
from bigsink.costs.device import StripPrefetcher
from bigsink.executors import LocalExecutor


@pytest.fixture()
def stored(tmp_path) -> tuple[np.ndarray, bigsink.ZarrCost]:
    rng = np.random.default_rng(0)
    C = rng.random((70, 23))
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=C.shape, chunks=(16, 23), dtype="f8")
    z[:] = C
    return C, bigsink.ZarrCost(str(tmp_path / "c.zarr"))


def test_strips_come_out_identical_and_in_order(stored) -> None:
    C, zc = stored
    dev = DeviceCost(zc, np)
    strips = zc.grid.row_strips(16)                       # 5 strips, the last one shorter
    seen = []
    for _ in range(3):
        for s0, s1 in strips:
            seen.append((s0, s1))
            np.testing.assert_array_equal(dev.rows(s0, s1), C[s0:s1])
    assert seen == strips * 3
    st = dev.prefetcher.stats
    # pass 1: the first read is a miss, the rest were guessed (contiguous strips);
    # pass 2: its first strip is learned then; from there on every strip was read ahead
    assert (st.misses, st.hits) == (2, 3 * len(strips) - 2)


def test_unpredicted_requests_are_still_exact(stored) -> None:
    C, zc = stored
    pf = StripPrefetcher(zc)
    rng = np.random.default_rng(1)
    for _ in range(30):
        s0 = int(rng.integers(0, 69))
        s1 = int(rng.integers(s0 + 1, 71))
        np.testing.assert_array_equal(pf.rows(s0, s1), C[s0:s1])
    pf.close()


def test_concurrent_requests(stored) -> None:
    C, zc = stored
    pf = StripPrefetcher(zc)
    strips = zc.grid.row_strips(16) * 6
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda s: pf.rows(*s), strips))
    for (s0, s1), out in zip(strips, outs, strict=True):
        np.testing.assert_array_equal(out, C[s0:s1])
    pf.close()


class _Staging:
    """One reused buffer, as PinnedCopier hands out pinned memory."""

    def __init__(self) -> None:
        self.buf = np.empty(0)
        self.calls = 0

    def __call__(self, shape: tuple[int, int], dtype: Any) -> np.ndarray:
        self.calls += 1
        n = shape[0] * shape[1]
        if self.buf.size < n or self.buf.dtype != dtype:
            self.buf = np.empty(n, dtype=dtype)
        return self.buf[:n].reshape(shape)


@pytest.mark.parametrize("use_store", [True, False])
def test_staging_buffer_path(stored, use_store: bool) -> None:
    """Reads go into the staging buffer (``rows_into`` for Zarr, a copy otherwise) and
    ``move`` must copy out of it before it is reused."""
    C, zc = stored
    src = zc if use_store else bigsink.DenseCost(C, (16, 23))
    staging = _Staging()
    pf = StripPrefetcher(src, move=np.array, staging=staging)
    for _ in range(2):
        for s0, s1 in zc.grid.row_strips(16):
            np.testing.assert_array_equal(pf.rows(s0, s1), C[s0:s1])
    assert staging.calls >= 10
    pf.close()


def test_zarr_rows_into(stored) -> None:
    C, zc = stored
    out = np.full((9, 23), -1.0)
    assert zc.rows_into(20, 29, out) is out
    np.testing.assert_array_equal(out, C[20:29])


def test_solve_through_prefetching_device_cost(stored) -> None:
    C, zc = stored
    a = np.linspace(1, 2, 70)
    a /= a.sum()
    ref = bigsink.solve(C, a, eps=0.05, tol=1e-10)
    for threads in (1, 3):
        dev = DeviceCost(zc, np)
        ex = LocalExecutor(threads, strip_bytes=24 * 8 * 23 * 16)     # strips of 16 rows
        r = bigsink.solve(dev, a, eps=0.05, tol=1e-10, executor=ex, resident_kernel=False)
        np.testing.assert_allclose(r.f, ref.f, rtol=1e-12, atol=1e-14)
        assert r.transport_cost == pytest.approx(ref.transport_cost, rel=1e-12)
        assert dev.prefetcher.stats.hits > dev.prefetcher.stats.misses


def test_device_cost_pickles_without_read_ahead(stored) -> None:
    C, zc = stored
    dev = DeviceCost(zc, np)
    dev.rows(0, 16)
    back = pickle.loads(pickle.dumps(dev))          # e.g. on a Dask worker: reads on request
    assert not back.prefetch and back._prefetcher is None
    np.testing.assert_array_equal(back.rows(16, 32), C[16:32])
    assert back._prefetcher is None
    plain = DeviceCost(zc, np, prefetch=False)
    np.testing.assert_array_equal(plain.rows(3, 5), C[3:5])
    assert plain._prefetcher is None


def test_strip_module(stored) -> None:
    C, zc = stored
    assert strip_module(zc) == "numpy"
    assert strip_module(bigsink.DenseCost(C)) == "numpy"
    assert strip_module(DeviceCost(zc, np)) == "numpy"
    assert strip_module(bigsink.PointCloudCost(np.zeros((3, 1)), np.ones((4, 1)))) == "numpy"
