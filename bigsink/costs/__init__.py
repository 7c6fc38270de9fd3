"""Where C comes from: the cost-source protocol and its sources.

Every source follows :class:`CostSource` (``shape``, ``dtype``, ``grid``, ``block``,
``rows``; optionally ``namespace``, ``reads_store``, ``to_namespace``, ``block_min``,
``rows_in``). The sources:
:class:`DenseCost` (an in-memory array), :class:`ZarrCost` (a Zarr v3 store),
:class:`PointCloudCost` (two point clouds and a metric, computed block by block) and
:class:`DeviceCost` (any source's strips moved to a GPU, read one ahead). Nothing in this
wing imports the kernels, the executors or the solver.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..scratch import physical_memory
from .base import (
    BlockGrid,
    ColumnStrip,
    CostSource,
    MappedCost,
    block_min,
    default_block_shape,
    read_strip,
    reads_store,
    strip_module,
)
from .dense import DenseCost
from .device import DeviceCost, on_device
from .pointcloud import METRICS, CloudStrip, PointCloudCost, pairwise_cost
from .zarr import ZarrCost

__all__ = [
    "METRICS", "BlockGrid", "CloudStrip", "ColumnStrip", "CostSource", "DenseCost", "DeviceCost",
    "MappedCost", "PointCloudCost", "ZarrCost", "as_cost", "block_min", "default_block_shape",
    "on_device", "pairwise_cost", "read_strip", "reads_store", "strip_module",
]


def as_cost(cost: Any) -> CostSource:
    """Turn what the user passed as ``cost`` into a cost source.

    Accepts a cost source, an (n, m) array, or a path/URL string to a Zarr array.
    """
    if isinstance(cost, CostSource):
        return cost
    if isinstance(cost, str | bytes) or hasattr(cost, "__fspath__"):
        return ZarrCost(cost)
    if hasattr(cost, "__dask_graph__") and hasattr(cost, "compute"):
        return _computed(cost)
    return DenseCost(cost)


#: A lazy (dask.array) cost is computed once when it takes at most this share of memory.
LAZY_SHARE = 0.25


def _computed(cost: Any) -> DenseCost:
    """A lazy array (``dask.array``) computed once into memory, in its own chunks as blocks
    (its graph would otherwise be recomputed for every strip of every pass); an InputError
    when it would not fit."""
    nbytes = int(getattr(cost, "nbytes", 0))
    room = LAZY_SHARE * physical_memory()
    if nbytes > room:
        raise InputError(
            f"cost: a lazy (dask) array of {nbytes / 2**30:.1f} GiB is more than a quarter "
            "of this machine's memory; write it to a Zarr store (cost.to_zarr(path), or "
            "bigsink.write_cost for point clouds) and pass the path: stores are streamed.")
    chunks = getattr(cost, "chunksize", None)
    block = (int(chunks[0]), int(chunks[1])) if chunks is not None and len(chunks) == 2 else None
    return DenseCost(np.asarray(cost.compute()), block_shape=block)
