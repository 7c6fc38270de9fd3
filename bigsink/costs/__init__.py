"""Where C comes from: the cost-source protocol and its sources.

Every source follows :class:`CostSource` (``shape``, ``dtype``, ``grid``, ``block``,
``rows``; optionally ``namespace``, ``reads_store``, ``to_namespace``, ``block_min``,
``rows_in``). The sources:
:class:`DenseCost` (an in-memory array), :class:`ZarrCost` (a Zarr v3 store),
:class:`PointCloudCost` (two point clouds and a metric, computed block by block) ,
:class:`DeviceCost` (any source's strips moved to a GPU, read one ahead) and
:class:`LazyCost` (a ``dask.array``: computed once in process, by the workers on Dask).
Nothing in this wing imports the kernels, the executors or the solver.
"""

from __future__ import annotations

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
from .inputs import as_cost
from .lazy import LazyCost
from .pointcloud import METRICS, CloudStrip, PointCloudCost, pairwise_cost
from .zarr import ZarrCost

__all__ = [
    "METRICS", "BlockGrid", "CloudStrip", "ColumnStrip", "CostSource", "DenseCost", "DeviceCost",
    "LazyCost", "MappedCost", "PointCloudCost", "ZarrCost", "as_cost", "block_min",
    "default_block_shape", "on_device", "pairwise_cost", "read_strip", "reads_store",
    "strip_module",
]
