"""bigsink: entropic optimal transport (Sinkhorn) for huge, block-partitioned cost matrices.

Quick start::

    import bigsink
    result = bigsink.solve(C, a, b, eps=1e-2)
    result.transport_cost, result.marginal_error, result.plan()
"""

from .costs import BlockGrid, CostSource, DenseCost
from .errors import ConvergenceWarning, InputError, NumericalError
from .pointcloud import PointCloudCost
from .result import History, MarginalError, SinkhornResult
from .solver import solve
from .sweep import Pairs, SweepResults, SweepRow, sweep
from .zarr_cost import ZarrCost

__version__ = "0.1.0"

__all__ = [
    "BlockGrid",
    "ConvergenceWarning",
    "CostSource",
    "DenseCost",
    "History",
    "InputError",
    "MarginalError",
    "NumericalError",
    "Pairs",
    "PointCloudCost",
    "SinkhornResult",
    "SweepResults",
    "SweepRow",
    "ZarrCost",
    "__version__",
    "solve",
    "sweep",
]
