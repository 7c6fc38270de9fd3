"""The coordinator loop: Sinkhorn with eps-scaling, written once against the Step contract.

The loop holds the potentials (O(n + m) numbers) and talks only to an executor
:class:`~bigsink.executors.Session` and to each eps stage's
:class:`~bigsink.solver.steps.Step`. Each iteration is **one pass over C**: the step yields
the new ``f`` from ``g`` and, from the same pass, the new ``g``. The order is therefore
*f then g*: after an iteration the column marginal is exact, and the row error of the
potentials an iteration started from,

    err = sum_i a_i |1 - exp((f_i - f_new_i) / eps)|                          (DESIGN.md §2)

comes for free from the f-update. That error drives stopping; a final evaluation (the
step's own sums, or one exact pass) measures the marginals of the returned potentials.

eps-scaling (on by default when ``eps`` is small against the cost's spread, see
:func:`~bigsink.solver.config.eps_schedule`) solves ``eps_0 > eps_1 > ... > eps`` with
warm starts; every stage runs the same loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..costs import CostSource, reads_store
from ..errors import InputError, NumericalError
from ..executors import Session, StripJob
from ..kernels import add_partials, merge_scan, moments_strip, scan_strip
from ..problem import Problem, log0
from .config import STAGE_TOL, SinkhornConfig
from .steps import Evaluation, Step, StepFactory, evaluate

LOG = logging.getLogger(__name__)

__all__ = ["CostStats", "Relaxation", "SolverState", "check_resolution", "iterate",
           "relative_eps", "row_error", "scan", "translate"]

#: Iterations per window of the over-relaxation's rate estimate (:class:`Relaxation`).
RELAX_WINDOW = 8
#: Cap on the adaptive over-relaxation factor (SOR converges for omega < 2).
OMEGA_MAX = 1.95
#: A window without progress at a settled omega scales ``omega - 1`` by this.
BACKOFF = 0.8
#: Fraction of the way to the estimated optimum that omega moves per window.
GROWTH = 0.5
#: Cap on the estimated plain rate, so ``2 / (1 + sqrt(1 - lam))`` stays finite.
LAM_MAX = 0.9999


@dataclass(frozen=True)
class CostStats:
    """What the first pass over C learns: finite range and the first non-finite entry."""

    lo: float
    hi: float
    n_bad: int
    first_bad: int

    @property
    def spread(self) -> float:
        """``max(C) - min(C)``."""
        return self.hi - self.lo


@dataclass(frozen=True)
class SolverState:
    """Everything needed to continue a solve: a checkpoint is one of these.

    ``f`` is ``None`` before the first iteration of a run that had no initial ``f``.
    """

    stage: int
    f: np.ndarray | None
    g: np.ndarray
    n_iter: int
    history: tuple[tuple[int, float, float, float], ...] = ()   # n_iter, eps, error, active


def scan(session: Session, cost: CostSource) -> CostStats:
    """First pass over C: its finite range, and an InputError naming a non-finite entry."""
    _, (lo, hi, n_bad, first) = session.run(StripJob(scan_strip, merge_scan))
    if n_bad:
        m = cost.shape[1]
        i, j = divmod(first, m)
        bi, bj = cost.grid.block_of(i, j)
        value = float(np.asarray(cost.rows(i, i + 1)[0, j]))
        lost = ""
        if reads_store(cost) and math.isnan(value):      # write_cost fills with NaN
            lost = (f" In a store written by bigsink, NaN marks a chunk that was never "
                    f"written or was lost: check chunk ({bi}, {bj}) of the store.")
        raise InputError(
            f"cost contains {n_bad} non-finite value(s) (NaN or Inf); the first is "
            f"C[{i}, {j}] = {value} in block ({bi}, {bj}). Replace them by finite costs "
            f"(a large finite value forbids a pair).{lost}"
        )
    return CostStats(lo, hi, n_bad, first)


def check_resolution(eps: float, stats: CostStats, dtype: np.dtype[Any]) -> None:
    """InputError when ``eps`` is at most one unit of rounding of the cost's largest entry
    (``max |C|`` times the dtype's epsilon): ``(f + g - C) / eps`` would then move by more
    than 1 from the rounding of C alone, so the plan would be noise, and eps-scaling cannot
    help."""
    top = max(abs(stats.lo), abs(stats.hi))
    ulp = top * float(np.finfo(dtype).eps)
    if eps <= ulp:
        raise InputError(
            f"eps={eps:g} is below what {np.dtype(dtype).name} resolves on this cost: its "
            f"entries reach {top:g}, rounded to about {ulp:.2g}, so the plan "
            f"exp(-C/eps) would be rounding noise. Use eps well above {ulp:.2g} (or "
            f"shift or rescale C).")


def relative_eps(
    session: Session, cost: CostSource, stats: CostStats, rule: str, factor: float
) -> tuple[float, str]:
    """``factor`` times C's mean or standard deviation (``rule``, OTT's
    ``relative_epsilon``), by one pass over C (shifted sums), and its description."""
    n, m = cost.shape
    _, (s1, s2) = session.run(StripJob(moments_strip, add_partials, (), (stats.lo,)))
    mean = s1 / (n * m)                                              # of C - lo
    value = stats.lo + mean if rule == "mean" else math.sqrt(max(0.0, s2 / (n * m) - mean**2))
    if not (math.isfinite(value) and value > 0):
        raise InputError(
            f"eps='{rule}:{factor:g}': the {rule} of C is {value:g}, so a relative eps is 0. "
            "Give an absolute eps.")
    return factor * value, f"{rule}:{factor:g} ({rule} of C {value:.6g})"


def _log_mass(w: np.ndarray, pot: np.ndarray, rho: float, eps: float) -> np.ndarray:
    """``log <w, exp(-(pot - eps log w) / rho)>`` per batch column (K,): the slope of one
    side's KL term of the dual along a translation; ``log <w, 1>`` when ``rho`` is inf."""
    if math.isinf(rho):
        return np.log(w.sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(w > 0, log0(w) - (pot - eps * log0(w)) / rho, -np.inf)   # (n, K)
    top = x.max(axis=0)                                                       # (K,)
    return top + np.log(np.exp(x - top).sum(axis=0))


def translate(
    problem: Problem, f: np.ndarray, g: np.ndarray, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(f + lam, g - lam)`` with the translation ``lam`` (K,) that maximises the
    unbalanced dual along that line (Séjourné et al. 2022, "Faster unbalanced optimal
    transport: translation invariant Sinkhorn"); the identity when balanced.

    The plan ``exp((f + g - C) / eps)`` and so the entropic term do not change; the KL terms
    ``-rho_a <a, e^{-F/rho_a} - 1>``, ``-rho_b <b, e^{-G/rho_b} - 1>`` (``F = f - eps log a``)
    are maximal where ``A e^{-lam/rho_a} = B e^{lam/rho_b}``, ``A = <a, e^{-F/rho_a}>``,
    ``B = <b, e^{-G/rho_b}>`` (a side with ``rho = inf`` has a linear term: its mass, and
    ``1/rho = 0``). Sinkhorn updates are exact ascent steps in ``f`` and in ``g``; this one
    is along the direction they both damp by only ``1 - tau`` per iteration.
    """
    if problem.balanced:
        return f, g
    log_a = _log_mass(problem.a, f, problem.rho_a, eps)                      # (K,)
    log_b = _log_mass(problem.b, g, problem.rho_b, eps)
    lam = (log_a - log_b) / (1.0 / problem.rho_a + 1.0 / problem.rho_b)       # (K,)
    return f + lam, g - lam


def row_error(
    a: np.ndarray, f: np.ndarray | None, f_new: np.ndarray, eps: float, omega: float = 1.0
) -> np.ndarray:
    """L1 row error of the potentials before an f-update, from the update itself (K,).

    The plain update is ``f + (f_new - f) / omega`` whatever the over-relaxation.
    """
    if f is None:
        return np.full(a.shape[1], np.inf)
    with np.errstate(invalid="ignore", over="ignore"):       # 0-weight rows: -inf, unused
        r = np.abs(1.0 - np.exp((f - f_new) / (omega * eps)))
        return np.where(a > 0, a * r, 0.0).sum(axis=0)


@dataclass
class Relaxation:
    """The adaptive over-relaxation factor ``omega`` of one eps stage (mutable state).

    Sinkhorn alternates exact block updates (Gauss-Seidel), so successive over-relaxation
    theory applies: if plain iterations shrink the error by ``lam`` per iteration,
    ``omega* = 2 / (1 + sqrt(1 - lam))`` shrinks it by ``omega* - 1`` (Young 1954; for
    Sinkhorn, Thibault et al. 2021 and Lehmann et al. 2022). At small eps ``lam`` is near 1
    and this is the difference between ~1/(1 - lam) and ~1/sqrt(1 - lam) iterations.

    The rate ``r`` is read over windows of ``RELAX_WINDOW`` iterations at a fixed ``omega``,
    from the smallest error of each window (over-relaxed errors oscillate). It obeys
    ``(r + omega - 1)^2 = omega^2 lam r`` (Young's relation; ``r = lam`` when
    ``omega = 1``), so ``lam = (r + omega - 1)^2 / (omega^2 r)``, a fixed point once
    ``omega >= omega*``. ``omega`` moves ``GROWTH`` of the way up to that estimate per window
    (a jump excites transients); a window without progress at a settled ``omega`` scales
    ``omega - 1`` by ``BACKOFF`` (right after a change, one stalled window is tolerated).
    ``adaptive=False`` keeps ``omega`` fixed.
    """

    omega: float = 1.0
    adaptive: bool = True
    best: float = math.inf
    settled: bool = True
    window: list[float] = field(default_factory=list)

    def observe(self, err: float) -> float:
        """Record the error of the iteration just run; returns ``omega`` for the next one."""
        self.window.append(err)
        if not self.adaptive or len(self.window) < RELAX_WINDOW:
            return self.omega
        window, self.window = self.window, []
        prev, self.best = self.best, min(window)
        if not (math.isfinite(prev) and math.isfinite(self.best)) or self.best <= 0:
            return self.omega
        r = (self.best / prev) ** (1.0 / RELAX_WINDOW)               # observed rate
        w, settled, self.settled = self.omega, self.settled, True
        if r >= 1.0:
            if settled:                                               # no progress: back off
                self.omega, self.settled = 1.0 + (w - 1.0) * BACKOFF, False
            return self.omega
        lam = min((r + w - 1.0) ** 2 / (w * w * r), LAM_MAX)
        target = 2.0 / (1.0 + math.sqrt(1.0 - lam))                   # omega* for lam
        self.omega = min(OMEGA_MAX, max(w, w + GROWTH * (target - w)))
        self.settled = self.omega == w
        return self.omega


def _relaxation(omega: float | None) -> Relaxation:
    """A stage's :class:`Relaxation` for the ``omega`` argument of :func:`solve`."""
    if omega is None:
        return Relaxation()
    return Relaxation(omega=omega, adaptive=False)


#: The last stage stops as "stalled" (not converged, a PrecisionWarning that says why) when
#: its error, below :data:`STALL_LEVEL`, improved by less than 10% over the last
#: :data:`STALL_WINDOW` iterations (a linear rate slower than 0.9995 per iteration), or
#: when :data:`STALL_MISSES` exact evaluations below that level missed ``tol``, each by no
#: less than the last, with nothing left to refine:
#: ``tol`` is then below what the arithmetic resolves, and more iterations would only burn
#: the budget.
STALL_WINDOW = 200
STALL_LEVEL = 1e-11
STALL_MISSES = 3


def _stalled(errors: list[float]) -> bool:
    """Whether a stage's errors (one per iteration) stopped improving at rounding level."""
    if len(errors) < 2 * STALL_WINDOW:
        return False
    recent = min(errors[-STALL_WINDOW:])
    return recent < STALL_LEVEL and recent > 0.9 * min(errors[:-STALL_WINDOW])


def iterate(
    session: Session,
    problem: Problem,
    schedule: Sequence[float],
    state: SolverState,
    config: SinkhornConfig,
    open_step: StepFactory,
    on_iteration: Callable[[SolverState, float], None] | None = None,
) -> tuple[SolverState, Evaluation | None, bool, dict[str, float]]:
    """Run the eps stages from ``state``; returns the final state, its evaluation (when the
    last check made one), whether it converged, and the last step's ``report()``.

    Each stage opens its step with ``open_step(eps, f, g)`` at its first iteration
    (:func:`~bigsink.solver.steps.stage_steps`; the loop knows only the
    :class:`~bigsink.solver.steps.Step` contract), iterates, checks, refines and closes it.
    Intermediate stages stop at ``max(tol, STAGE_TOL)`` or after their share of
    ``max_iter`` (half of it split evenly), so the last stage gets at least half the budget,
    and always at least one iteration. ``config.omega``: over-relaxation (None: adaptive
    per stage, see :class:`Relaxation`; a number: fixed). The last stage may stop early,
    unconverged, when it stalls at rounding level (:data:`STALL_WINDOW`); the report then
    holds ``stalled``, the error it stalled at.
    """
    tol, max_iter = config.tol, config.max_iter
    f, g, n_iter = state.f, state.g, state.n_iter
    report: dict[str, float] = {}
    history = list(state.history)
    last = len(schedule) - 1
    per_stage = max(1, (max_iter // 2) // max(1, last))
    for stage in range(state.stage, last + 1):
        eps = schedule[stage]
        stage_tol = tol if stage == last else max(tol, STAGE_TOL)
        # the last stage always gets at least one iteration: after one at the final eps the
        # column marginal is exact, so a stopped run still returns a plan of the right mass;
        # `done`: iterations this stage already ran before a resume (eps values are distinct)
        done = sum(1 for h in history if h[1] == eps) if stage == state.stage else 0
        budget = max_iter if stage == last else min(max_iter - 1, n_iter - done + per_stage)
        step: Step | None = None            # opened once f is known
        relax = _relaxation(config.omega)
        for h in history[len(history) - done:]:   # a resumed stage: replay its errors so
            relax.observe(h[2])                     # omega continues as if never stopped
        w = relax.omega
        errors: list[float] = []           # this stage's, for the stall test
        misses = 0                         # exact evaluations that missed tol, unrefinable,
        missed = math.inf                  # at rounding level without progress; the least
        try:
            while n_iter < budget:
                f_in = np.zeros_like(problem.a) if f is None else f   # no f yet: plain, from g
                w_in = 1.0 if f is None else w
                if step is None:
                    step = open_step(eps, f_in, g)
                out = step.step(f_in, g, w_in)
                if out is None:
                    raise NumericalError(f"the eps={eps:g} stage's step broke down with no "
                                         "fallback; this is a bug in bigsink.")
                f_new, g = translate(problem, *out, eps)
                err = row_error(problem.a, f, f_new, eps, w)
                if np.isnan(err).any():            # (err > tol is False for NaN: say so now)
                    raise NumericalError(
                        f"iteration {n_iter + 1} (eps={eps:g}) produced NaN potentials; "
                        "if it resumed from a checkpoint, that checkpoint may be damaged.")
                w = relax.observe(float(err.max()))
                f, n_iter = f_new, n_iter + 1
                active = step.report().get("active_fraction", 1.0)   # blocks read
                history.append((n_iter, eps, float(err.max()), active))
                current = SolverState(stage, f, g, n_iter, tuple(history))
                if on_iteration is not None:
                    on_iteration(current, float(err.max()))
                errors.append(float(err.max()))
                if stage == last and (_stalled(errors) or misses >= STALL_MISSES):
                    return current, None, False, {**step.report(), "stalled": min(errors)}
                if err.max() > stage_tol:
                    continue
                if stage < last:
                    break
                if not problem.balanced:
                    return current, None, True, step.report()
                ev = step.evaluate(f, g)
                if ev is None:
                    ev = evaluate(session, f, g, eps)          # one exact pass over C
                worst = max(float(e.max()) for e in ev.errors(problem))
                if worst <= tol:
                    return current, ev, True, step.report()
                if step.refine(f, g):   # e.g. a float32 kernel's fixed point may miss tol
                    LOG.info("the exact evaluation misses tol at eps=%g: the step refines "
                             "(a float32 kernel is rebuilt in float64)", eps)
                elif STALL_LEVEL > worst > 0.9 * missed:   # at rounding level, no progress
                    misses += 1
                missed = min(missed, worst)
        finally:                        # what a step holds goes with its stage
            if step is not None:
                report = step.report()
                step.close()
        if on_iteration is not None and stage < last:
            on_iteration(SolverState(stage + 1, f, g, n_iter, tuple(history)), math.nan)
    assert f is not None
    return SolverState(last, f, g, n_iter, tuple(history)), None, False, report
