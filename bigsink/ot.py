"""POT's calls on bigsink's solver: replace ``import ot`` by ``import bigsink.ot as ot``.

:func:`sinkhorn`, :func:`sinkhorn2`, :func:`sinkhorn_unbalanced`,
:func:`sinkhorn_unbalanced2`, :func:`solve` and :func:`solve_sample` take POT's arguments in
POT's order, with POT's names (``numItermax``, ``stopThr``, ``log``, ``reg_m``, ...) and
defaults, and return what POT returns (plans, losses, ``log`` dictionaries, an
:class:`OTResult` with ``plan``, ``value``, ``value_linear``, ``potentials``, ``status``),
computed by :func:`bigsink.solve`. What differs, and why:

* **Stopping test.** POT stops when the L2 norm of the column marginal error is below
  ``stopThr`` (balanced; unbalanced: the relative change of the scalings). bigsink stops when
  the L1 marginal error, relative to the total mass, is below ``tol``; ``stopThr`` is passed
  as ``tol``, which is at least as strict for a balanced problem. ``numItermax`` is
  bigsink's budget over all its eps stages.
* **Method.** Every Sinkhorn variant POT names (``"sinkhorn"``, ``"sinkhorn_log"``,
  ``"sinkhorn_stabilized"``, ``"sinkhorn_epsilon_scaling"``, ``"greenkhorn"``) has the same
  fixed point; bigsink runs its own (log domain with absorption, eps-scaling and
  over-relaxation, DESIGN.md §1) for all of them, so small ``reg`` does not overflow.
* **Forbidden pairs.** An ``inf`` entry of ``M`` forbids the pair, as in POT, where
  ``exp(-inf) = 0``: the returned plan is exactly 0 there. bigsink's solver needs finite
  costs, so such entries are replaced by a finite cost ``B`` large enough that the plan's
  mass there is at most ``stopThr / 1000`` of the total (checked after the solve from the
  final potentials; ``B`` is raised and the solve warm-started until it is), and that mass
  is then set to 0. A row or column of positive weight whose pairs are all forbidden is an
  InputError (there is no feasible plan).
* **Potentials** are POT's log-scalings (``log_u``, ``log_v``), unique up to adding a
  constant to one and subtracting it from the other; POT's and bigsink's may differ by that
  constant. ``log_u + log_v`` (and so the plan) does not.
* **Entropy reference.** ``reg_type="entropy"`` (POT's ``-H(P)``) and a reference
  measure ``c`` are solved exactly as the KL problem on the shifted cost
  ``M + reg * (log a_i + log b_j - log c_ij)``, whose solution is the same plan.
* Inputs are NumPy (or lists); results are NumPy. For gradients use
  :mod:`bigsink.autodiff`. Exact (unregularised) OT (``reg=None`` or ``0``) is POT's
  ``ot.emd``: bigsink is an entropic solver and says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .costs import PointCloudCost, pairwise_cost
from .errors import ConvergenceWarning, InputError, NumericalError
from .kernels import plan_strip
from .result import SinkhornResult
from .solver import solve as _solve

__all__ = [
    "METHODS", "LazyPlan", "OTResult", "dist", "sinkhorn", "sinkhorn2", "sinkhorn_unbalanced",
    "sinkhorn_unbalanced2", "solve", "solve_sample", "unif",
]

#: POT's Sinkhorn methods: one fixed point, which bigsink's solver computes for each.
METHODS = ("sinkhorn", "sinkhorn_knopp", "sinkhorn_log", "sinkhorn_stabilized",
           "sinkhorn_epsilon_scaling", "greenkhorn", "sinkhorn_translation_invariant")

#: POT metric names and their bigsink point-cloud cost (metric, Minkowski p).
_METRICS = {"sqeuclidean": ("sqeuclidean", 2.0), "euclidean": ("euclidean", 2.0),
            "cityblock": ("minkowski", 1.0), "minkowski": ("minkowski", 2.0)}

#: The plan's mass left on forbidden pairs, relative to ``stopThr``, before it is zeroed.
LEAK_SHARE = 1e-3

#: Rounds of raising the forbidden pairs' stand-in cost before giving up.
LEAK_ROUNDS = 6


@dataclass(frozen=True)
class _Spec:
    """One problem as POT states it, checked: ``M`` (n, m) with ``inf`` for forbidden pairs,
    weights ``a`` (n,) and ``b`` (m,) or (m, K), ``reg``, the marginal penalties and the
    entropy's reference (``"kl"``: ``a b^T``; ``"entropy"``: 1; or a matrix ``c``)."""

    M: np.ndarray
    a: np.ndarray
    b: np.ndarray
    reg: float
    rho: tuple[float, float] = (math.inf, math.inf)
    reference: Any = "kl"

    @property
    def balanced(self) -> bool:
        """Both marginals are constraints."""
        return math.isinf(self.rho[0]) and math.isinf(self.rho[1])

    def shift(self) -> np.ndarray | None:
        """``reg * (log a_i + log b_j - log c_ij)`` (n, m): the cost shift that turns the
        problem with reference ``c`` into bigsink's KL problem; None for ``"kl"``. Rows or
        columns of weight 0 carry no mass and are not shifted."""
        if isinstance(self.reference, str) and self.reference == "kl":
            return None
        b = self.b if self.b.ndim == 1 else self.b[:, 0]
        with np.errstate(divide="ignore"):
            la = np.where(self.a > 0, np.log(np.where(self.a > 0, self.a, 1.0)), 0.0)   # (n,)
            lb = np.where(b > 0, np.log(np.where(b > 0, b, 1.0)), 0.0)                # (m,)
            lc = 0.0 if isinstance(self.reference, str) else np.log(self.reference)      # -inf: c=0
        return self.reg * (la[:, None] + lb[None, :] - lc)                               # (n, m)


