"""The in-process executor: strip layout over cost sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bigsink
from bigsink.executors import LocalExecutor


def test_strips_of_a_store_are_whole_block_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((3000, 2)), rng.random((300, 2))
    cost = bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(1000, 300), dtype="float64")
    tiny = LocalExecutor(threads=2, strip_bytes=3 * 8 * 300 * 100)   # chunks of 100 rows
    stored = tiny.open(cost, 1)                                       # strips of >= 874 rows
    assert stored.strips == [(0, 1000), (1000, 2000), (2000, 3000)]   # never a cut chunk
    assert stored.pieces[:2] == [(0, 100), (100, 200)]                # generic kernels' chunks
    C = np.asarray(cost.rows(0, 3000))
    dense = tiny.open(bigsink.DenseCost(C, (1000, 300)), 1)
    assert dense.strips[:2] == [(0, 500), (500, 1000)]                # in memory: cut freely
    big = LocalExecutor(threads=2).open(bigsink.DenseCost(np.zeros((8000, 400)), (8000, 400)), 1)
    assert len(big.strips) == 8                                       # 4 strips per thread
    r = bigsink.solve(cost, eps=0.05, tol=1e-9, executor=tiny)
    ref = bigsink.solve(C, eps=0.05, tol=1e-9, resident_kernel=False)
    assert r.transport_cost == pytest.approx(ref.transport_cost, rel=1e-12)
    for session in (stored, dense, big):
        session.close()


def test_kernels_in_chunks_equal_one_call() -> None:
    """``apply_kernel`` in row chunks (as a Dask strip task runs a generic kernel) gives the
    rows and partials of one call on the whole strip, for row outputs and for none."""
    from bigsink import kernels
    from bigsink.executors import StripJob
    from bigsink.executors.base import apply_kernel

    rng = np.random.default_rng(1)
    C, g = rng.random((23, 17)), rng.normal(size=(17, 2))
    log_a, f = np.log(np.full((23, 2), 1 / 23)), rng.normal(size=(23, 2))
    sinkhorn = StripJob(kernels.sinkhorn_strip, kernels.merge_pairs)
    column = StripJob(kernels.column_pair, kernels.merge_pairs)
    whole = apply_kernel(sinkhorn, C, 5, [log_a, f], [g, 0.1, 1.0, 1.3])
    for chunk in (1, 4, 22, 23, 100):
        rows, (m, s) = apply_kernel(sinkhorn, C, 5, [log_a, f], [g, 0.1, 1.0, 1.3], chunk)
        np.testing.assert_allclose(rows, whole[0], rtol=1e-13)
        np.testing.assert_allclose(kernels.pair_to_lse((m, s)),
                                   kernels.pair_to_lse(whole[1]), rtol=1e-13)
        none, pair = apply_kernel(column, C, 5, [f], [0.1], chunk)
        assert none is None
        np.testing.assert_allclose(kernels.pair_to_lse(pair),
                                   kernels.pair_to_lse(kernels.column_pair(C, 5, f, 0.1)[1]),
                                   rtol=1e-13)
