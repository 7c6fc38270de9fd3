"""bigsink: entropic optimal transport (Sinkhorn) for huge, block-partitioned cost matrices.

Quick start::

    import bigsink
    result = bigsink.solve(C, a, b, eps=1e-2)
    result.transport_cost, result.marginal_error, result.plan()
"""

import logging as _logging

from ._version import __version__
from .assign import assign
from .costs import BlockGrid, CostSource, DenseCost, PointCloudCost, ZarrCost
from .errors import (
    ClusterError,
    ConvergenceWarning,
    InputError,
    NumericalError,
    PrecisionWarning,
)
from .io import write_cost
from .plans import PlanMarginals, TopK, plan_marginals, plan_topk, write_plan
from .result import History, MarginalError, SinkhornResult, load_result
from .solver import solve
from .sweep import Pairs, SweepResults, SweepRow, sweep
from .toolbox import (
    DivergenceResult,
    WassersteinResult,
    divergence,
    wasserstein,
    wasserstein_1d_exact,
)

# the library's decisions are logged below "bigsink" (INFO); silent unless the application
# configures logging (``bigsink -v`` does)
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "BlockGrid",
    "ClusterError",
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
