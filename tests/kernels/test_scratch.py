"""Scratch files: page release keeps the data and shrinks the resident set; a pass over a
scratch kernel in windows gives the same result whatever its threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bigsink
from bigsink.kernels import scaling
from bigsink.kernels.scaling import KernelRows
from bigsink.scratch import release_pages, scratch_array

linux = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")


def _rss_file() -> int:
    """This process's resident pages of mapped files, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


@linux
def test_released_pages_keep_their_data_and_leave_the_resident_set() -> None:
    X = scratch_array((64, 1 << 16), np.dtype(np.float64))                 # 32 MiB
    base = _rss_file()
    X[...] = np.arange(X.size, dtype=np.float64).reshape(X.shape)
    assert _rss_file() - base > 24 << 20                                     # mapped, touched
    release_pages(X[3:61])                                                   # rows: whole pages
    assert _rss_file() - base < 8 << 20
    np.testing.assert_array_equal(X.ravel(), np.arange(X.size, dtype=np.float64))  # read back
    assert _rss_file() - base > 24 << 20                                     # mapped again


def test_release_is_nothing_for_memory_and_edges_stay_whole() -> None:
    A = np.arange(10_000.0)
    release_pages(A[10:5000])                                                # not a mapping
    np.testing.assert_array_equal(A, np.arange(10_000.0))
    X = scratch_array((3, 1000), np.dtype(np.float32))                       # < 3 pages
    X[...] = 7.0
    release_pages(X[1])                                                      # no whole page
    release_pages(X[1:1])                                                    # empty
    assert np.all(X == 7.0)


def _cloud_store(tmp_path: Path, n: int, m: int, dtype: str) -> bigsink.ZarrCost:
    rng = np.random.default_rng(5)
    x, y = rng.random((n, 2)), rng.random((m, 2))
    return bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(50, m), dtype=dtype)


def _sweep(rows: KernelRows, n: int, m: int, eps: float = 0.05) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(6)
    alpha, beta = rng.normal(size=(n, 1)) * 0.01, rng.normal(size=(1, m)) * 0.01
    assert rows.build(alpha, beta, eps, np.dtype(np.float32)) is None
    a = np.full((n, 1), 1.0 / n)
    v, u_prev = rng.random((m, 1)) + 0.5, rng.random((n, 1)) + 0.5
    return rows.sweep(v, a, u_prev, 1.3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_windowed_pass_over_a_scratch_kernel_does_not_depend_on_its_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """Small chunks (64 rows) in windows of 2 per thread: the column sums add the chunks in
    their order, so 1 or 2 threads give the same bits; the kernel in memory (32 chunks of
    its own size) agrees to rounding."""
    monkeypatch.setattr(scaling, "SCRATCH_CHUNK_BYTES", 1)                  # MIN_CHUNK_ROWS
    n, m = 700, 90
    cost = _cloud_store(tmp_path, n, m, dtype)
    pieces = [(s, min(n, s + 100)) for s in range(0, n, 100)]
    one = KernelRows(cost, pieces, threads=1)
    assert one.scratch and len(one._windows(-(-n // scaling.chunk_rows(n, m * 4)))) == 6
    u1, t1 = _sweep(one, n, m)
    u2, t2 = _sweep(KernelRows(cost, pieces, threads=2), n, m)
    np.testing.assert_array_equal(u1, u2)
    np.testing.assert_array_equal(t1, t2)
    C = np.asarray(cost.rows(0, n))
    memory = KernelRows([C], [(0, n)], threads=2)
    assert not memory.scratch
    u3, t3 = _sweep(memory, n, m)
    np.testing.assert_allclose(u3, u1, rtol=1e-13)
    np.testing.assert_allclose(t3, t1, rtol=1e-13)


@linux
def test_a_pass_over_a_scratch_kernel_keeps_one_window_resident(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scaling, "SCRATCH_CHUNK_BYTES", 1 << 20)
    n = m = 4000                                                             # 64 MB, float32
    cost = _cloud_store(tmp_path, n, m, "float32")
    rows = KernelRows(cost, [(s, min(n, s + 500)) for s in range(0, n, 500)], threads=1)
    _sweep(KernelRows(cost, [(0, 100)], threads=1), 100, m)   # libraries loaded, code compiled
    base = _rss_file()
    _sweep(rows, n, m)                                                       # build + pass
    assert rows.K is not None and rows.K.nbytes == n * m * 4
    grown = _rss_file() - base
    print(f"RssFile growth {grown / 2**20:.1f} MiB for a {rows.K.nbytes / 2**20:.0f} MiB kernel",
          end=" ")
    assert grown < 8 << 20                                  # windows of 2 chunks of 1 MiB
    assert np.isfinite(rows.K.sum())                        # control: read it whole
    assert _rss_file() - base > rows.K.nbytes * 0.9
