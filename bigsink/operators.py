"""The plan as an operator, never formed: ``P V``, ``P^T U``, the potentials' row LSE and
the points' gradients, each one strip job over C on any executor.

With ``P_kij = exp((f_ik + g_jk - C_ij) / eps)`` (DESIGN.md §2; ``K`` problems of a batch):

* :func:`apply_plan`: ``P_k V`` (n, dv, K) and ``P_k^T U`` (m, du, K) in one pass, one
  ``exp`` per element (:func:`bigsink.kernels.apply_strip`: fused for NumPy strips and
  point clouds, out of core and on Dask like every pass);
* :func:`log_potentials`: ``F_i = -eps LSE_j((g_j - C_ij) / eps)``, the dual potential of
  the KL form ``f - eps log a``, finite even where ``a_i = 0``;
* :func:`cost_gradients`: ``sum_j P_ij grad_x c(x_i, y_j)`` and ``sum_i P_ij grad_y
  c(x_i, y_j)`` for a point cloud's metric (:func:`bigsink.kernels.cost_grad_strip`).

:class:`~bigsink.result.SinkhornResult` builds its ``apply``, barycentric maps and
gradients on these (the envelope theorem: at the optimum the derivative of ``reg_cost`` by
``C`` is ``P``, by ``a`` the potential ``F``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .costs import CostSource, PointCloudCost, as_cost
from .errors import InputError
from .executors import StripJob, make_executor
from .kernels import (
    add_partials,
    apply_strip,
    column_pair,
    cost_grad_strip,
    merge_pairs,
    pair_to_lse,
    reference,
    sinkhorn_strip,
)

__all__ = ["apply_plan", "cost_gradients", "log_potentials"]


def _run(cost: CostSource, width: int, job: StripJob, executor: Any, client: Any) -> Any:
    """``job`` over ``cost`` in a session of ``executor`` / ``client`` (closed after)."""
    session = make_executor(executor, client).open(cost, width)
    try:
        return session.run(job)
    finally:
        session.close()


def _vectors(name: str, v: Any, size: int) -> np.ndarray:
    """``v`` (size,) or (size, d) as a float64 (size, d) array, or an InputError."""
    arr = np.asarray(v, dtype=np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != size:
        raise InputError(f"{name}: expected shape ({size},) or ({size}, d); got "
                         f"{np.shape(v)}.")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains non-finite values.")
    return arr


def apply_plan(
    f: np.ndarray, g: np.ndarray, eps: float, cost: Any, V: Any = None, U: Any = None,
    executor: Any = None, client: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(P V, P^T U)`` for potentials f (n, K), g (m, K): (n, dv, K) and (m, du, K), one
    pass over C. ``V`` (m,) or (m, dv) and ``U`` (n,) or (n, du) may be None (d = 0)."""
    src = as_cost(cost)
    n, m = src.shape
    V = np.zeros((m, 0)) if V is None else _vectors("v", V, m)
    U = np.zeros((n, 0)) if U is None else _vectors("u", U, n)
    rows, (cols,) = _run(src, f.shape[1], StripJob(apply_strip, add_partials, (f, U),
                                                   (g, float(eps), V)), executor, client)
    return rows, cols


def log_potentials(
    f: np.ndarray, g: np.ndarray, eps: float, cost: Any, side: int = 0,
    executor: Any = None, client: Any = None,
) -> np.ndarray:
    """The potentials of the KL form by one pass: ``F_i = -eps LSE_j((g_j - C_ij) / eps)``
    (``side`` 0, (n, K): the f-update without ``log a``) or ``G_j = -eps LSE_i((f_i -
    C_ij) / eps)`` (side 1, (m, K)); finite even where a weight is 0."""
    src = as_cost(cost)
    K = g.shape[1]
    if side == 0:
        zero = np.zeros((src.shape[0], K))
        F, _ = _run(src, K, StripJob(sinkhorn_strip, merge_pairs, (zero, zero),
                                     (g, float(eps), 1.0, 1.0)), executor, client)
        return np.asarray(F)
    _, pair = _run(src, K, StripJob(column_pair, reference.merge_pairs, (f,), (float(eps),)),
                   executor, client)
    return np.asarray(-eps * pair_to_lse(pair))


def cost_gradients(
    f: np.ndarray, g: np.ndarray, eps: float, cost: Any, executor: Any = None,
    client: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(sum_j P_ij grad_x c(x_i, y_j), sum_i P_ij grad_y c(x_i, y_j))``, (n, d, K) and
    (m, d, K), for a point cloud's cost: one pass. The squared Euclidean metric takes the
    plan operator (``2/s (x_i (P 1)_i - (P Y)_i)``); the others
    :func:`bigsink.kernels.cost_grad_strip`."""
    src = as_cost(cost)
    if not isinstance(src, PointCloudCost):
        raise InputError(
            f"gradients with respect to points need a PointCloudCost; got {type(src).__name__}"
            ". For a matrix, the gradient with respect to C is the plan (result.apply).")
    if src.metric == "sqeuclidean":
        x = np.asarray(src.x, dtype=np.float64)
        y = np.asarray(src.y, dtype=np.float64)
        ones_x, ones_y = np.ones((x.shape[0], 1)), np.ones((y.shape[0], 1))
        PY, PtX = apply_plan(f, g, eps, src, np.hstack([y, ones_y]), np.hstack([x, ones_x]),
                             executor, client)
        d = x.shape[1]                                               # (n, d + 1, K) ...
        gx = 2.0 / src.scale * (x[:, :, None] * PY[:, d:, :] - PY[:, :d, :])
        gy = 2.0 / src.scale * (y[:, :, None] * PtX[:, d:, :] - PtX[:, :d, :])
        return gx, gy
    gx, (gy,) = _run(src, f.shape[1], StripJob(cost_grad_strip, add_partials, (f,),
                                               (g, float(eps))), executor, client)
    return gx, gy
