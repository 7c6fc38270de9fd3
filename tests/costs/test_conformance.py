"""The conformance suite every cost source passes (zarr-python's ``StoreTests`` pattern).

Each source in ``SOURCES`` is built over the same reference matrix ``C`` (or the points it
comes from) and must: report a consistent shape, dtype and block grid; give blocks and strips
that agree with ``C`` and with each other; pickle to an equal source (Dask and Ray ship
sources to workers); answer the optional members (``namespace``, ``reads_store``,
``to_namespace``) through the accessors; and be accepted by ``solve`` with the same answer.
A new cost source joins by adding one factory here.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import array_api_strict as xps
import numpy as np
import pytest

import bigsink
from bigsink.costs import (
    CostSource,
    DenseCost,
    DeviceCost,
    PointCloudCost,
    as_cost,
    on_device,
    reads_store,
    strip_module,
)
from bigsink.toolbox import PowerCost

N, M, BLOCK = 37, 29, (8, 11)


def _points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.random((N, 2)), rng.random((M, 2))


def _reference() -> np.ndarray:
    """The matrix every source below stands for: squared distances of ``_points``."""
    x, y = _points()
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


class MinimalCost:
    """A user's own source with only the five required members (no optional ones)."""

    def __init__(self, C: np.ndarray) -> None:
        self.C = C
        self.grid = bigsink.BlockGrid(C.shape, BLOCK)

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.C.dtype

    def block(self, i: int, j: int) -> np.ndarray:
        (r0, r1), (c0, c1) = self.grid.row_range(i), self.grid.col_range(j)
        return self.C[r0:r1, c0:c1]

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.C[start:stop]


def _zarr(tmp: Path) -> CostSource:
    x, y = _points()
    return bigsink.write_cost(x, y, tmp / "C.zarr", chunks=BLOCK, dtype="float64",
                              progress=False)


#: name -> (factory(tmp_path), reads a store?)
SOURCES: dict[str, tuple[Callable[[Path], CostSource], bool]] = {
    "dense": (lambda tmp: DenseCost(_reference(), BLOCK), False),
    "pointcloud": (lambda tmp: PointCloudCost(*_points(), block_shape=BLOCK), False),
    "zarr": (_zarr, True),
    "device-numpy": (lambda tmp: DeviceCost(_zarr(tmp), np), True),
    "mapped": (lambda tmp: PowerCost(DenseCost(np.sqrt(_reference()), BLOCK), 2.0), False),
    "minimal": (lambda tmp: MinimalCost(_reference()), False),
}


@pytest.fixture(params=sorted(SOURCES))
def source(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[CostSource, bool]:
    factory, stored = SOURCES[request.param]
    return factory(tmp_path), stored


def test_is_a_cost_source_with_consistent_shape_dtype_and_grid(source) -> None:
    cost, _ = source
    assert isinstance(cost, CostSource) and as_cost(cost) is cost
    assert cost.shape == (N, M) == cost.grid.shape
    assert np.dtype(cost.dtype) in (np.float32, np.float64)
    assert all(1 <= b <= s for b, s in zip(cost.grid.block_shape, cost.shape, strict=True))


def test_blocks_and_strips_agree_with_the_matrix(source) -> None:
    cost, _ = source
    C = _reference()
    whole = np.asarray(cost.rows(0, N), dtype=np.float64)
    assert whole.shape == (N, M)
    np.testing.assert_allclose(whole, C, rtol=1e-12, atol=1e-14)
    bi, bj = cost.grid.n_blocks
    tiled = np.block([[np.asarray(cost.block(i, j)) for j in range(bj)] for i in range(bi)])
    np.testing.assert_allclose(tiled, whole, rtol=1e-12, atol=1e-14)  # blocks tile the strips
    for start, stop in ((0, 1), (5, 19), (N - 3, N)):            # any rows, any block cut
        np.testing.assert_allclose(np.asarray(cost.rows(start, stop)), whole[start:stop],
                                   rtol=1e-12, atol=1e-14)


def test_pickles_to_an_equal_source(source) -> None:
    cost, _ = source
    copy = pickle.loads(pickle.dumps(cost))
    assert copy.shape == cost.shape and copy.grid == cost.grid
    np.testing.assert_array_equal(np.asarray(copy.rows(3, 11)), np.asarray(cost.rows(3, 11)))


def test_optional_members_through_the_accessors(source) -> None:
    cost, stored = source
    assert strip_module(cost) == "numpy"
    assert reads_store(cost) is stored
    moved = on_device(cost, xps)                         # to another array namespace
    assert strip_module(moved) == "array_api_strict"
    assert reads_store(moved) is stored
    assert type(moved.rows(0, 4)).__module__.startswith("array_api_strict")
    np.testing.assert_array_equal(np.asarray(moved.rows(0, 4)), np.asarray(cost.rows(0, 4)))


def test_solve_accepts_it_with_the_same_answer(source) -> None:
    cost, _ = source
    ref = bigsink.solve(_reference(), eps=0.05, tol=1e-9, progress=False)
    res = bigsink.solve(cost, eps=0.05, tol=1e-9, progress=False)
    assert res.converged
    assert res.transport_cost == pytest.approx(ref.transport_cost, rel=1e-9)
