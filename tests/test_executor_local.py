"""The in-process executor: strip layout over cost sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bigsink
from bigsink.executors import LocalExecutor


def test_strips_of_a_store_are_whole_block_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 2)), rng.random((30, 2))
    cost = bigsink.write_cost(x, y, tmp_path / "C.zarr", chunks=(40, 30), dtype="float64")
    tiny = LocalExecutor(threads=2, strip_bytes=3 * 8 * 30 * 10)     # 10 rows of temporaries
    stored = tiny.open(cost, 1)
    assert stored.strips == [(0, 40), (40, 80), (80, 100)]            # never a cut chunk
    dense = tiny.open(bigsink.DenseCost(np.asarray(cost.rows(0, 100)), (40, 30)), 1)
    assert dense.strips[:2] == [(0, 10), (10, 20)]                    # in memory: cut freely
    r = bigsink.solve(cost, eps=0.05, tol=1e-9, executor=tiny)
    ref = bigsink.solve(np.asarray(cost.rows(0, 100)), eps=0.05, tol=1e-9,
                        resident_kernel=False)
    assert r.transport_cost == pytest.approx(ref.transport_cost, rel=1e-12)
    stored.close()
    dense.close()
