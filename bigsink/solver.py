"""The coordinator loop: log-domain Sinkhorn with eps-scaling, written once.

The loop holds the potentials (O(n + m) numbers) and talks only to an executor
:class:`~bigsink.executors.Session`, which runs pure strip kernels over C. Each iteration is
**one pass over C** (:func:`~bigsink.kernels.sinkhorn_strip`): it yields the new ``f`` from
``g`` and, from the same tile, the column partials that give the new ``g``. The order is
therefore *f then g*: after an iteration the column marginal is exact, and the row error of
the potentials an iteration started from,

    err = sum_i a_i |1 - exp((f_i - f_new_i) / eps)|                          (DESIGN.md §2)

comes for free from the f-update. That error drives stopping; a final pass measures the
exact marginals and costs of the returned potentials.

eps-scaling (on by default when ``eps`` is small against the cost's spread, see
:func:`eps_schedule`) solves ``eps_0 > eps_1 > ... > eps`` with warm starts.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import checkpoint as ckpt
from . import fused
from ._xp import device_namespace
from .costs import CostSource, as_cost, on_device, strip_module
from .errors import ConvergenceWarning, InputError, NumericalError
from .executors import Session, StripJob, make_executor
from .kernels import (
    add_partials,
    column_pair,
    merge_pairs,
    merge_scan,
    pair_to_lse,
    potential_update,
    scan_strip,
)
from .problem import Problem, check_max_iter, check_positive, make_problem
from .result import History, MarginalError, SinkhornResult
from .scaling import ScalingStep, kernel_dtype, kernel_space

__all__ = ["SolverState", "eps_schedule", "solve"]

#: eps-scaling is on by default when ``spread(C) / eps`` exceeds this: with adaptive
#: over-relaxation / without it (a fixed ``omega``).
#: Tuned on the benchmark problem (n = 2000, tol 1e-6): with relaxation a single stage wins
#: up to spread/eps = 1000 (115 iterations against 129 staged), staging wins beyond
#: (1e4: 542 against 1484).
AUTO_SCALING_RATIO = {True: 1000.0, False: 16.0}
#: Default ratio between eps stages, with / without adaptive over-relaxation.
AUTO_DECAY = {True: 0.1, False: 0.5}
#: Tolerance of the intermediate eps stages (the last stage uses ``tol``).
STAGE_TOL = 1e-2
#: A merged column sum below this (relative to its max-shift) is recomputed exactly.
TINY = 1e-280
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
    history: tuple[tuple[int, float, float], ...] = ()


def eps_schedule(
    eps: float, spread: float, scaling: bool | None, decay: float, warm: bool,
    relaxed: bool = False,
) -> tuple[float, ...]:
    """The eps stages: ``spread * decay**k`` for k = 0, 1, ... while above ``eps``, then ``eps``.

    ``scaling=None`` (auto) turns scaling on when ``spread / eps`` exceeds
    ``AUTO_SCALING_RATIO[relaxed]`` (1000 with adaptive over-relaxation, else 16) and no warm
    start was given: small eps then converges in far fewer iterations (Schmitzer 2019).
    """
    if scaling is None:
        scaling = not warm and spread / eps > AUTO_SCALING_RATIO[relaxed]
    if not scaling or spread <= eps:
        return (eps,)
    stages = []
    e = spread
    while e > eps * (1 + 1e-9):              # not a stage a rounding error above eps
        stages.append(e)
        e *= decay
    return (*stages, eps)


def scan(session: Session, cost: CostSource) -> CostStats:
    """First pass over C: its finite range, and an InputError naming a non-finite entry."""
    _, (lo, hi, n_bad, first) = session.run(StripJob(scan_strip, merge_scan))
    if n_bad:
        m = cost.shape[1]
        i, j = divmod(first, m)
        bi, bj = cost.grid.block_of(i, j)
        value = float(np.asarray(cost.rows(i, i + 1)[0, j]))
        raise InputError(
            f"cost contains {n_bad} non-finite value(s) (NaN or Inf); the first is "
            f"C[{i}, {j}] = {value} in block ({bi}, {bj}). Replace them by finite costs "
            "(a large finite value forbids a pair)."
        )
    return CostStats(lo, hi, n_bad, first)


def _log(w: np.ndarray) -> np.ndarray:
    """``log(w)`` with ``log(0) = -inf`` and no warning."""
    with np.errstate(divide="ignore"):
        return np.log(w)


def _dot(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_i w_i x_i`` per batch column, with ``0 * inf`` counted as 0."""
    return np.where(w == 0, 0.0, w * np.where(w == 0, 0.0, x)).sum(axis=0)


