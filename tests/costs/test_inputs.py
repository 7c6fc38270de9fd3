"""One input path (bigsink.costs.as_cost): every kind of cost a user may hold gives the
NumPy answer through the API and the command line, and anything else is an InputError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import bigsink
from bigsink.costs import DenseCost, LazyCost, ZarrCost, as_cost
from bigsink.costs import inputs as inputs_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, Any]:
    """A 40 x 30 cost and the NumPy solve everything is compared with."""
    rng = np.random.default_rng(3)
    C = (rng.random((40, 1)) - rng.random((1, 30))) ** 2
    return C, bigsink.solve(C, eps=0.05, progress=False)


def check(cost: Any, ref: Any, kind: type, **kw: Any) -> None:
    """``cost`` becomes a ``kind`` source and solves to the reference potentials."""
    assert isinstance(as_cost(cost, kw.get("storage_options")), kind)
    r = bigsink.solve(cost, eps=0.05, progress=False, **kw)
    assert r.converged
    np.testing.assert_allclose(r.f, ref.f, rtol=1e-12, atol=1e-14)


def test_a_npy_path_is_memory_mapped(problem, tmp_path: Path) -> None:
    C, ref = problem
    np.save(tmp_path / "M.npy", C)
    src = as_cost(str(tmp_path / "M.npy"))
    assert isinstance(src.array, np.memmap)              # not read whole
    check(tmp_path / "M.npy", ref, DenseCost)
    check(str(tmp_path / "M.npy"), ref, DenseCost)


def test_zarr_arrays_by_object_and_by_path(problem, tmp_path: Path) -> None:
    C, ref = problem
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    arr = group.create_array("C", shape=C.shape, chunks=(16, 30), dtype="f8")
    arr[:] = C
    check(arr, ref, ZarrCost)                            # streamed from its store
    assert as_cost(arr).path == str(tmp_path / "g.zarr" / "C")
    check(zarr.open_array(str(tmp_path / "g.zarr" / "C"), mode="r"), ref, ZarrCost)
    check(str(tmp_path / "g.zarr" / "C"), ref, ZarrCost)
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=C.shape, dtype="f8")
    in_memory[:] = C
    check(in_memory, ref, DenseCost)                     # workers could not reopen it
    direct = ZarrCost(arr)                               # the source itself takes one too
    assert direct.path == str(tmp_path / "g.zarr" / "C") and direct.shape == C.shape
    with pytest.raises(bigsink.InputError, match="lives in memory"):
        ZarrCost(in_memory)


def test_a_zarr_group_says_which_arrays_it_holds(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("C", shape=(3, 4), dtype="f8")
    group.create_group("inner").create_array("D", shape=(3, 4), dtype="f8")
    with pytest.raises(bigsink.InputError, match=r"is a Zarr group.*g\.zarr/C.*g\.zarr/inner/D"):
        bigsink.solve(str(tmp_path / "g.zarr"), eps=0.1)


def test_xarray_pandas_dask_and_sparse(problem) -> None:
    xr = pytest.importorskip("xarray")
    pd = pytest.importorskip("pandas")
    sparse = pytest.importorskip("scipy.sparse")
    da = pytest.importorskip("dask.array")
    C, ref = problem
    check(xr.DataArray(C, dims=("source", "target")), ref, DenseCost)
    check(xr.DataArray(da.from_array(C, chunks=(20, 30)), dims=("i", "j")), ref, LazyCost)
    check(pd.DataFrame(C), ref, DenseCost)
    check(da.from_array(C, chunks=(20, 15)), ref, LazyCost)
    check(sparse.csr_matrix(C), ref, DenseCost)
    check(sparse.coo_array(C), ref, DenseCost)
    with pytest.raises(bigsink.InputError, match="non-numeric"):
        as_cost(pd.DataFrame({"x": ["a", "b"], "y": [1.0, 2.0]}))
    with pytest.raises(bigsink.InputError, match="2-D DataArray"):
        as_cost(xr.DataArray(np.ones(3)))
    with pytest.raises(bigsink.InputError, match="1-D"):
        as_cost(pd.Series([1.0, 2.0]))


def test_a_large_sparse_matrix_is_refused_not_densified(monkeypatch) -> None:
    sparse = pytest.importorskip("scipy.sparse")
    monkeypatch.setattr(inputs_module, "physical_memory", lambda: 1 << 20)   # a 1 MiB machine
    big = sparse.random(1000, 1000, density=1e-3, format="csr")            # 8 MB dense
    with pytest.raises(bigsink.InputError, match=r"scipy\.sparse.*7\.6|Zarr store"):
        as_cost(big)


@pytest.mark.parametrize("thing", [{"C": 1}, object(), 3.5, None, {1, 2}])
def test_anything_else_is_an_input_error_naming_it(thing: Any) -> None:
    with pytest.raises(bigsink.InputError, match=r"cannot use a .* as a cost; expected .*zarr"):
        bigsink.solve(thing, eps=0.1)


def test_pot_argument_order_is_named() -> None:
    a = np.full(5, 0.2)
    M = np.ones((5, 5))
    with pytest.raises(bigsink.InputError, match=r"bigsink\.ot\.sinkhorn\(a, b, M, reg\)"):
        bigsink.solve(a, a, M, eps=0.1)


def test_the_command_line_takes_the_same_inputs(problem, tmp_path: Path) -> None:
    """`bigsink solve` goes through the same function: a .npy cost, a Zarr array path, and a
    group refused with the arrays it holds (exit 2)."""
    C, ref = problem
    np.save(tmp_path / "M.npy", C)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("C", shape=C.shape, dtype="f8")[:] = C

    def cli(*args: Any) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bigsink.cli", *map(str, args)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)

    for k, cost in enumerate(("M.npy", "g.zarr/C")):
        proc = cli("solve", cost, "--eps", "0.05", "--out", f"r{k}.zarr", "--quiet")
        assert proc.returncode == 0, proc.stderr
        np.testing.assert_allclose(bigsink.load_result(tmp_path / f"r{k}.zarr").f, ref.f,
                                   rtol=1e-12, atol=1e-14)
    proc = cli("solve", "g.zarr", "--eps", "0.05", "--out", "r.zarr")
    assert proc.returncode == 2 and "is a Zarr group" in proc.stderr and "g.zarr/C" in proc.stderr