@dataclass(frozen=True)
class _Solved:
    """A solved :class:`_Spec`: its plan (n, m) or (n, m, K), zero on forbidden pairs,
    bigsink's potentials ``f``, ``g`` (of the shifted cost, :meth:`_Spec.shift`) and its
    result."""

    plan: np.ndarray
    f: np.ndarray
    g: np.ndarray
    result: SinkhornResult


def _weights(name: str, w: Any, size: int, batch: bool = False) -> np.ndarray:
    """POT's weights: None or empty means uniform; else float64, 1-D (or 2-D if ``batch``)."""
    if w is None or (hasattr(w, "__len__") and len(w) == 0):
        return np.full(size, 1.0 / size)
    arr = np.asarray(w, dtype=np.float64)
    if arr.ndim not in ((1, 2) if batch else (1,)) or arr.shape[0] != size:
        batched = " (or (size, n_hists))" if batch else ""
        raise InputError(f"{name}: expected {size} weights{batched} to match M, got shape "
                         f"{arr.shape}.")
    return arr


def _cost_matrix(M: Any) -> np.ndarray:
    """``M`` as a float64 (n, m) matrix; ``+inf`` (forbidden) is kept, NaN and ``-inf`` are
    an InputError."""
    arr = np.asarray(M, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise InputError(f"M: expected a non-empty 2-D (n, m) cost matrix, got shape "
                         f"{arr.shape}. POT's order is sinkhorn(a, b, M, reg).")
    bad = np.isnan(arr) | np.isneginf(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(f"M[{i}, {j}] = {arr[i, j]}: costs must be numbers or +inf (a "
                         "forbidden pair).")
    return arr


def _reg(reg: Any) -> float:
    """``reg`` > 0 as a float (bigsink is an entropic solver: no exact OT)."""
    if reg is None or (isinstance(reg, int | float | np.number) and float(reg) == 0.0):
        raise InputError(
            "reg: bigsink solves entropic OT, so reg must be > 0; for exact OT (reg=None or "
            "0) use POT's ot.emd / ot.solve.")
    value = float(reg)
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"reg must be a finite number > 0; got {reg!r}.")
    return value


def _rho(reg_m: Any) -> tuple[float, float]:
    """POT's ``reg_m`` (a number, or a pair for the two sides) as ``(rho_a, rho_b)``."""
    values = np.atleast_1d(np.asarray(reg_m, dtype=np.float64))
    if values.shape not in ((1,), (2,)) or np.isnan(values).any() or (values <= 0).any():
        raise InputError(f"reg_m: expected a number > 0 or a pair of them; got {reg_m!r}.")
    return float(values[0]), float(values[-1])


def _reference(reg_type: Any, c: Any, shape: tuple[int, int]) -> Any:
    """The entropy's reference: ``"kl"``, ``"entropy"`` or a checked (n, m) matrix ``c``."""
    kind = str(reg_type).lower() if isinstance(reg_type, str) else None
    if kind not in ("kl", "entropy"):
        raise InputError(f"reg_type={reg_type!r}: bigsink.ot supports 'KL' and 'entropy' "
                         "(entropic OT); for 'L2' and others use POT.")
    if c is None:
        return kind
    if kind == "entropy":
        raise InputError("c: reg_type='entropy' fixes the reference to 1; pass c with 'KL'.")
    arr = np.asarray(c, dtype=np.float64)
    if arr.shape != shape or not np.isfinite(arr).all() or (arr < 0).any():
        raise InputError(f"c: expected a non-negative finite {shape} reference measure, got "
                         f"shape {arr.shape}.")
    return arr


def _method(method: Any) -> None:
    """InputError for a method name POT would not take for Sinkhorn."""
    if method is not None and str(method).lower() not in METHODS:
        raise InputError(f"method={method!r}: expected one of {', '.join(METHODS)} (bigsink "
                         "runs its stabilised solver for each; their fixed point is the same).")


def _init(warmstart: Any, spec: _Spec) -> tuple[Any, Any] | None:
    """POT's warm start ``(log u, log v)`` as bigsink potentials (the inverse of
    :func:`_log_scalings`)."""
    if warmstart is None:
        return None
    lu, lv = (np.asarray(x, dtype=np.float64) for x in warmstart)
    if spec.balanced and isinstance(spec.reference, str) and spec.reference == "kl":
        return spec.reg * lu, spec.reg * lv
    with np.errstate(divide="ignore"):
        b = spec.b if spec.b.ndim == 1 else spec.b[:, 0]
        return spec.reg * (lu + np.log(spec.a)), spec.reg * (lv + np.log(b))


def _feasible(spec: _Spec, allowed: np.ndarray) -> None:
    """InputError naming a weighted row or column whose pairs are all forbidden."""
    b = spec.b if spec.b.ndim == 1 else spec.b.max(axis=1)
    for name, w, free in (("a", spec.a, allowed.any(axis=1)), ("b", b, allowed.any(axis=0))):
        stuck = np.flatnonzero((w > 0) & ~free)
        if stuck.size:
            k = int(stuck[0])
            side = "row" if name == "a" else "column"
            raise InputError(
                f"M: every pair of {side} {k} is forbidden (inf), but {name}[{k}] = {w[k]:g} > 0:"
                f" no plan can move that mass. Allow a pair in {side} {k} or set {name}[{k}] = 0.")


def _run(spec: _Spec, max_iter: int, tol: float, verbose: bool, warn: bool,
         init: tuple[Any, Any] | None) -> _Solved:
    """Solve ``spec`` with :func:`bigsink.solve`; forbidden pairs as in the module
    docstring."""
    shift = spec.shift()
    C = spec.M if shift is None else spec.M + shift                     # (n, m); inf stays
    allowed = np.isfinite(C)
    _feasible(spec, allowed)
    forbidden = ~allowed
    lo, hi = float(C[allowed].min()), float(C[allowed].max())
    stand_in = hi + 2.0 * (hi - lo) + 50.0 * spec.reg                     # first guess for B
    a = spec.a if spec.b.ndim == 1 else np.repeat(spec.a[:, None], spec.b.shape[1], axis=1)
    with warnings.catch_warnings():
        if not warn:
            warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(LEAK_ROUNDS):
            Cb = np.where(forbidden, stand_in, C) if forbidden.any() else C
            r = _solve(Cb, a, spec.b, eps=spec.reg, tol=tol, max_iter=max_iter,
                       rho_a=spec.rho[0], rho_b=spec.rho[1], init=init,
                       progress=bool(verbose))
            P = r.plan()                                                  # (n, m) or (n, m, K)
            leak = float(P[forbidden].sum()) if forbidden.any() else 0.0
            if leak <= LEAK_SHARE * tol * float(np.max(r.mass)):
                break
            stand_in += hi - lo + 50.0 * spec.reg                         # raise B, warm start
            init = (r.f, r.g)
        else:
            raise NumericalError(
                f"forbidden pairs (inf in M) keep {leak:.3g} of the plan's mass after "
                f"{LEAK_ROUNDS} rounds; rescale M or raise reg.")
    P[forbidden] = 0.0
    return _Solved(P, np.asarray(r.f, dtype=np.float64), np.asarray(r.g, dtype=np.float64), r)


def _xlogy_ratio(p: np.ndarray, q: Any) -> float:
    """``sum p log(p / q)`` with ``0 log 0 = 0`` (POT's ``kl_div`` without mass terms)."""
    q = np.broadcast_to(q, p.shape)
    pos = p > 0
    return float(np.sum(p[pos] * np.log(p[pos] / q[pos])))


def _value(spec: _Spec, P: np.ndarray) -> tuple[float, float]:
    """POT's ``(value, value_linear)`` of plan ``P`` (n, m): ``<P, M>`` plus ``reg`` times
    the KL to the reference (POT's ``kl_div``, no mass terms) or ``sum P log P``, plus each
    finite marginal penalty ``rho * KL(P 1 || a)``."""
    linear = _losses(spec, P)
    ref = spec.reference
    if isinstance(ref, str):
        q = 1.0 if ref == "entropy" else spec.a[:, None] * spec.b[None, :]
    else:
        q = ref
    value = linear + spec.reg * _xlogy_ratio(P, q)
    for rho, marginal, w in ((spec.rho[0], P.sum(axis=1), spec.a),
                             (spec.rho[1], P.sum(axis=0), spec.b)):
        if math.isfinite(rho):
            value += rho * _xlogy_ratio(marginal, w)
    return value, linear


def _log_scalings(spec: _Spec, f: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """POT's ``(log u, log v)`` from bigsink's potentials ``f``, ``g`` (of the shifted
    cost). Balanced with the KL reference: ``P = exp(log u + log v - M/reg)``
    (``sinkhorn_log``), so ``log u = f/reg``; otherwise ``P = u (c exp(-M/reg)) v`` with the
    reference ``c`` (``sinkhorn_knopp_unbalanced``; for balanced ``"entropy"``, ``c = 1`` is
    ``sinkhorn_log``'s form too), so ``log u = f/reg - log a`` (``-inf`` where ``a = 0``)."""
    lu, lv = f / spec.reg, g / spec.reg
    if spec.balanced and isinstance(spec.reference, str) and spec.reference == "kl":
        return lu, lv
    b = spec.b if spec.b.ndim == 1 else spec.b[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        lu = np.where(spec.a > 0, lu - np.log(np.where(spec.a > 0, spec.a, 1)), -np.inf)
        lv = np.where(b > 0, lv - np.log(np.where(b > 0, b, 1)), -np.inf)
    return lu, lv


def _log(spec: _Spec, solved: _Solved) -> dict[str, Any]:
    """POT's ``log`` dictionary (``niter``, ``err``, ``u``, ``v``, ``log_u``, ``log_v``,
    and for unbalanced problems ``logu``, ``logv``, ``cost``, ``total_cost``), plus
    bigsink's ``result``."""
    lu, lv = _log_scalings(spec, solved.f, solved.g)
    r = solved.result
    out: dict[str, Any] = {
        "niter": int(r.n_iter), "err": [float(e) for e in r.history.error],
        "log_u": lu, "log_v": lv, "u": np.exp(lu), "v": np.exp(lv), "result": r,
    }
    if not spec.balanced and solved.plan.ndim == 2:
        total, linear = _value(spec, solved.plan)
        out.update(logu=lu, logv=lv, cost=linear, total_cost=total)
    return out


def _losses(spec: _Spec, P: np.ndarray) -> Any:
    """``<P, M>`` over the allowed pairs: a float, or one per histogram (K,) for a batched
    ``b`` (``P`` (n, m, K))."""
    M = np.where(np.isfinite(spec.M), spec.M, 0.0)                       # P is 0 there
    if P.ndim == 3:
        return np.einsum("ijk,ij->k", P, M)
    return float(np.sum(P * M))


def unif(n: int) -> np.ndarray:
    """POT's ``ot.unif``: uniform weights ``1/n`` (n,)."""
    return np.full(int(n), 1.0 / int(n))


def dist(x1: Any, x2: Any = None, metric: str = "sqeuclidean", p: float = 2.0) -> np.ndarray:
    """POT's ``ot.dist``: the (n, m) cost between points ``x1`` (n, d) and ``x2`` (m, d)
    (default ``x1``) for the metrics of :func:`solve_sample` (``"minkowski"`` with ``p``)."""
    if metric not in _METRICS:
        raise InputError(f"metric={metric!r}: bigsink.ot supports {', '.join(_METRICS)}.")
    name, q = _METRICS[metric]
    x = np.asarray(x1, dtype=np.float64)
    y = x if x2 is None else np.asarray(x2, dtype=np.float64)
    x, y = (v[:, None] if v.ndim == 1 else v for v in (x, y))
    return np.asarray(pairwise_cost(x, y, name, p if metric == "minkowski" else q))


def _balanced(a: Any, b: Any, M: Any, reg: Any) -> _Spec:
    """POT's ``(a, b, M, reg)`` of a balanced call, checked (``b`` may be (m, n_hists))."""
    Mx = _cost_matrix(M)
    n, m = Mx.shape
    return _Spec(Mx, _weights("a", a, n), _weights("b", b, m, batch=True), _reg(reg))


def sinkhorn(a: Any, b: Any, M: Any, reg: float, method: str = "sinkhorn",
             numItermax: int = 1000, stopThr: float = 1e-9, verbose: bool = False,
             log: bool = False, warn: bool = True, warmstart: Any = None,
             **kwargs: Any) -> Any:
    """POT's ``ot.sinkhorn``: the entropic OT plan (n, m) between ``a`` and ``b`` for cost
    ``M``; with ``b`` of shape (m, n_hists), the losses ``<P_k, M>`` (n_hists,) instead.

    Args:
        a, b: weights (n,) and (m,) (or (m, n_hists)); empty lists mean uniform.
        M: the (n, m) cost; ``inf`` forbids a pair.
        reg: the entropic regularisation (bigsink's ``eps``).
        method: any of :data:`METHODS` (one fixed point).
        numItermax: iteration budget (bigsink's ``max_iter``).
        stopThr: tolerance, passed as bigsink's ``tol`` (see the module docstring).
        verbose: show bigsink's progress bar.
        log: also return POT's ``log`` dictionary.
        warn: warn (:class:`~bigsink.errors.ConvergenceWarning`) when not converged.
        warmstart: POT's ``(log u, log v)`` to start from.
        **kwargs: POT's method options (``tau``, ``stopThr`` checks ...), accepted and
            unused: bigsink's solver stabilises itself.

    Returns:
        The plan, or the losses; with ``log``, ``(that, log_dict)``.
    """
    _method(method)
    spec = _balanced(a, b, M, reg)
    solved = _run(spec, numItermax, stopThr, verbose, warn, _init(warmstart, spec))
    out = solved.plan if spec.b.ndim == 1 else _losses(spec, solved.plan)
    return (out, _log(spec, solved)) if log else out


def sinkhorn2(a: Any, b: Any, M: Any, reg: float, method: str = "sinkhorn",
              numItermax: int = 1000, stopThr: float = 1e-9, verbose: bool = False,
              log: bool = False, warn: bool = False, warmstart: Any = None,
              **kwargs: Any) -> Any:
    """POT's ``ot.sinkhorn2``: the loss ``<P, M>`` of the entropic plan (a float), or one per
    column of a (m, n_hists) ``b``. Arguments as :func:`sinkhorn` (``warn`` off by
    default, as in POT).

    Returns:
        The loss (or losses); with ``log``, ``(loss, log_dict)``.
    """
    _method(method)
    spec = _balanced(a, b, M, reg)
    solved = _run(spec, numItermax, stopThr, verbose, warn, _init(warmstart, spec))
    loss = _losses(spec, solved.plan)
    return (loss, _log(spec, solved)) if log else loss


def _unbalanced(a: Any, b: Any, M: Any, reg: Any, reg_m: Any, reg_type: Any,
                c: Any) -> _Spec:
    """POT's unbalanced call, checked."""
    Mx = _cost_matrix(M)
    n, m = Mx.shape
    return _Spec(Mx, _weights("a", a, n), _weights("b", b, m), _reg(reg), _rho(reg_m),
                 _reference(reg_type, c, Mx.shape))


def sinkhorn_unbalanced(a: Any, b: Any, M: Any, reg: float, reg_m: Any,
                        method: str = "sinkhorn", reg_type: str = "kl", c: Any = None,
                        warmstart: Any = None, numItermax: int = 1000,
                        stopThr: float = 1e-6, verbose: bool = False, log: bool = False,
                        **kwargs: Any) -> Any:
    """POT's ``ot.sinkhorn_unbalanced``: the plan of
    ``min <P, M> + reg*KL(P || c) + reg_m1*KL(P 1 || a) + reg_m2*KL(P^T 1 || b)``.

    Args:
        a, b: weights (n,) and (m,); empty lists mean uniform.
        M: the (n, m) cost; ``inf`` forbids a pair.
        reg: the entropic regularisation.
        reg_m: the marginal penalty, or a pair ``(reg_m1, reg_m2)`` (``inf``: that side is a
            constraint).
        method: any of :data:`METHODS`.
        reg_type: ``"kl"`` (reference ``c = a b^T`` unless ``c`` is given) or ``"entropy"``
            (reference 1).
        c: the reference measure (n, m).
        warmstart: POT's ``(log u, log v)``.
        numItermax, stopThr, verbose, log: as in :func:`sinkhorn`.
        **kwargs: POT's method options, accepted and unused.

    Returns:
        The plan; with ``log``, ``(plan, log_dict)`` (``logu``, ``logv``, ``cost``,
        ``total_cost`` as POT's).
    """
    _method(method)
    spec = _unbalanced(a, b, M, reg, reg_m, reg_type, c)
    solved = _run(spec, numItermax, stopThr, verbose, True, _init(warmstart, spec))
    return (solved.plan, _log(spec, solved)) if log else solved.plan


def sinkhorn_unbalanced2(a: Any, b: Any, M: Any, reg: float, reg_m: Any,
                         method: str = "sinkhorn", reg_type: str = "kl", c: Any = None,
                         warmstart: Any = None, returnCost: str = "linear",
                         numItermax: int = 1000, stopThr: float = 1e-6,
                         verbose: bool = False, log: bool = False, **kwargs: Any) -> Any:
    """POT's ``ot.sinkhorn_unbalanced2``: the loss of :func:`sinkhorn_unbalanced`'s plan,
    ``<P, M>`` (``returnCost="linear"``) or the whole objective (``"total"``).

    Returns:
        The loss; with ``log``, ``(loss, log_dict)``.
    """
    if returnCost not in ("linear", "total"):
        raise InputError(f"returnCost: expected 'linear' or 'total', got {returnCost!r}.")
    _method(method)
    spec = _unbalanced(a, b, M, reg, reg_m, reg_type, c)
    solved = _run(spec, numItermax, stopThr, verbose, True, _init(warmstart, spec))
    total, linear = _value(spec, solved.plan)
    loss = linear if returnCost == "linear" else total
    return (loss, _log(spec, solved)) if log else loss


class LazyPlan:
    """The plan of a point-cloud solve, computed rows at a time: ``lazy[i0:i1]`` is rows
    ``i0:i1`` of ``P`` (dense), never the whole matrix unless asked for."""

    def __init__(self, result: SinkhornResult) -> None:
        self._result = result
        self.shape = (int(np.shape(result.f)[0]), int(np.shape(result.g)[0]))

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key[0] if isinstance(key, tuple) else key
        cols = key[1] if isinstance(key, tuple) and len(key) > 1 else slice(None)
        start, stop, step = (rows if isinstance(rows, slice) else slice(rows, rows + 1)
                             ).indices(self.shape[0])
        src = self._result.checked_cost(None, "lazy_plan")
        f, g = self._result.potentials()
        P, _ = plan_strip(src.rows(start, stop), start, f[start:stop], g,
                          self._result.eps)                                    # (r, m, K)
        P = P[::step, :, 0]
        return P[0, cols] if not isinstance(rows, slice) else P[:, cols]


@dataclass(frozen=True)
class OTResult:
    """POT's ``OTResult`` for an entropic solve: ``plan``, ``value`` (the regularised
    objective, POT's formula), ``value_linear`` (``<P, M>``), ``potentials`` (POT's
    ``(log_u, log_v)``), ``status`` (``"Converged"`` or why not), the marginals, ``log``,
    and bigsink's own :class:`~bigsink.result.SinkhornResult` as ``result``."""

    value: float
    value_linear: float
    potentials: tuple[np.ndarray, np.ndarray]
    status: str
    result: SinkhornResult
    log: dict[str, Any] = field(default_factory=dict, repr=False)
    dense_plan: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def plan(self) -> np.ndarray:
        """The (n, m) plan."""
        return self.dense_plan if self.dense_plan is not None else self.result.plan()

    @property
    def lazy_plan(self) -> LazyPlan:
        """The plan, computed rows at a time (:class:`LazyPlan`)."""
        return LazyPlan(self.result)

    @property
    def marginal_a(self) -> np.ndarray:
        """Row sums of the plan (n,)."""
        return self.plan.sum(axis=1)

    @property
    def marginal_b(self) -> np.ndarray:
        """Column sums of the plan (m,)."""
        return self.plan.sum(axis=0)

    @property
    def marginals(self) -> tuple[np.ndarray, np.ndarray]:
        """``(marginal_a, marginal_b)``."""
        return self.marginal_a, self.marginal_b


def _status(r: SinkhornResult) -> str:
    """POT's ``status``: ``"Converged"``, or what stopped short."""
    if r.converged:
        return "Converged"
    return (f"Not converged: marginal error {float(np.max(r.marginal_error.row)):.3g} > tol "
            f"{r.tol:g} after {r.n_iter} iterations")


def _solve_options(method: Any, plan_init: Any, n_threads: Any, grad: Any) -> None:
    """InputError for ``ot.solve`` options bigsink does not have."""
    _method(method)
    if plan_init is not None:
        raise InputError("plan_init: bigsink warm-starts from potentials; pass "
                         "potentials_init=(log_u, log_v) instead.")
    if grad not in ("autodiff", "envelope", "detach", "last_step"):
        raise InputError(f"grad={grad!r}: expected one of POT's 'autodiff', 'envelope', "
                         "'detach', 'last_step' (NumPy results have no gradients; see "
                         "bigsink.autodiff).")


def solve(M: Any, a: Any = None, b: Any = None, reg: Any = None, c: Any = None,
          reg_type: str = "KL", unbalanced: Any = None, unbalanced_type: str = "KL",
          method: str | None = None, n_threads: int = 1, max_iter: int | None = None,
          plan_init: Any = None, potentials_init: Any = None, tol: float | None = None,
          verbose: bool = False, grad: str = "autodiff") -> OTResult:
    """POT's ``ot.solve`` for entropic OT (``reg > 0``): balanced, or unbalanced with KL
    penalties (``unbalanced``, a number or a pair), reference ``"KL"`` or ``"entropy"``.

    Args:
        M: the (n, m) cost; ``inf`` forbids a pair.
        a, b: weights (default uniform).
        reg: the entropic regularisation (> 0; exact OT is POT's).
        c: the reference measure of the KL term (default ``a b^T``).
        reg_type: ``"KL"`` or ``"entropy"``.
        unbalanced: the marginal penalty (None: balanced).
        unbalanced_type: ``"KL"``.
        method: any of :data:`METHODS`, or None.
        n_threads: accepted for POT's signature (bigsink uses its executor's threads).
        max_iter: iteration budget (default 1000, as POT's Sinkhorn).
        plan_init: not supported (InputError): use ``potentials_init``.
        potentials_init: POT's ``(log_u, log_v)`` to start from.
        tol: tolerance (default 1e-9, as POT's Sinkhorn), passed as bigsink's ``tol``.
        verbose: show bigsink's progress bar.
        grad: POT's option; results are NumPy (see :mod:`bigsink.autodiff` for gradients).

    Returns:
        :class:`OTResult`.
    """
    _solve_options(method, plan_init, n_threads, grad)
    Mx = _cost_matrix(M)
    n, m = Mx.shape
    if unbalanced is not None and str(unbalanced_type).lower() != "kl":
        raise InputError(f"unbalanced_type={unbalanced_type!r}: bigsink.ot supports 'KL'.")
    rho = _rho(unbalanced) if unbalanced is not None else (math.inf, math.inf)
    spec = _Spec(Mx, _weights("a", a, n), _weights("b", b, m), _reg(reg), rho,
                 _reference(reg_type, c, Mx.shape))
    tol = 1e-9 if tol is None else float(tol)
    solved = _run(spec, 1000 if max_iter is None else int(max_iter), tol, verbose, True,
                  _init(potentials_init, spec))
    value, linear = _value(spec, solved.plan)
    log = _log(spec, solved)
    return OTResult(value, linear, (log["log_u"], log["log_v"]), _status(solved.result),
                    solved.result, log, solved.plan)


#: ``solve_sample`` builds the dense cost (as POT does) up to this many entries; above, or
#: with ``lazy=True``, the clouds are solved as a :class:`~bigsink.PointCloudCost`.
DENSE_SAMPLE_ENTRIES = 4 * 10**7


def solve_sample(X_a: Any, X_b: Any, a: Any = None, b: Any = None,
                 metric: str = "sqeuclidean", reg: Any = None, c: Any = None,
                 reg_type: str = "KL", unbalanced: Any = None, unbalanced_type: str = "KL",
                 lazy: bool = False, batch_size: int | None = None,
                 method: str | None = None, n_threads: int = 1, max_iter: int | None = None,
                 plan_init: Any = None, potentials_init: Any = None, tol: float | None = None,
                 verbose: bool = False, grad: str = "autodiff") -> OTResult:
    """POT's ``ot.solve_sample`` for entropic OT between point clouds ``X_a`` (n, d) and
    ``X_b`` (m, d) with POT's ``metric`` (``"sqeuclidean"``: ``|x - y|^2``,
    ``"euclidean"``, ``"cityblock"``, ``"minkowski"`` with p = 2).

    Small problems build the dense cost and run :func:`solve` (as POT does). With
    ``lazy=True``, or above :data:`DENSE_SAMPLE_ENTRIES` entries, the clouds are solved as a
    :class:`~bigsink.PointCloudCost` (costs computed block by block, never stored, the
    multiscale solver where it pays) and ``plan`` is formed only when asked for
    (``lazy_plan`` gives rows at a time). Lazy solves take ``reg_type="KL"`` or balanced
    ``"entropy"`` and no ``c``. Other arguments as in :func:`solve`; ``batch_size`` is
    accepted for POT's signature (bigsink chooses its own blocks).

    Returns:
        :class:`OTResult`.
    """
    if metric not in _METRICS:
        raise InputError(f"metric={metric!r}: bigsink.ot supports {', '.join(_METRICS)}; "
                         "for others, build M and call bigsink.ot.solve(M, ...).")
    name, p = _METRICS[metric]
    x, y = np.asarray(X_a, dtype=np.float64), np.asarray(X_b, dtype=np.float64)
    x, y = (v[:, None] if v.ndim == 1 else v for v in (x, y))
    if not lazy and x.shape[0] * y.shape[0] <= DENSE_SAMPLE_ENTRIES:
        M = np.asarray(pairwise_cost(x, y, name, p), dtype=np.float64)       # (n, m)
        return solve(M, a, b, reg, c, reg_type, unbalanced, unbalanced_type, method,
                     n_threads, max_iter, plan_init, potentials_init, tol, verbose, grad)
    _solve_options(method, plan_init, n_threads, grad)
    ref = _reference(reg_type, c, (x.shape[0], y.shape[0]))
    rho = _rho(unbalanced) if unbalanced is not None else (math.inf, math.inf)
    if not isinstance(ref, str) or (ref == "entropy" and not math.isinf(max(rho))):
        raise InputError("a lazy solve_sample takes reg_type='KL' (no c), or 'entropy' when "
                         "balanced; pass lazy=False for the others.")
    cost = PointCloudCost(x, y, name, p=p)
    wa, wb = _weights("a", a, x.shape[0]), _weights("b", b, y.shape[0])
    spec = _Spec(np.empty((0, 0)), wa, wb, _reg(reg), rho, "kl")
    init = _init(potentials_init, spec)
    r = _solve(cost, wa, wb, eps=spec.reg, tol=1e-9 if tol is None else float(tol),
               max_iter=1000 if max_iter is None else int(max_iter), rho_a=rho[0],
               rho_b=rho[1], init=init, progress=bool(verbose))
    f, g = r.potentials()
    f, g = f[:, 0], g[:, 0]
    linear = float(r.transport_cost)
    if ref == "entropy":          # sum P log P = (<a, f> + <b, g> - <P, C>) / reg, balanced
        value = float(wa @ f + wb @ g)
    else:                         # bigsink's reg_cost less POT's dropped mass terms
        mass = float(r.mass)
        value = float(r.reg_cost) - spec.reg * (wa.sum() * wb.sum() - mass) - sum(
            rho_s * (w.sum() - mass) for rho_s, w in ((rho[0], wa), (rho[1], wb))
            if math.isfinite(rho_s))
    lu, lv = _log_scalings(spec, f, g)
    log = {"niter": int(r.n_iter), "err": [float(e) for e in r.history.error],
           "log_u": lu, "log_v": lv, "result": r}
    return OTResult(value, linear, (lu, lv), _status(r), r, log)