def _kl(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Generalised KL ``sum x log(x/y) - x + y`` per batch column."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(x > 0, x * (np.log(x) - _log(y)), 0.0)
    return (t - x + y).sum(axis=0)


def _log_mass(w: np.ndarray, pot: np.ndarray, rho: float, eps: float) -> np.ndarray:
    """``log <w, exp(-(pot - eps log w) / rho)>`` per batch column (K,): the slope of one
    side's KL term of the dual along a translation; ``log <w, 1>`` when ``rho`` is inf."""
    if math.isinf(rho):
        return np.log(w.sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(w > 0, _log(w) - (pot - eps * _log(w)) / rho, -np.inf)   # (n, K)
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
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.abs(1.0 - np.exp((f - f_new) / (omega * eps)))
    return np.where(a > 0, a * r, 0.0).sum(axis=0)


@dataclass(frozen=True)
class Evaluation:
    """Exact marginals and costs of a pair of potentials (one pass over C)."""

    rows: np.ndarray
    cols: np.ndarray
    transport_cost: np.ndarray

    def errors(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """L1 row and column marginal errors (K,) each."""
        return (
            np.abs(self.rows - problem.a).sum(axis=0),
            np.abs(self.cols - problem.b).sum(axis=0),
        )


def evaluate(
    session: Session, f: np.ndarray, g: np.ndarray, eps: float,
    resident: ScalingStep | None = None,
) -> Evaluation:
    """Row/column sums of P and ``<P, C>`` for potentials ``(f, g)``: from the ``resident``
    kernel of this eps when it can (no exp), else by one exact pass over C."""
    sums = resident.evaluate(f, g) if resident is not None else None
    if sums is None:
        rows, (cols, pc) = session.run(StripJob(fused.evaluate_strip, add_partials, (f,),
                                                (g, eps)))
        return Evaluation(rows, cols, pc)
    return Evaluation(*sums)


def sinkhorn_step(
    session: Session, problem: Problem, log_a: np.ndarray, log_b: np.ndarray,
    f: np.ndarray, g: np.ndarray, eps: float, omega: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One iteration (one pass over C): ``(f_new, g_new)`` from ``(f, g)``, over-relaxed by
    ``omega`` (:func:`~bigsink.kernels.potential_update`; ``f`` is read only then).

    Columns whose fused partial vanished (possible only far from convergence) are
    recomputed exactly with a second pass, so no column ever gets an infinite potential.
    """
    tau_a, tau_b = problem.tau(eps)
    f_new, col = session.run(StripJob(fused.sinkhorn_strip, fused.merge_pairs, (log_a, f),
                                      (g, eps, tau_a, omega)))
    if np.any((col[1] <= TINY) & (problem.b > 0)):
        _, col = session.run(StripJob(column_pair, merge_pairs, (f_new,), (eps,)))
    g_new = potential_update(log_b, pair_to_lse(col), eps, tau_b, g, omega)
    return f_new, g_new


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


def iterate(
    session: Session,
    problem: Problem,
    schedule: Sequence[float],
    state: SolverState,
    tol: float,
    max_iter: int,
    on_iteration: Callable[[SolverState, float], None] | None = None,
    resident: np.dtype[Any] | None = None,
    omega: float | None = None,
) -> tuple[SolverState, Evaluation | None, bool]:
    """Run the eps stages from ``state``; returns the final state, its evaluation (when the
    last check made one) and whether it converged.

    Intermediate stages stop at ``max(tol, STAGE_TOL)`` or after their share of ``max_iter``
    (half of it split evenly), so the last stage gets at least half the budget, and always
    at least one iteration. ``resident``: storage dtype of a resident kernel for the scaling
    fast path (:mod:`bigsink.scaling`), or None for the log domain throughout; the step is
    the only thing that differs. ``omega``: over-relaxation (None: adaptive per stage, see
    :class:`Relaxation`; a number: fixed).
    """
    log_a, log_b = _log(problem.a), _log(problem.b)
    f, g, n_iter = state.f, state.g, state.n_iter
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
        use_fast = resident is not None    # the scaling domain, until it breaks down
        fast: ScalingStep | None = None     # built once f is known
        relax = _relaxation(omega)
        for h in history[len(history) - done:]:   # a resumed stage: replay its errors so
            relax.observe(h[2])                     # omega continues as if never stopped
        w = relax.omega
        try:
            while n_iter < budget:
                f_in = np.zeros_like(problem.a) if f is None else f   # no f yet: plain, from g
                w_in = 1.0 if f is None else w
                if use_fast and fast is None and resident is not None:
                    fast = ScalingStep(session, problem.a, problem.b, eps, resident, f_in, g,
                                       tau=problem.tau(eps))
                out = fast(f_in, g, w_in) if fast is not None else None
                if out is None:
                    if fast is not None:        # breakdown: the log domain for this stage
                        fast.close()
                        use_fast, fast = False, None
                    out = sinkhorn_step(session, problem, log_a, log_b, f_in, g, eps, w_in)
                f_new, g = translate(problem, *out, eps)
                err = row_error(problem.a, f, f_new, eps, w)
                w = relax.observe(float(err.max()))
                f, n_iter = f_new, n_iter + 1
                history.append((n_iter, eps, float(err.max())))
                current = SolverState(stage, f, g, n_iter, tuple(history))
                if on_iteration is not None:
                    on_iteration(current, float(err.max()))
                if err.max() > stage_tol:
                    continue
                if stage < last:
                    break
                if not problem.balanced:
                    return current, None, True
                ev = evaluate(session, f, g, eps, fast)
                if max(e.max() for e in ev.errors(problem)) <= tol:
                    return current, ev, True
                if fast is not None:           # a float32 kernel's fixed point may miss tol:
                    fast.widen(f, g)           # go on in the cost's dtype (no-op if already)
        finally:                            # the kernels go with their stage
            if fast is not None:
                fast.close()
        if on_iteration is not None and stage < last:
            on_iteration(SolverState(stage + 1, f, g, n_iter, tuple(history)), math.nan)
    assert f is not None
    return SolverState(last, f, g, n_iter, tuple(history)), None, False


def _resident_dtype(
    flag: bool | None, session: Session, src: CostSource, problem: Problem, tol: float,
    mixed: bool | None,
) -> np.dtype[Any] | None:
    """Storage dtype of a resident kernel for the scaling path (:func:`kernel_dtype`), or
    None for the log domain."""
    if flag is False:
        return None
    n, m = src.shape
    cost_dtype = np.dtype(src.dtype)
    dtype = kernel_dtype(cost_dtype, tol, problem.K, mixed)
    room, where = kernel_space(session)     # memory, a scratch file, or the workers'
    reasons = [
        (cost_dtype not in (np.float32, np.float64), f"the cost dtype is {cost_dtype}"),
        (n * m * dtype.itemsize > room,                              # a batch may share one
         f"the kernel ({n * m * dtype.itemsize / 2**30:.1f} GiB) exceeds {where}"),
    ]
    why = [text for bad, text in reasons if bad]
    if strip_module(src) != "numpy":
        why.append("the cost is not a NumPy array")
    if why and flag:
        raise InputError(f"resident_kernel=True is not possible here: {'; '.join(why)}.")
    return None if why else dtype


def _check_init(init: Any, problem: Problem) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate warm-start potentials ``(f, g)``; either may be None."""
    if init is None:
        return None, None
    try:
        f0, g0 = init
    except (TypeError, ValueError):
        raise InputError("init must be a pair (f, g) of potentials (either may be None).") from None
    out: list[np.ndarray | None] = []
    for name, x, size in (("f", f0, problem.shape[0]), ("g", g0, problem.shape[1])):
        if x is None:
            out.append(None)
            continue
        arr = np.asarray(x, dtype=np.float64)
        arr = arr[:, None] if arr.ndim == 1 else arr                      # (size, 1 or K)
        if arr.ndim != 2 or arr.shape[0] != size or arr.shape[1] not in (1, problem.K):
            raise InputError(
                f"init {name}: expected {size} potentials (or ({size}, {problem.K})), "
                f"got shape {np.shape(x)}."
            )
        if not np.isfinite(arr).all():
            raise InputError(f"init {name} contains non-finite potentials.")
        out.append(np.broadcast_to(arr, (size, problem.K)).copy())
    return out[0], out[1]


def _progress(enabled: bool | None) -> Callable[[SolverState, float], None] | None:
    """A tqdm progress callback; ``None`` shows it only on a terminal, False never."""
    if enabled is False:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(desc="sinkhorn", unit="it", disable=None if enabled is None else not enabled,
               leave=False)

    def update(state: SolverState, err: float) -> None:
        if math.isnan(err):
            return
        bar.update(1)
        bar.set_postfix(stage=state.stage, err=f"{err:.2e}", refresh=False)

    return update


def _user_hook(
    callback: Callable[[int, float], None] | None,
) -> Callable[[SolverState, float], None] | None:
    """``solve(callback=...)`` as an ``on_iteration`` hook (stage changes, which carry no
    error, are not reported)."""
    if callback is None:
        return None
    if not callable(callback):
        raise InputError(
            f"callback must be callable as callback(n_iter, err) or None; got "
            f"{type(callback).__name__}."
        )

    def call(state: SolverState, err: float) -> None:
        if not math.isnan(err):
            callback(state.n_iter, err)

    return call


def _chain(
    hooks: Sequence[Callable[[SolverState, float], None] | None],
) -> Callable[[SolverState, float], None] | None:
    """One ``on_iteration`` hook calling each of ``hooks`` (Nones skipped) in order."""
    active = [h for h in hooks if h is not None]
    if not active:
        return None

    def call(state: SolverState, err: float) -> None:
        for h in active:
            h(state, err)

    return call


def _check_checkpoint(
    path: Any, every: Any, resume: bool, problem: Problem
) -> tuple[ckpt.Checkpoint | None, dict[str, Any]]:
    """Validate the checkpoint arguments; the checkpoint to resume from (if any) and the
    problem's fingerprint."""
    fp = ckpt.fingerprint(problem.shape, problem.a, problem.b, problem.eps,
                          problem.rho_a, problem.rho_b)
    if path is None:
        if resume:
            raise InputError("resume=True needs checkpoint=<the directory to resume from>.")
        return None, fp
    ckpt.check_path(path)
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise InputError(f"checkpoint_every must be a positive integer; got {every!r}.")
    if resume and ckpt.exists(path):
        return ckpt.load_checkpoint(path, fp), fp
    return None, fp


def finish(
    problem: Problem,
    state: SolverState,
    ev: Evaluation,
    schedule: Sequence[float],
    tol: float,
    converged: bool,
    seconds: float,
    cost: CostSource | None,
) -> SinkhornResult:
    """Costs, errors and checks of the final potentials, as a :class:`SinkhornResult`.

    Raises NumericalError rather than return non-finite potentials or a vanished plan.
    """
    f, g, eps = state.f, state.g, schedule[-1]
    assert f is not None
    a, b = problem.a, problem.b
    mass = ev.rows.sum(axis=0)                                        # (K,)
    finite = np.all(np.isfinite(f[a > 0])) and np.all(np.isfinite(g[b > 0]))
    if not finite or not np.all(np.isfinite(mass)) or np.any(mass <= 1e-12 * a.sum(axis=0)):
        raise NumericalError(
            f"the solve at eps={eps:g} produced non-finite potentials or a plan with no mass "
            f"(mass {mass}); this is a bug in bigsink, please report it with the problem."
        )
    pc = ev.transport_cost                                            # (K,) <P, C>
    p_log_p = (_dot(ev.rows, f) + _dot(ev.cols, g) - pc) / eps        # sum P log P
    kl = p_log_p - _dot(ev.rows, _log(a)) - _dot(ev.cols, _log(b)) - mass + a.sum(0) * b.sum(0)
    reg = pc + eps * kl                                               # (K,) balanced part
    dual = -eps * (mass - a.sum(0) * b.sum(0))                        # (K,) -eps<ab^T, e^.-1>
    for w, pot, marg, rho in ((a, f, ev.rows, problem.rho_a), (b, g, ev.cols, problem.rho_b)):
        if problem.balanced:
            dual = dual + _dot(w, pot)                                # <a, f> + <b, g>
            continue
        with np.errstate(invalid="ignore"):
            pot_kl = pot - eps * _log(w)                              # potential of the KL form
        if math.isinf(rho):
            dual = dual + _dot(w, pot_kl)
        else:
            reg = reg + rho * _kl(marg, w)                            # + rho*KL(P1 || a)
            with np.errstate(invalid="ignore", over="ignore"):
                dual = dual - rho * _dot(w, np.expm1(-pot_kl / rho))  # - rho<a, e^{-f/rho}-1>
    row_err, col_err = ev.errors(problem)
    if problem.balanced:
        converged = bool(max(row_err.max(), col_err.max()) <= tol)
    hist = np.array(state.history, dtype=float).reshape(-1, 3)

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
        history=History(hist[:, 0].astype(int), hist[:, 1], hist[:, 2]),
        eps_stages=tuple(float(e) for e in schedule), rho_a=problem.rho_a, rho_b=problem.rho_b,
        tol=tol, seconds=seconds, cost=cost,
    )
    if not converged:
        warnings.warn(
            ConvergenceWarning(
                f"Sinkhorn did not converge in {state.n_iter} iterations: marginal error "
                f"row {row_err.max():.3g}, col {col_err.max():.3g} > tol {tol:g} "
                f"(eps={eps:g}). Raise max_iter, or use eps-scaling (eps_scaling=True)."
            ),
            stacklevel=3,
        )
    return result


def solve(
    cost: Any,
    a: Any = None,
    b: Any = None,
    *,
    eps: float,
    tol: float = 1e-6,
    max_iter: int = 10_000,
    rho: float = math.inf,
    rho_a: float | None = None,
    rho_b: float | None = None,
    init: tuple[Any, Any] | None = None,
    eps_scaling: bool | None = None,
    eps_decay: float | None = None,
    executor: Any = None,
    client: Any = None,
    device: str | None = None,
    progress: bool | None = None,
    checkpoint: Any = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    resident_kernel: bool | None = None,
    omega: float | None = None,
    mixed_precision: bool | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> SinkhornResult:
    """Solve entropic optimal transport ``min <P,C> + eps*KL(P || a b^T)`` (DESIGN.md §1).

    Args:
        cost: an (n, m) array (NumPy/CuPy), a cost source (:class:`DenseCost`, ...) or a
            path/URL of a Zarr array.
        a, b: marginals (n,) and (m,), or (n, K) / (m, K) to solve K problems with one pass
            over C per iteration; default uniform.
        eps: entropic regularisation (> 0).
        tol: stop when the L1 marginal error is at most this (for unbalanced problems: the
            L1 change of the row scaling between iterations).
        max_iter: iteration budget over all eps stages.
        rho, rho_a, rho_b: KL marginal penalties for unbalanced transport (``inf`` = balanced;
            ``rho_a``/``rho_b`` override ``rho`` for one side). The problem solved is then
            ``min_P <P,C> + eps*KL(P || a b^T) + rho_a*KL(P 1 || a) + rho_b*KL(P^T 1 || b)``
            (POT ``sinkhorn_unbalanced(reg_type="kl")``), by the updates
            ``f = eps*log a - tau*eps*LSE_j((g_j - C_ij)/eps)``, ``tau = rho/(rho + eps)``.
            ``reg_cost`` then includes the two penalty terms and ``dual_cost`` is the
            matching dual (see :class:`SinkhornResult`). Each iteration ends with the
            translation ``(f + lam, g - lam)`` that maximises the dual along that line
            (:func:`translate`): without it, the shift mode is damped only by ``1 - tau``
            per iteration, and large ``rho/eps`` took thousands of iterations.
        init: warm start ``(f, g)`` potentials (either may be None).
        eps_scaling: None (auto: on when ``spread(C)/eps`` exceeds 1000 with adaptive
            over-relaxation, else 16, and no ``init``), True, False.
        eps_decay: ratio between consecutive eps stages (0 < eps_decay < 1); None: 0.1 with
            adaptive over-relaxation, else 0.5.
        executor: ``"local"`` (default) or an :class:`~bigsink.executors.Executor`.
        client: a ``distributed.Client`` or scheduler address: run on Dask.
        device: None (where the cost lives), "cpu", or "gpu" (CuPy; strips are moved to the
            GPU once per use and kernels run there). Results are NumPy either way.
        progress: progress bar; None shows it on a terminal only.
        checkpoint: a local directory: every ``checkpoint_every`` iterations and at each eps
            stage the state (f, g, stage, schedule, history) is written there atomically as
            a Zarr group (:mod:`bigsink.checkpoint`).
        checkpoint_every: iterations between checkpoints.
        resume: continue from the checkpoint at ``checkpoint`` (its eps schedule and state;
            ``init`` and ``eps_scaling`` are then ignored) to the same answer as an
            uninterrupted run; without a checkpoint there yet, start from the beginning.
        resident_kernel: the scaling fast path (:mod:`bigsink.scaling`): keep the kernel
            ``exp((f + g - C)/eps)``, so an iteration is one read of it and no ``exp``,
            with absorption keeping it stable. It is kept in memory, or, for a cost read
            from a Zarr store (never held whole in one process), in a mapped scratch file
            in ``TMPDIR``; on Dask, by the workers next to their resident strips of C.
            None (auto): on for NumPy problems whose kernel fits (local executor:
            40% of memory, or the scratch disk's free space less 1 GiB, and 40% of memory
            at most if ``TMPDIR`` is a tmpfs; Dask: resident mode, within half of the
            workers' memory limits less C); True: require it (InputError if not
            possible); False: log domain only.
            Same iterates either way (up to the kernel's precision, see
            ``mixed_precision``).
        omega: over-relaxation of the updates, ``f <- f + omega*(f_sinkhorn - f)`` (same for
            g). None (default): adaptive, starting plain and raising
            omega towards the SOR optimum estimated from the observed convergence rate
            (:class:`Relaxation`); a number in (0, 2): fixed; 1: plain Sinkhorn. The fixed
            point, and so the answer, is the same for every omega.
        mixed_precision: store a float64 cost's resident kernel in float32 (half the bytes
            read per iteration; potentials and sums stay float64). None (auto): when
            ``tol >= 1e-7`` and one problem is solved; True: always; False: never. If the
            exact float64 evaluation misses ``tol``, the kernel is rebuilt in float64 and
            the iterations go on, so the answer meets ``tol`` either way
            (:func:`bigsink.scaling.kernel_dtype`).
        callback: called after every iteration as ``callback(n_iter, err)``: the
            iterations so far and the L1 row marginal error before the last one (for
            logging, or timing iterations apart from the solve's one-off costs).

    Returns:
        A :class:`SinkhornResult`. Warns (ConvergenceWarning) when not converged.

    Raises:
        InputError: on bad input, before any iteration.
        NumericalError: instead of returning non-finite potentials or a vanished plan.
    """
    t0 = time.perf_counter()
    src = as_cost(cost)
    if device is not None:
        src = on_device(src, device_namespace(device))
    problem = make_problem(src.shape, a, b, eps, rho, rho_a, rho_b)
    tol = check_positive("tol", tol)
    fused.check_tolerance(src.dtype, tol, stacklevel=2)
    max_iter = check_max_iter(max_iter)
    relaxed = omega is None                                           # adaptive relaxation
    decay = AUTO_DECAY[relaxed] if eps_decay is None else check_positive("eps_decay", eps_decay)
    if decay >= 1:
        raise InputError(f"eps_decay must be in (0, 1); got {eps_decay!r}.")
    for name, flag in (("resident_kernel", resident_kernel), ("mixed_precision", mixed_precision)):
        if flag is not None and not isinstance(flag, bool | np.bool_):
            raise InputError(f"{name} must be None (auto), True or False; got {flag!r}.")
    if omega is not None and not (isinstance(omega, int | float) and 0 < omega < 2):
        raise InputError(f"omega must be None (adaptive) or a number in (0, 2); got {omega!r}.")
    f0, g0 = _check_init(init, problem)
    resumed, fp = _check_checkpoint(checkpoint, checkpoint_every, resume, problem)
    user = _user_hook(callback)
    session = make_executor(executor, client).open(src, problem.K)
    try:
        stats = scan(session, src)
        schedule = eps_schedule(problem.eps, stats.spread, eps_scaling, decay, init is not None,
                                relaxed)
        if resumed is not None:
            ckpt.check_cost_range(resumed, (stats.lo, stats.hi), checkpoint)
            schedule = resumed.schedule
            f0, g0 = resumed.f, resumed.g
        if g0 is None and f0 is not None:  # g from the given f: one column pass
            _, col = session.run(StripJob(column_pair, merge_pairs, (f0,), (schedule[0],)))
            g0 = potential_update(_log(problem.b), pair_to_lse(col), schedule[0],
                                  problem.tau(schedule[0])[1])
        start = SolverState(0, f0, g0 if g0 is not None else np.zeros(problem.b.shape), 0)
        if resumed is not None:
            start = SolverState(resumed.stage, f0, resumed.g, resumed.n_iter, resumed.history)
        hooks = [_progress(progress), user]
        if checkpoint is not None:
            hooks.append(ckpt.Checkpointer(checkpoint, checkpoint_every, schedule, fp,
                                           (stats.lo, stats.hi)))
        resident = _resident_dtype(resident_kernel, session, src, problem, tol,
                                   mixed_precision)
        state, ev, converged = iterate(
            session, problem, schedule, start, tol, max_iter, _chain(hooks), resident, omega
        )
        if ev is None:
            assert state.f is not None
            ev = evaluate(session, state.f, state.g, schedule[-1])
    finally:
        session.close()
    return finish(problem, state, ev, schedule, tol, converged, time.perf_counter() - t0, src)
