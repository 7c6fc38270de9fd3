"""Workflows built on :func:`bigsink.solve`: the Sinkhorn divergence and distances between samples.

Both only build cost sources and weights and call :func:`~bigsink.solve`; every solver
option (``tol``, ``max_iter``, ``eps_scaling``, ``executor``, ``client``, ...) passes through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._xp import to_numpy
from .costs import CostSource, MappedCost, PointCloudCost, as_cost
from .errors import InputError
from .problem import check_positive
from .result import SinkhornResult
from .solver import solve

__all__ = [
    "DivergenceResult",
    "PowerCost",
    "WassersteinResult",
    "divergence",
    "wasserstein",
    "wasserstein_1d_exact",
]


@dataclass(frozen=True)
class DivergenceResult:
    """The debiased Sinkhorn divergence and the three solves it came from.

    Attributes:
        value: ``S = OT(a, b) - OT(a, a)/2 - OT(b, b)/2`` on the regularised values
            (``reg_cost``); a float, or (K,) for batched weights.
        ab, aa, bb: the :class:`SinkhornResult` of each of the three problems.
    """

    value: Any
    ab: SinkhornResult = field(repr=False)
    aa: SinkhornResult = field(repr=False)
    bb: SinkhornResult = field(repr=False)

    def grad_x(self, **where: Any) -> np.ndarray:
        """The gradient of ``value`` by the source points (point-cloud costs):
        ``ab.grad_x() - aa.grad_x()``. ``OT(a, a)`` depends on ``x`` through both
        arguments; its plan and cost are symmetric, so the two halves are equal and
        ``-OT(a, a)/2`` contributes minus one of them. ``where``: ``executor``, ``client``."""
        return self.ab.grad_x(**where) - self.aa.grad_x(**where)

    def grad_y(self, **where: Any) -> np.ndarray:
        """The gradient of ``value`` by the target points: ``ab.grad_y() - bb.grad_y()``."""
        return self.ab.grad_y(**where) - self.bb.grad_y(**where)


def divergence(
    x: Any = None,
    y: Any = None,
    a: Any = None,
    b: Any = None,
    *,
    eps: float,
    metric: str = "sqeuclidean",
    p: float = 2.0,
    scale: float = 1.0,
    costs: tuple[Any, Any, Any] | None = None,
    **options: Any,
) -> DivergenceResult:
    """Sinkhorn divergence ``S = OT(a,b) - OT(a,a)/2 - OT(b,b)/2`` (DESIGN.md §2).

    ``OT`` is the regularised value ``<P,C> + eps*KL(P || a b^T)`` (``reg_cost``), which
    makes ``S`` zero for identical inputs and non-negative for the usual (positive definite
    kernel) costs such as squared Euclidean (Feydy et al. 2019). It is not the combination of
    the linear costs ``<P, C>``.

    Give either two point clouds ``x`` (n, d) and ``y`` (m, d) (a :class:`PointCloudCost`
    with ``metric``, ``p``, ``scale`` is built for each of the three problems), or
    ``costs=(C_ab, C_aa, C_bb)``: three cost sources of shapes (n, m), (n, n), (m, m) — arrays,
    Zarr paths, point-cloud costs, anything :func:`bigsink.solve` accepts.

    Args:
        x, y: source and target points (NumPy or CuPy); leave None when ``costs`` is given.
        a, b: weights (n,), (m,) (or (n, K), (m, K)); default uniform. Balanced: equal masses.
        eps: entropic regularisation.
        metric, p, scale: the point-cloud cost (see :class:`PointCloudCost`).
        costs: the cost triple ``(C_ab, C_aa, C_bb)`` instead of point clouds.
        **options: passed to each :func:`bigsink.solve` (``tol``, ``max_iter``,
            ``eps_scaling``, ``executor``, ``client``, ``progress``, ...).

    Returns:
        A :class:`DivergenceResult`.

    Raises:
        InputError: on inconsistent inputs, before any solve.
    """
    eps = check_positive("eps", eps)
    for bad in ("rho", "rho_a", "rho_b", "init"):
        if bad in options:
            raise InputError(
                f"divergence() does not take {bad}=: the debiased divergence is defined for "
                "balanced problems here; call bigsink.solve for each term instead."
            )
    if costs is not None:
        if x is not None or y is not None:
            raise InputError("divergence: pass either points x, y or costs=(C_ab, C_aa, C_bb).")
        try:
            c_ab, c_aa, c_bb = (as_cost(c) for c in costs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(
                "costs must be a triple (C_ab, C_aa, C_bb) of cost matrices or sources."
            ) from None
        n, m = c_ab.shape
        if c_aa.shape != (n, n) or c_bb.shape != (m, m):
            raise InputError(
                f"costs: C_ab has shape {(n, m)}, so C_aa must be {(n, n)} and C_bb "
                f"{(m, m)}; got {c_aa.shape} and {c_bb.shape}."
            )
    else:
        if x is None:
            raise InputError("divergence: pass points x and y, or costs=(C_ab, C_aa, C_bb).")
        if y is None:
            y = x
        c_ab = PointCloudCost(x, y, metric, p=p, scale=scale)
        c_aa = PointCloudCost(x, x, metric, p=p, scale=scale)
        c_bb = PointCloudCost(y, y, metric, p=p, scale=scale)
    ab = solve(c_ab, a, b, eps=eps, **options)
    aa = solve(c_aa, a, a, eps=eps, **options)
    bb = solve(c_bb, b, b, eps=eps, **options)
    value = _combine(ab.reg_cost, aa.reg_cost, bb.reg_cost)
    return DivergenceResult(value=value, ab=ab, aa=aa, bb=bb)


def _combine(ab: Any, aa: Any, bb: Any) -> Any:
    """``ab - aa/2 - bb/2`` for floats or (K,) arrays (a batch of one side broadcasts)."""
    out = np.asarray(ab) - 0.5 * np.asarray(aa) - 0.5 * np.asarray(bb)
    return float(out) if out.ndim == 0 else out


class PowerCost(MappedCost):
    """The cost source ``C**power`` of another cost source, element-wise, block by block.

    Used for ``|x - y|^p`` costs (W_p^p). Picklable when ``base`` is.
    """

    def __init__(self, base: CostSource, power: float) -> None:
        super().__init__(base)
        self.power = float(power)

    def apply(self, x: Any) -> Any:
        """``x ** power``."""
        return x**self.power

    def __repr__(self) -> str:
        return f"PowerCost({self.source!r}, power={self.power:g})"


def _lp_cost(x: Any, y: Any, p: float) -> CostSource:
    """``|x_i - y_j|^p`` (Euclidean norm) as a cost source."""
    if p == 2:
        return PointCloudCost(x, y, "sqeuclidean")
    base = PointCloudCost(x, y, "euclidean")
    return base if p == 1 else PowerCost(base, p)


def _weights_1d(name: str, w: Any, size: int) -> np.ndarray:
    """Normalised 1-D weights (uniform default), or an InputError."""
    if w is None:
        return np.full(size, 1.0 / size)
    arr = np.asarray(w, dtype=np.float64)
    if arr.shape != (size,) or not np.all(np.isfinite(arr)) or np.any(arr < 0) or arr.sum() <= 0:
        raise InputError(
            f"{name}: expected {size} finite non-negative weights with a positive sum; got "
            f"shape {arr.shape}."
        )
    return arr / arr.sum()


def wasserstein_1d_exact(x: Any, y: Any, a: Any = None, b: Any = None, p: float = 1.0) -> float:
    """Exact ``W_p^p`` between weighted 1-D samples, from their quantile functions.

    ``W_p^p = int_0^1 |F_x^{-1}(t) - F_y^{-1}(t)|^p dt``: both quantile functions are step
    functions, constant between consecutive breakpoints of the merged cumulative weights, so
    the integral is a finite sum over those intervals. Weights are normalised to 1.
    """
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    wa, wb = _weights_1d("a", a, xs.size), _weights_1d("b", b, ys.size)
    ix, iy = np.argsort(xs, kind="stable"), np.argsort(ys, kind="stable")
    xs, wa, ys, wb = xs[ix], wa[ix], ys[iy], wb[iy]
    ca, cb = np.cumsum(wa), np.cumsum(wb)                              # (n,), (m,)
    ca[-1] = cb[-1] = 1.0
    t = np.unique(np.concatenate([ca, cb]))                            # right ends of intervals
    dt = np.diff(t, prepend=0.0)                                       # interval lengths
    qa = xs[np.minimum(np.searchsorted(ca, t, side="left"), xs.size - 1)]  # F_x^{-1} on (t-dt, t]
    qb = ys[np.minimum(np.searchsorted(cb, t, side="left"), ys.size - 1)]
    return float(np.sum(dt * np.abs(qa - qb) ** p))


@dataclass(frozen=True)
class WassersteinResult:
    """Entropic estimate of ``W_p^p`` between two samples, with the exact 1-D value.

    Attributes:
        value: the entropic estimate: ``<P, C>`` of the entropic plan for ``C = |x - y|^p``
            (``debias=False``), or the Sinkhorn divergence on that cost (``debias=True``).
        exact: exact ``W_p^p`` from sorted samples for 1-D data (``exact_1d=True``), else None.
        p: the exponent.
        eps: the regularisation.
        debias: whether ``value`` is the debiased divergence.
        result: the :class:`SinkhornResult` of the (x, y) problem.
    """

    value: float
    exact: float | None
    p: float
    eps: float
    debias: bool
    result: SinkhornResult = field(repr=False)

    @property
    def distance(self) -> float:
        """``value ** (1/p)``, the estimate of ``W_p`` itself (0 for a negative estimate)."""
        return max(self.value, 0.0) ** (1.0 / self.p)


def wasserstein(
    x: Any,
    y: Any,
    a: Any = None,
    b: Any = None,
    *,
    p: float = 1.0,
    eps: float,
    debias: bool = False,
    exact_1d: bool = True,
    **options: Any,
) -> WassersteinResult:
    """Entropic estimate of ``W_p^p`` between two weighted samples (1-D or n-D).

    The cost is ``C_ij = |x_i - y_j|^p`` (Euclidean norm), built block by block as a
    :class:`PointCloudCost`; weights default to uniform and are normalised to 1.

    Args:
        x, y: samples (n,) / (n, d) and (m,) / (m, d).
        a, b: non-negative sample weights (normalised here); default uniform.
        p: exponent (>= 1).
        eps: entropic regularisation (in the units of ``|x - y|^p``).
        debias: return the Sinkhorn divergence (debiased) instead of ``<P, C>``.
        exact_1d: for 1-D samples also compute the exact ``W_p^p`` from sorted samples.
        **options: passed to :func:`bigsink.solve` (``tol``, ``max_iter``, ``client``, ...).

    Returns:
        A :class:`WassersteinResult`.
    """
    eps = check_positive("eps", eps)
    if not (isinstance(p, int | float) and math.isfinite(p) and p >= 1):
        raise InputError(f"p must be a finite number >= 1; got {p!r}.")
    xa = x if hasattr(x, "ndim") else np.asarray(x, dtype=np.float64)
    ya = y if hasattr(y, "ndim") else np.asarray(y, dtype=np.float64)
    wa = _weights_1d("a", None if a is None else np.asarray(a), int(xa.shape[0]))
    wb = _weights_1d("b", None if b is None else np.asarray(b), int(ya.shape[0]))
    one_d = xa.ndim == 1 or (xa.ndim == 2 and xa.shape[1] == 1)
    exact = None
    if exact_1d and one_d:

        exact = wasserstein_1d_exact(to_numpy(xa), to_numpy(ya), wa, wb, p)
    if debias:
        div = divergence(eps=eps, costs=(_lp_cost(xa, ya, p), _lp_cost(xa, xa, p),
                                         _lp_cost(ya, ya, p)), a=wa, b=wb, **options)
        value, res = float(div.value), div.ab
    else:
        res = solve(_lp_cost(xa, ya, p), wa, wb, eps=eps, **options)
        value = float(res.transport_cost)
    return WassersteinResult(value=value, exact=exact, p=float(p), eps=eps, debias=debias,
                             result=res)
