"""One input path: whatever a user passes as a cost, turned into a cost source.

The API (:func:`bigsink.solve`, :func:`bigsink.sweep`, the operators, the toolbox) and the
command line all go through :func:`as_cost`, so they accept the same things: a cost source,
an in-memory array (NumPy, CuPy or any array-API array), a ``.npy`` file (memory-mapped), a
Zarr array (path, fsspec URL with ``storage_options``, or an open ``zarr.Array``), a
``dask.array`` (:class:`~bigsink.costs.lazy.LazyCost`: computed once in process, by the
workers on Dask), an xarray ``DataArray``, a pandas ``DataFrame`` or a scipy.sparse matrix
(densified when small). Anything else is an :class:`~bigsink.errors.InputError` that says
what was received and what is accepted.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InputError
from ..scratch import physical_memory
from .base import CostSource
from .dense import DenseCost
from .lazy import LAZY_SHARE, LazyCost
from .zarr import ZarrCost, array_location

__all__ = ["ACCEPTED", "as_cost"]

#: What :func:`as_cost` accepts, for messages.
ACCEPTED = (
    "a cost source (DenseCost, ZarrCost, PointCloudCost), a 2-D array (NumPy, CuPy, "
    "array-API), a path or URL of a Zarr array or a .npy file, a zarr.Array, a dask.array, "
    "an xarray.DataArray, a pandas.DataFrame or a scipy.sparse matrix")


def as_cost(cost: Any, storage_options: dict[str, Any] | None = None) -> CostSource:
    """Turn what the user passed as ``cost`` into a cost source.

    Args:
        cost: see the module docstring for what is accepted.
        storage_options: fsspec options (credentials, endpoint) for a URL ``cost``.

    Raises:
        InputError: ``cost`` is none of the accepted kinds, or too large to make dense.
    """
    if isinstance(cost, CostSource):
        return cost
    if isinstance(cost, bytes):
        cost = os.fsdecode(cost)
    if isinstance(cost, str) or hasattr(cost, "__fspath__"):
        return _from_path(os.fspath(cost), storage_options)
    kind = _kind(cost)
    if kind == "zarr":
        return _from_zarr_array(cost)
    if kind == "xarray":
        if cost.ndim != 2:
            raise InputError(f"cost: expected a 2-D DataArray, got dims {tuple(cost.dims)}.")
        return as_cost(cost.data)                      # NumPy or dask underneath
    if kind == "pandas":
        return _from_frame(cost)
    if kind == "sparse":
        return _from_sparse(cost)
    if hasattr(cost, "__dask_graph__") and hasattr(cost, "compute"):
        return LazyCost(cost)
    if (hasattr(cost, "shape") and hasattr(cost, "dtype")) or isinstance(cost, list | tuple):
        return DenseCost(cost)
    raise InputError(f"cost: cannot use a {_type_name(cost)} as a cost; expected {ACCEPTED}.")


def _type_name(x: Any) -> str:
    """``module.Class`` of ``x``."""
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


def _kind(x: Any) -> str | None:
    """Which library's container ``x`` is, by its type's module (nothing is imported)."""
    module = type(x).__module__.split(".")[0]
    if module == "zarr" and hasattr(x, "store") and hasattr(x, "shape"):
        return "zarr"
    if module == "xarray" and hasattr(x, "dims") and hasattr(x, "data"):
        return "xarray"
    if module == "pandas":
        return "pandas"
    if module == "scipy" and hasattr(x, "toarray") and hasattr(x, "nnz"):
        return "sparse"
    return None


def _from_path(where: str, storage_options: dict[str, Any] | None) -> CostSource:
    """A ``.npy`` file (memory-mapped) or a Zarr array at a path or URL."""
    if "://" not in where and where.endswith(".npy"):
        if not os.path.isfile(where):
            raise InputError(f"cost: no such file {where!r}.")
        try:
            arr = np.load(where, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cost: could not read {where!r} as a .npy array: {exc}") from None
        return DenseCost(arr)
    return ZarrCost(where, storage_options)


def _from_zarr_array(arr: Any) -> CostSource:
    """An open ``zarr.Array``: streamed from its store when the store has a path or URL
    (workers reopen it there), else (an in-memory store) read whole when small."""
    if array_location(arr) is not None:
        return ZarrCost(arr)
    return _small_dense(arr, lambda: np.asarray(arr[...]), "a zarr.Array in a memory store")


def _from_frame(frame: Any) -> CostSource:
    """A pandas DataFrame of numbers (rows: sources, columns: targets)."""
    if getattr(frame, "ndim", 1) != 2:
        raise InputError(
            f"cost: a pandas {type(frame).__name__} is 1-D; pass a DataFrame with one row per "
            "source point and one column per target point.")
    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"cost: the DataFrame has non-numeric columns ({exc}); select the numeric "
            "columns (df.select_dtypes('number')).") from None
    return DenseCost(values)


def _from_sparse(matrix: Any) -> CostSource:
    """A scipy.sparse matrix made dense: its implicit entries are costs of 0 (not forbidden
    pairs; for those, pass ``inf`` in a dense matrix to :mod:`bigsink.ot`)."""
    if len(matrix.shape) != 2:
        raise InputError(f"cost: expected a 2-D sparse matrix, got shape {matrix.shape}.")
    return _small_dense(matrix, matrix.toarray, "a scipy.sparse matrix (its implicit "
                        "entries are costs of 0)")


def _small_dense(x: Any, densify: Any, what: str) -> DenseCost:
    """``densify()`` as a DenseCost when ``x`` dense fits in :data:`LAZY_SHARE` of memory."""
    itemsize = np.dtype(str(x.dtype)).itemsize if hasattr(x, "dtype") else 8
    nbytes = int(np.prod(x.shape)) * max(itemsize, 4)
    if nbytes > LAZY_SHARE * physical_memory():
        raise InputError(
            f"cost: {what} of shape {tuple(x.shape)} would take {nbytes / 2**30:.1f} GiB dense, "
            "more than a quarter of this machine's memory; write it to a Zarr store (or "
            "give point clouds as PointCloudCost) and pass the path: stores are streamed.")
    return DenseCost(np.asarray(densify()))
