"""bigsink: entropic optimal transport (Sinkhorn) for huge, block-partitioned cost matrices.

Quick start::

    import bigsink
    result = bigsink.solve(C, a, b, eps=1e-2)
    result.transport_cost, result.marginal_error, result.plan()
"""

from .assign import assign
from .costs import BlockGrid, CostSource, DenseCost
from .errors import ConvergenceWarning, InputError, NumericalError
from .fused import PrecisionWarning
from .io import (
    PlanMarginals,
    TopK,
    load_result,
    plan_marginals,
    plan_topk,
    write_cost,
    write_plan,
)
from .pointcloud import PointCloudCost
from .result import History, MarginalError, SinkhornResult
from .solver import solve
from .sweep import Pairs, SweepResults, SweepRow, sweep
from .toolbox import (
    DivergenceResult,
    WassersteinResult,
    divergence,
    wasserstein,
    wasserstein_1d_exact,
)
from .zarr_cost import ZarrCost

__version__ = "0.1.0"

__all__ = [
    "BlockGrid",
    "ConvergenceWarning",
    "CostSource",
    "DenseCost",
    "DivergenceResult",
    "History",
    "InputError",
    "MarginalError",
    "NumericalError",
    "Pairs",
    "PlanMarginals",
    "PointCloudCost",
    "PrecisionWarning",
    "SinkhornResult",
    "SweepResults",
    "SweepRow",
    "TopK",
    "WassersteinResult",
    "ZarrCost",
    "__version__",
    "assign",
    "divergence",
    "load_result",
    "plan_marginals",
    "plan_topk",
    "solve",
    "sweep",
    "wasserstein",
    "wasserstein_1d_exact",
    "write_cost",
    "write_plan",
]
