"""From the final potentials to a :class:`~bigsink.result.SinkhornResult`: costs, dual,
marginal errors and the checks that no non-finite or massless plan is ever returned."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..costs import CostSource
from ..errors import ConvergenceWarning, NumericalError, PrecisionWarning
from ..problem import Problem, log0
from ..result import History, MarginalError, SinkhornResult
from .loop import SolverState
from .steps import Evaluation

__all__ = ["finish"]


def _dot(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_i w_i x_i`` per batch column, with ``0 * inf`` counted as 0."""
    return np.where(w == 0, 0.0, w * np.where(w == 0, 0.0, x)).sum(axis=0)


def _kl(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Generalised KL ``sum x log(x/y) - x + y`` per batch column."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(x > 0, x * (np.log(x) - log0(y)), 0.0)
    return (t - x + y).sum(axis=0)


#: Iterations of the last stage whose rate :func:`_pace` measures (at most).
PACE_WINDOW = 500


def _pace(errors: np.ndarray, reached: float, tol: float, advice: str) -> str:
    """``advice`` led by what the last stage's errors say about going on: the rate over its
    last :data:`PACE_WINDOW` iterations (least errors of two windows, so that oscillations
    do not fool it) and the iterations that rate needs from ``reached`` to ``tol``; or, when
    the error stopped decreasing, that only a larger eps helps. ``advice`` alone when too
    few iterations ran to tell."""
    w = min(PACE_WINDOW, len(errors) // 2)
    if w < 100:
        return advice
    before, after = float(np.min(errors[-2 * w:-w])), float(np.min(errors[-w:]))
    if not (math.isfinite(before) and after > 0):
        return advice
    rate = (after / before) ** (1.0 / w)
    if rate >= 1.0:
        return (f"The error did not decrease over the last {w} iterations: this eps mixes "
                "too slowly for the problem (typically eps far below the cost's steps "
                "between neighbouring points, as in sorted 1-D data), so more iterations "
                "will not help; a larger eps will.")
    need = math.log(tol / reached) / math.log(rate)
    return (f"At the last {w} iterations' rate ({1 - rate:.2g} of the error per "
            f"iteration), reaching tol takes about {need:.2g} more iterations. {advice}")


def finish(
    problem: Problem,
    state: SolverState,
    ev: Evaluation,
    schedule: Sequence[float],
    tol: float,
    converged: bool,
    seconds: float,
    cost: CostSource | None,
    placement: str = "",
    relative_eps: str = "",
    report: dict[str, float] | None = None,
    omega: float | None = None,
) -> SinkhornResult:
    """Costs, errors and checks of the final potentials, as a :class:`SinkhornResult`.

    Raises NumericalError rather than return non-finite potentials or a vanished plan
    (naming ``omega``, the solve's fixed over-relaxation, when there was one).
    """
    f, g, eps = state.f, state.g, schedule[-1]
    assert f is not None
    a, b = problem.a, problem.b
    mass = ev.rows.sum(axis=0)                                        # (K,)
    finite = np.all(np.isfinite(f[a > 0])) and np.all(np.isfinite(g[b > 0]))
    # a balanced plan carries the marginals' mass; an unbalanced one may rightly carry
    # almost none (costs far above rho), down to what float64 holds
    vanished = problem.balanced and bool(np.any(mass <= 1e-12 * a.sum(axis=0)))
    if not finite or not np.all(np.isfinite(mass)) or vanished:
        cause = ("this is a bug in bigsink, please report it with the problem."
                 if omega is None or omega == 1.0 else
                 f"the fixed over-relaxation omega={omega:g} diverged on this problem: use "
                 "omega=None (adaptive) or a value nearer 1.")
        raise NumericalError(
            f"the solve at eps={eps:g} produced non-finite potentials or a plan with no mass "
            f"(mass {mass}); {cause}")
    pc = ev.transport_cost                                            # (K,) <P, C>
    p_log_p = (_dot(ev.rows, f) + _dot(ev.cols, g) - pc) / eps        # sum P log P
    kl = p_log_p - _dot(ev.rows, log0(a)) - _dot(ev.cols, log0(b)) - mass + a.sum(0) * b.sum(0)
    reg = pc + eps * kl                                               # (K,) balanced part
    dual = -eps * (mass - a.sum(0) * b.sum(0))                        # (K,) -eps<ab^T, e^.-1>
    for w, pot, marg, rho in ((a, f, ev.rows, problem.rho_a), (b, g, ev.cols, problem.rho_b)):
        if problem.balanced:
            dual = dual + _dot(w, pot)                                # <a, f> + <b, g>
            continue
        with np.errstate(invalid="ignore"):
            pot_kl = pot - eps * log0(w)                              # potential of the KL form
        if math.isinf(rho):
            dual = dual + _dot(w, pot_kl)
        else:
            reg = reg + rho * _kl(marg, w)                            # + rho*KL(P1 || a)
            with np.errstate(invalid="ignore", over="ignore"):
                dual = dual - rho * _dot(w, np.expm1(-pot_kl / rho))  # - rho<a, e^{-f/rho}-1>
    row_err, col_err = ev.errors(problem)
    relative = np.maximum(row_err, col_err) / problem.mass           # (K,) what tol bounds
    if problem.balanced:
        converged = bool(relative.max() <= tol)
    hist = np.array(state.history, dtype=float).reshape(-1, 4)

    def sq(x: np.ndarray) -> Any:
        """Drop the batch axis of an unbatched problem: (., 1) -> (.,), (1,) -> float."""
        if problem.batched:
            return x
        return x[..., 0] if x.ndim > 1 else float(x[0])

    result = SinkhornResult(
        f=sq(f), g=sq(g), eps=float(eps),
        transport_cost=sq(pc), reg_cost=sq(reg), dual_cost=sq(dual),
        marginal_error=MarginalError(sq(row_err), sq(col_err)), mass=sq(mass),
        n_iter=state.n_iter, converged=converged,
        history=History(hist[:, 0].astype(int), hist[:, 1], hist[:, 2], hist[:, 3]),
        eps_stages=tuple(float(e) for e in schedule), rho_a=problem.rho_a, rho_b=problem.rho_b,
        tol=tol, seconds=seconds, placement=placement,
        relative_eps=relative_eps, cost=cost,
        active_fraction=(report or {}).get("active_fraction"),
        truncation_bound=(report or {}).get("truncation_bound"),
    )
    stalled = (report or {}).get("stalled")
    if not converged and stalled is not None:
        warnings.warn(
            PrecisionWarning(
                f"Sinkhorn stopped after {state.n_iter} iterations, not converged: the "
                f"marginal error stopped improving at about {max(stalled, relative.max()):.2g}"
                f" (relative to the mass), the rounding level of this {problem.a.shape[0]} x "
                f"{problem.b.shape[0]} problem in float64, above tol {tol:g}. More iterations "
                f"cannot reach it: use tol >= {10 * max(stalled, relative.max()):.0e}."
            ),
            stacklevel=3,
        )
    elif not converged:
        advice = ("Raise max_iter, or use eps-scaling (eps_scaling=True)." if len(schedule) == 1
                  else f"eps-scaling ran ({len(schedule)} stages): raise max_iter, or a "
                  "larger eps converges faster.")
        advice = _pace(hist[hist[:, 1] == eps, 2], float(relative.max()), tol, advice)
        warnings.warn(
            ConvergenceWarning(
                f"Sinkhorn did not converge in {state.n_iter} iterations: marginal error "
                f"row {row_err.max():.3g}, col {col_err.max():.3g} (relative to the mass: "
                f"{relative.max():.3g}) > tol {tol:g} (eps={eps:g}). {advice}"
            ),
            stacklevel=3,
        )
    return result
