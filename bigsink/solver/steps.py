"""The Step contract and its steps: one eps stage's Sinkhorn map, written once each.

A :class:`Step` is what :func:`bigsink.solver.loop.iterate` runs; the loop knows nothing
else about it::

    step(f, g, omega) -> (f, g) | None   one pass over C: f, then g (None: breakdown)
    evaluate(f, g) -> Evaluation | None  exact marginal sums when the step has them for free
    refine(f, g) -> bool                 make later iterates more exact (wider precision)
    close()                              release what the step holds (worker memory, scratch)

* :class:`LogStep`: the log-domain iteration, one fused pass over C per call
  (:func:`bigsink.kernels.sinkhorn_strip`: one read of C and one ``exp`` per element);
* :class:`ScalingStep`: the scaling domain on a resident kernel with absorption (the kernel
  itself, built and swept where C's rows are, is :class:`bigsink.kernels.scaling.KernelRows`;
  this is the coordinator's side: offsets, scalings, absorption);
* :class:`Fallback`: a primary step and a backup; the breakdown rule (close the primary,
  go on with the backup for the rest of the stage) lives here and nowhere else.

:func:`stage_steps` makes the factory the loop opens each stage's step with, from the
resident-kernel policy (:func:`bigsink.solver.config.resident_dtype`). A new kind of
iteration (truncated, multiscale, GPU-resident) is a new Step; the loop does not change.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import Any, Protocol

import numpy as np

from ..costs import block_min
from ..executors import Session, StripJob
from ..executors.base import Held, HeldLost
from ..kernels import (
    add_partials,
    column_pair,
    evaluate_strip,
    merge_pairs,
    pair_to_lse,
    potential_update,
    reference,
    sinkhorn_strip,
)
from ..kernels.blocks import (
    Records,
    merge_records,
    merge_truncated,
    truncated_evaluate_strip,
    truncated_sinkhorn_strip,
)
from ..kernels.scaling import ABSORB_BOUND, BlockKernel, KernelRows
from ..problem import Problem, log0

LOG = logging.getLogger(__name__)

__all__ = [
    "KEEP_MARGIN", "RECORD_EVERY", "RECORD_SLACK", "SHRINK", "SPARSE_MAX", "TINY", "WARMUP",
    "BlockBounds",
    "Evaluation", "Fallback", "LogStep", "ScalingStep", "SparseScalingStep", "Step", "StepFactory",
    "TruncatedStep", "evaluate", "select_blocks", "skipped_mass", "stage_steps",
    "truncated_evaluation",
]

#: A merged column sum below this (relative to its max-shift) is recomputed exactly.
TINY = 1e-280


@dataclass(frozen=True)
class Evaluation:
    """Exact marginals and costs of a pair of potentials."""

    rows: np.ndarray
    cols: np.ndarray
    transport_cost: np.ndarray
    slack: float = 0.0

    def errors(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """L1 row and column marginal errors (K,) each: of the sums, plus ``slack`` (the
        certified bound of the mass they leave out, for a truncated evaluation)."""
        return (
            np.abs(self.rows - problem.a).sum(axis=0) + self.slack,
            np.abs(self.cols - problem.b).sum(axis=0) + self.slack,
        )


def evaluate(session: Session, f: np.ndarray, g: np.ndarray, eps: float) -> Evaluation:
    """Row/column sums of P and ``<P, C>`` for potentials ``(f, g)`` by one exact pass over
    C (:func:`bigsink.kernels.evaluate_strip`)."""
    rows, (cols, pc) = session.run(StripJob(evaluate_strip, add_partials, (f,), (g, eps)))
    return Evaluation(rows, cols, pc)


class Step(Protocol):
    """One eps stage's Sinkhorn map (see the module docstring)."""

    def step(
        self, f: np.ndarray, g: np.ndarray, omega: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(f_new, g_new)`` from ``(f, g)``, over-relaxed by ``omega``: one pass over C,
        f then g. None: this step cannot go on (a breakdown)."""
        ...

    def evaluate(self, f: np.ndarray, g: np.ndarray) -> Evaluation | None:
        """Exact sums of the plan of ``(f, g)`` when the step has them without a pass."""
        ...

    def refine(self, f: np.ndarray, g: np.ndarray) -> bool:
        """Make later iterates more exact (rebuilt at ``(f, g)``); False if it cannot."""
        ...

    def close(self) -> None:
        """Release what the step holds."""
        ...

    def report(self) -> dict[str, float]:
        """Figures of the last pass for the result (e.g. the truncation's active fraction
        and bound); empty when it has none."""
        ...


#: ``(eps, f, g) -> Step``: the step of one eps stage, opened at its first iterate.
StepFactory = Callable[[float, np.ndarray, np.ndarray], Step]


@dataclass
class LogStep:
    """Log-domain Sinkhorn iterations of one eps stage: each is one pass over C.

    The fused strip kernel yields ``f_new`` from ``g`` and, from the same tile, the column
    partials that give ``g_new`` (DESIGN.md §3). Columns whose fused partial vanished
    (possible only far from convergence) are recomputed exactly with a second pass, so no
    column ever gets an infinite potential.
    """

    session: Session
    problem: Problem
    eps: float
    log_a: np.ndarray = field(init=False, repr=False)
    log_b: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.log_a, self.log_b = log0(self.problem.a), log0(self.problem.b)   # (n, K), (m, K)

    def step(
        self, f: np.ndarray, g: np.ndarray, omega: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(f_new, g_new)`` from ``(f, g)``, over-relaxed by ``omega``
        (:func:`~bigsink.kernels.potential_update`; ``f`` is read only then)."""
        problem, eps = self.problem, self.eps
        tau_a, tau_b = problem.tau(eps)
        f_new, col = self.session.run(StripJob(sinkhorn_strip, merge_pairs, (self.log_a, f),
                                               (g, eps, tau_a, omega)))
        if np.any((col[1] <= TINY) & (problem.b > 0)):
            _, col = self.session.run(StripJob(column_pair, reference.merge_pairs, (f_new,),
                                               (eps,)))
        g_new = potential_update(self.log_b, pair_to_lse(col), eps, tau_b, g, omega)
        return f_new, g_new

    def evaluate(self, f: np.ndarray, g: np.ndarray) -> Evaluation | None:
        """None: the log domain has no sums without a pass."""
        return None

    def refine(self, f: np.ndarray, g: np.ndarray) -> bool:
        """False: the log domain already works in float64."""
        return False

    def close(self) -> None:
        """Nothing to release."""

    def report(self) -> dict[str, float]:
        """Nothing to report."""
        return {}


@dataclass
class Fallback:
    """``primary`` until it breaks down, then ``backup`` for the rest of the stage.

    A breakdown is ``primary.step`` returning None: the primary is closed at once (its
    memory goes back), and the same iteration is run by the backup. Every other call goes
    to whichever step is active.
    """

    primary: Step
    backup: Step
    active: Step = field(init=False)

    def __post_init__(self) -> None:
        self.active = self.primary

    def step(
        self, f: np.ndarray, g: np.ndarray, omega: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The active step's iteration; on the primary's breakdown, the backup's."""
        out = self.active.step(f, g, omega)
        if out is None and self.active is self.primary:
            LOG.info("%s broke down; %s goes on for the rest of the eps stage",
                     type(self.primary).__name__, type(self.backup).__name__)
            self.primary.close()
            self.active = self.backup
            out = self.backup.step(f, g, omega)
        return out

    def evaluate(self, f: np.ndarray, g: np.ndarray) -> Evaluation | None:
        """The active step's sums."""
        return self.active.evaluate(f, g)

    def refine(self, f: np.ndarray, g: np.ndarray) -> bool:
        """The active step's refinement."""
        return self.active.refine(f, g)

    def close(self) -> None:
        """Close both (closing twice is harmless)."""
        self.primary.close()
        self.backup.close()

    def report(self) -> dict[str, float]:
        """The active step's figures."""
        return self.active.report()


def _block_max(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per block of rows (``starts``): the max of ``x`` (., K) over the block, NaN (from
    ``-inf - -inf`` of 0-weight entries) ignored; (nB, K)."""
    return np.maximum.reduceat(np.where(np.isnan(x), -np.inf, x), starts, axis=0)


def _drift(new: np.ndarray, old: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``max over each block of (new - old)`` (nB, K); 0 for a block of 0-weight entries
    only (their plan entries are 0 under any potentials)."""
    with np.errstate(invalid="ignore"):
        top = _block_max(new - old, starts)
    return np.where(np.isneginf(top), 0.0, top)


@dataclass
class BlockBounds:
    """Certified upper bounds on the plan's mass in each block of the cost's grid, kept
    across the eps stages of one solve (certified block truncation, ``docs/design.md``).

    For block ``(I, J)`` and potentials ``(f, g)``, ``log U_IJ`` bounds
    ``log sum_{I x J} exp((f_i + g_j - C_ij) / eps)`` by the smaller of

    * the **static** bound ``log(|I||J|) + (max_I f + max_J g - Cmin_IJ) / eps``, when the
      cost source knows its blocks' least costs (:func:`bigsink.costs.block_min`);
    * the **recorded** bound: a pass that read the block under ``(F_t, G_t)`` measured its
      exact log mass ``log M_IJ`` there (:func:`bigsink.kernels.blocks.truncated_sinkhorn_strip`);
      then ``log U <= log M_IJ + (max_I (f - F_t) + max_J (g - G_t)) / eps``. Drift from
      an old pass ``t`` is bounded through the passes since, ``max_I (f - F_t) <=
      max_I (f - F_T) + sum_{s=t}^{T-1} max_I (F_{s+1} - F_s)``: the running sums ``A_I``
      and ``B_J`` of those per-block maxima, so ``w = log M - (A_I(t) + B_J(t)) / eps`` is
      all a block keeps, and the bound costs O(n + m + blocks).

    Between stages the recorded bound carries over in eps-free form: ``Z_IJ = eps log M``
    bounds ``max over the block of (f + g - C)`` (a sum bounds each term), so at a new
    ``eps'`` the block's mass is at most ``|I||J| exp(Z / eps')``.
    """

    shape: tuple[int, int]
    block_shape: tuple[int, int]
    cmin: np.ndarray | None = None                                       # (nI, nJ)
    eps: float = math.nan
    w: np.ndarray | None = field(default=None, repr=False)               # (nI, nJ, K)
    A: np.ndarray | None = field(default=None, repr=False)               # (nI, K)
    B: np.ndarray | None = field(default=None, repr=False)               # (nJ, K)
    F: np.ndarray | None = field(default=None, repr=False)               # (n, K) last pass
    G: np.ndarray | None = field(default=None, repr=False)               # (m, K)
    _memo: tuple[Any, ...] = field(default=(), repr=False)               # last log_mass

    def __post_init__(self) -> None:
        (n, m), (rb, cb) = self.shape, self.block_shape
        self.rows, self.cols = np.arange(0, n, rb), np.arange(0, m, cb)   # block starts
        sizes_r = np.diff(np.append(self.rows, n))
        sizes_c = np.diff(np.append(self.cols, m))
        self.sizes = np.outer(sizes_r, sizes_c)                          # (nI, nJ) entries
        self.log_size = np.log(self.sizes)[:, :, None]                   # (nI, nJ, 1)

    def restage(self, eps: float) -> None:
        """Move the recorded bounds to a new eps stage (eps-free form, see the class)."""
        if self.w is not None and eps != self.eps:
            assert self.A is not None and self.B is not None
            log_m = self.w + (self.A[:, None, :] + self.B[None, :, :]) / self.eps
            with np.errstate(invalid="ignore"):                          # inf * 0: none
                self.w = self.log_size + log_m * (self.eps / eps)
            self.A, self.B = np.zeros_like(self.A), np.zeros_like(self.B)
        self.eps, self._memo = eps, ()

    def log_mass(self, f: np.ndarray, g: np.ndarray) -> np.ndarray:
        """``log U_IJk`` for potentials ``(f, g)`` (nI, nJ, K); ``+inf`` where nothing
        bounds a block yet. The last answer is kept for the same potential arrays (a
        pass's output is the next one's input; the solver never changes potentials in
        place), until a pass is recorded."""
        if self._memo and self._memo[0] is f and self._memo[1] is g:
            return self._memo[2]
        K = f.shape[1]
        bound = np.full((len(self.rows), len(self.cols), K), np.inf)
        if self.cmin is not None:
            fmax, gmax = _block_max(f, self.rows), _block_max(g, self.cols)  # (nI, K), (nJ, K)
            bound = self.log_size + (fmax[:, None, :] + gmax[None, :, :]
                                     - self.cmin[:, :, None]) / self.eps
        if self.w is not None:
            assert self.A is not None and self.B is not None
            assert self.F is not None and self.G is not None
            df = self.A + _drift(f, self.F, self.rows)                   # (nI, K)
            dg = self.B + _drift(g, self.G, self.cols)                   # (nJ, K)
            bound = np.fmin(bound, self.w + (df[:, None, :] + dg[None, :, :]) / self.eps)
        self._memo = (f, g, bound)
        return bound

    def record(self, active: np.ndarray, records: Records, f: np.ndarray,
               g: np.ndarray, slack: float = 0.0) -> None:
        """Take a pass's log masses of the ``active`` blocks, measured under ``(f, g)`` (to
        within ``slack`` in log: a float32 kernel's)."""
        if self.F is None or self.A is None or self.B is None or self.G is None:
            self.A = np.zeros((len(self.rows), f.shape[1]))
            self.B = np.zeros((len(self.cols), f.shape[1]))
        else:
            self.A = self.A + _drift(f, self.F, self.rows)
            self.B = self.B + _drift(g, self.G, self.cols)
        self.F, self.G = f.copy(), g.copy()
        if self.w is None:
            self.w = np.full((len(self.rows), len(self.cols), f.shape[1]), np.inf)
        self._memo = ()
        if not records:
            return
        rows = np.array([I for I, _ in records])                         # block rows read
        ii, J = np.nonzero(active[rows])            # row-major: the records' own order
        I = rows[ii]
        log_m = np.concatenate([m for _, m in records])                  # (blocks, K)
        self.w[I, J] = log_m + slack - (self.A[I] + self.B[J]) / self.eps


def truncated_evaluation(session: Session, bounds: BlockBounds, active: np.ndarray,
                         f: np.ndarray, g: np.ndarray, eps: float) -> Evaluation:
    """The plan's sums and ``<P, C>`` over the ``active`` blocks (one pass over them), with
    the certified bound of the rest as the errors' slack."""
    slack = skipped_mass(bounds.log_mass(f, g), active)
    rows, (cols, pc) = session.run(StripJob(truncated_evaluate_strip, add_partials, (f,),
                                            (g, eps, active, bounds.block_shape),
                                            blocks=active))
    return Evaluation(rows, cols, pc, slack=slack)


def select_blocks(log_u: np.ndarray, theta: float) -> np.ndarray:
    """The blocks to read (nI, nJ) bool: all but the cheapest whose bounds ``log_u``
    (nI, nJ, K) sum to at most ``theta`` in every problem; each block row and column keeps
    its largest block (no potential loses all its terms).

    Only the bounds between ``theta / N`` and ``theta`` (N blocks) are sorted: those below
    go first and together stay within ``theta``, those above are never skipped."""
    worst = log_u.max(axis=2) if log_u.shape[2] > 1 else log_u[:, :, 0]   # (nI, nJ)
    active = np.ones(worst.shape, dtype=bool)
    if np.isfinite(worst.max()):
        flat, log_theta = worst.ravel(), math.log(theta)
        low = flat < log_theta - math.log(flat.size)
        middle = np.flatnonzero(~low & (flat <= log_theta))
        order = middle[np.argsort(flat[middle], kind="stable")]          # cheapest first
        room = theta - np.exp(flat[low]).sum()
        within = np.cumsum(np.exp(flat[order])) <= room
        skip = active.ravel()
        skip[low] = False
        skip[order[within]] = False
    active[np.arange(worst.shape[0]), worst.argmax(axis=1)] = True
    active[worst.argmax(axis=0), np.arange(worst.shape[1])] = True
    return active


def skipped_mass(log_u: np.ndarray, active: np.ndarray) -> float:
    """The certified L1 bound of what ``active`` leaves out, worst problem."""
    out = np.where(active[:, :, None], -np.inf, log_u)
    top = out.max()
    if not np.isfinite(top):
        return 0.0 if top < 0 else math.inf
    with np.errstate(over="ignore"):                                 # inf: nothing skippable
        return float(np.exp(np.log(np.exp(out - top).sum(axis=(0, 1)).max()) + top))


#: While every block is in use, a truncated step records its blocks' masses (what the
#: bounds are made of) on its first pass and every RECORD_EVERY-th after; the passes between
#: run the plain fused pass (:class:`LogStep`), so a cost where nothing can be skipped pays
#: truncation's bookkeeping on one pass in RECORD_EVERY. A bound from an older record stays
#: certified (it adds the potentials' drift since), only looser.
RECORD_EVERY = 8


@dataclass
class TruncatedStep:
    """Log-domain iterations that read only the blocks where the plan is not certifiably
    negligible (certified block truncation; ``docs/design.md``).

    Each pass selects, from the :class:`BlockBounds` at its input potentials raised by the
    last pass's drift (the potentials tend to move on as they moved: this spares most
    reruns), the blocks to read (:func:`select_blocks`: all but a set whose bounds sum to
    at most ``theta``),
    runs the fused pass over them, and records their exact log masses (refreshing their
    bounds at no extra reading). The bound of what was left out is then checked again at
    the pass's output potentials, and the pass is rerun with more blocks if it grew past
    ``theta``: nothing is skipped on faith, and the truncated plan's row and column sums
    differ from the full ones by at most ``theta`` in L1. A pass whose column partial
    vanished somewhere (far from convergence) is redone densely by :class:`LogStep`.

    The final evaluation is exact over the active blocks, and its errors include the bound
    of the skipped ones (:attr:`Evaluation.slack`); ``verify=True`` makes it one exact
    pass over every block instead.
    """

    session: Session
    problem: Problem
    eps: float
    theta: float
    bounds: BlockBounds
    verify: bool = False
    log: LogStep = field(init=False, repr=False)
    active: np.ndarray | None = field(init=False, default=None, repr=False)  # (nI, nJ)
    fraction: float = field(init=False, default=1.0)
    bound: float = field(init=False, default=0.0)
    _lead: tuple[np.ndarray, np.ndarray] | None = field(init=False, default=None, repr=False)
    _plain: int = field(init=False, default=0, repr=False)      # unrecorded passes in a row

    def __post_init__(self) -> None:
        self.log = LogStep(self.session, self.problem, self.eps)
        self.bounds.restage(self.eps)

    def _pass(self, f: np.ndarray, g: np.ndarray, omega: float, active: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray] | None:
        """One pass over the ``active`` blocks, recorded: ``(f_new, g_new)``, or None when
        a column's partial vanished (see the class)."""
        problem, eps = self.problem, self.eps
        tau_a, tau_b = problem.tau(eps)
        f_new, (col, records) = self.session.run(StripJob(
            truncated_sinkhorn_strip, merge_truncated, (self.log.log_a, f),
            (g, eps, tau_a, omega, active, self.bounds.block_shape), blocks=active))
        if np.any((col[1] <= TINY) & (problem.b > 0)):
            return None
        self.bounds.record(active, records, f_new, g)
        return f_new, potential_update(self.log.log_b, pair_to_lse(col), eps, tau_b, g, omega)

    def step(
        self, f: np.ndarray, g: np.ndarray, omega: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(f_new, g_new)`` from ``(f, g)`` over the active blocks (see the class)."""
        bounds = self.bounds
        log_u = bounds.log_mass(f, g)
        if self._lead is not None:        # as much drift again as the last pass brought
            log_u = log_u + (self._lead[0][:, None, :] + self._lead[1][None, :, :]) / self.eps
        active = select_blocks(log_u, self.theta)
        plain = (active.all() and self.active is not None
                 and self._plain < RECORD_EVERY - 1)             # see RECORD_EVERY
        self._plain = self._plain + 1 if plain else 0
        if plain:
            out, self.bound = self.log.step(f, g, omega), 0.0
        for _ in range(0 if plain else 3):
            cut = self._pass(f, g, omega, active)
            if cut is None:
                active, out = np.ones_like(active), self.log.step(f, g, omega)
                self.bound = 0.0
                break
            out = cut
            log_u = bounds.log_mass(*out)
            self.bound = skipped_mass(log_u, active)
            if self.bound <= self.theta:
                break
            # the bound grew: more blocks, with the kernel's margin (one rerun, not three)
            active = active | select_blocks(log_u, self.theta * KEEP_MARGIN)
        self.active, self.fraction = active, float(active.mean())
        self._lead = (np.maximum(_drift(out[0], f, bounds.rows), 0.0),
                      np.maximum(_drift(out[1], g, bounds.cols), 0.0))
        return out

    def evaluate(self, f: np.ndarray, g: np.ndarray) -> Evaluation | None:
        """The plan's sums over the active blocks, the skipped ones' bound as the slack
        of its errors; None (one exact pass) with ``verify`` or before any pass."""
        if self.verify or self.active is None or self.active.all():
            return None
        ev = truncated_evaluation(self.session, self.bounds, self.active, f, g, self.eps)
        self.bound = ev.slack
        return ev

    def refine(self, f: np.ndarray, g: np.ndarray) -> bool:
        """Halve ``theta`` (later passes keep more blocks); False below 1e-16."""
        if self.theta < 1e-16:
            return False
        self.theta /= 2
        return True

    def close(self) -> None:
        """Nothing held beyond per-block numbers (they stay with the solve's bounds)."""

    def report(self) -> dict[str, float]:
        """The last pass's active fraction and certified truncation bound."""
        return {"active_fraction": self.fraction, "truncation_bound": self.bound}


def stage_steps(
    session: Session, problem: Problem, kernel_dtype: np.dtype[Any] | None,
    theta: float | None = None, verify: bool = False,
    sparse_dtype: np.dtype[Any] | None = None,
) -> StepFactory:
    """The factory of each eps stage's step: the log domain, or, with a resident kernel of
    ``kernel_dtype``, the scaling path falling back to it (:class:`Fallback`). With a
    truncation budget ``theta`` (and no resident kernel): :class:`TruncatedStep`, or, given
    a ``sparse_dtype``, the block-sparse scaling path (:class:`SparseScalingStep`) falling
    back to it; their :class:`BlockBounds` carry over from stage to stage (``verify``: an
    exact final pass)."""
    cost = session.cost
    bounds = BlockBounds(cost.shape, cost.grid.block_shape, block_min(cost))

    def open_stage(eps: float, f: np.ndarray, g: np.ndarray) -> Step:
        log = LogStep(session, problem, eps)
        if kernel_dtype is None and theta is not None:
            cut = TruncatedStep(session, problem, eps, theta, bounds, verify)
            if sparse_dtype is None:
                return cut
            return Fallback(SparseScalingStep(session, problem.a, problem.b, eps,
                                              sparse_dtype, f, g, tau=problem.tau(eps),
                                              theta=theta, bounds=bounds, warmup=cut,
                                              verify=verify), cut)
        if kernel_dtype is None:
            return log
        scaling = ScalingStep(session, problem.a, problem.b, eps, kernel_dtype, f, g,
                              tau=problem.tau(eps))
        return Fallback(scaling, log)

    return open_stage


def _shared_offset(pot: np.ndarray, w: np.ndarray, eps: float) -> tuple[np.ndarray, float]:
    """Per-row midpoint (r, 1) of a batch's finite potentials (r, K) and the largest
    ``|pot - midpoint| / eps`` it leaves (0-weight entries, at ``-inf``, ignored)."""
    fin = np.where(w > 0, pot, np.nan)                               # (r, K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)               # all-NaN rows
        lo, hi = np.nanmin(fin, axis=1), np.nanmax(fin, axis=1)       # (r,)
    mid = np.where(np.isfinite(lo), (lo + hi) / 2, 0.0)
    half = np.where(np.isfinite(lo), (hi - lo) / 2, 0.0)
    return mid[:, None], float(half.max(initial=0.0)) / eps


@dataclass
class ScalingStep:
    """One eps stage of scaling-domain iterations: a :class:`Step` on a resident kernel.

    ``step(f, g, omega) -> (f_new, g_new)`` is the same map as :class:`LogStep`'s, or None
    when the scaling domain cannot continue (a :class:`Fallback` then goes on with the log
    domain for the rest of the stage).

    The kernels are :class:`KernelRows` that the session holds next to C's rows (all of
    them in this process; one group per worker on Dask, whose partial column sums are added
    here in row order). This step keeps the potentials' side: offsets, scalings, absorption.

    Unbalanced problems (``tau = rho / (rho + eps) < 1`` for a side, DESIGN.md §2) take the
    same pass: the log-domain update ``f = eps log a - tau eps LSE_j((g_j - C_ij) / eps)``
    is, with ``s = Kmat v`` and ``LSE = log s - alpha / eps``,
    ``u = a exp(-(1 - tau) alpha / eps) / s**tau``, and likewise for ``v`` with ``t`` and
    ``beta``. Near a solution ``u`` is near 1 and so is the factor's share; where the factor
    leaves the float range (an update that moves ``f`` by far more than the absorption
    bound: a warm start shifted by thousands of eps, say), so does ``u``, and the step
    reports the breakdown like any other.

    A float64 batch of K problems shares **one** kernel when its potentials stay within the
    absorption bound of common offsets (the per-row midpoints of the batch): an iteration is
    then two matrix products ``Kmat (n, m) @ v (m, K)`` and ``Kmat^T @ u`` (BLAS-3, one
    kernel in memory). Otherwise each problem gets its own kernel, within ``budget`` bytes
    (None: the session's ``hold_room()``; float32 kernels always: their fused pass accumulates in
    float64).
    """

    session: Session
    a: np.ndarray
    b: np.ndarray
    eps: float
    dtype: np.dtype[Any]
    f: InitVar[np.ndarray]
    g: InitVar[np.ndarray]
    budget: int | None = None
    tau: tuple[float, float] = (1.0, 1.0)
    absorptions: int = 0
    alpha: np.ndarray = field(init=False, repr=False)
    beta: np.ndarray = field(init=False, repr=False)
    held: list[Held] | None = field(init=False, repr=False, default=None)
    _layout: tuple[int, np.dtype[Any]] | None = field(init=False, repr=False, default=None)

    def __post_init__(self, f: np.ndarray, g: np.ndarray) -> None:
        self._build(f, g)

    @property
    def Kmat(self) -> np.ndarray | None:
        """The kernels (J, n, m) when they are held whole in this process, else None."""
        if self.held and isinstance(self.held[0].obj, KernelRows):
            return self.held[0].obj.K
        return None

    def close(self) -> None:
        """Let the kernels go (on a cluster, the workers free them now)."""
        held, self.held = self.held, None
        if held is not None:
            self.session.release(held)

    def report(self) -> dict[str, float]:
        """Nothing to report."""
        return {}

    def _lost(self, exc: HeldLost) -> None:
        """The kernels are gone with a worker: say so, and leave the stage to the log domain
        (its jobs recompute lost strips of C)."""
        self.close()
        warnings.warn(f"the scaling path's kernels were lost ({exc}): going on in the log "
                      "domain", RuntimeWarning, stacklevel=4)

    def _build(self, f: np.ndarray, g: np.ndarray) -> None:
        """(Re)build the kernel, absorbing the potentials ``(f, g)``: one pass over C.

        Shared offsets for a batch whose spread around them is within half the absorption
        bound (room to move before the next absorption), else one kernel per problem; none
        (``held = None``: the step then reports a breakdown) if those exceed the budget,
        cannot be made, or are lost.
        """
        (n, K), m = f.shape, g.shape[0]
        alpha, beta = f, g
        if K > 1 and self.dtype == np.float64:   # (float32 products would sum in float32)
            mid_f, spread_f = _shared_offset(f, self.a, self.eps)
            mid_g, spread_g = _shared_offset(g, self.b, self.eps)
            if max(spread_f, spread_g) <= ABSORB_BOUND[self.dtype] / 2:
                alpha, beta = mid_f, mid_g                            # (n, 1), (m, 1)
        layout = (alpha.shape[1], self.dtype)
        if self.held is not None and self._layout != layout:
            self.close()                                              # free before allocating
        self._layout = layout
        betaT = np.ascontiguousarray(beta.T)                          # (J, m)
        self._fill(KernelRows, layout[0] * n * m * self.dtype.itemsize,
                   lambda h: (alpha[h.lo:h.hi], betaT, self.eps, self.dtype), alpha, beta)

    def _fill(self, kind: Any, size: int, args: Callable[[Held], tuple[Any, ...]],
              alpha: np.ndarray, beta: np.ndarray) -> None:
        """Build held kernels of ``kind`` (``KernelRows`` or ``BlockKernel``; held anew
        when none are) with ``args(h)`` for each held group, and take ``(alpha, beta)`` as
        the offsets; none (``held = None``: a breakdown) when ``size`` bytes exceed the
        budget, or they cannot be made, or are lost."""
        budget = self.session.hold_room()[0] if self.budget is None else self.budget
        if size > budget:
            self.close()
            return
        try:
            if self.held is None:
                self.held = self.session.hold(kind)
            why = self.session.call(self.held, kind.build, [args(h) for h in self.held])
        except HeldLost as exc:
            self._lost(exc)
            return
        if any(why):                               # the scratch disk filled up meanwhile
            warnings.warn(f"{next(w for w in why if w)}: going on in the log domain",
                          RuntimeWarning, stacklevel=4)
            self.close()
            return
        self.alpha, self.beta = alpha, beta
        self.absorptions += 1

    def refine(self, f: np.ndarray, g: np.ndarray) -> bool:
        """Store the kernel in float64 from now on, rebuilt at ``(f, g)``: for a float32
        kernel (mixed precision, or a float32 cost's own) whose fixed point missed ``tol``
        in the exact evaluation, which is float64 either way. A float64 kernel that does not
        fit is a breakdown at the next step (the log domain goes on, in float64 too). False
        (nothing done) when the kernel is float64 already."""
        if self.dtype == np.float64:
            return False
        self.dtype = np.dtype(np.float64)
        self._build(f, g)
        return True

    def _scalings(self, pot: np.ndarray, offset: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``exp((pot - offset) / eps)``, 0 where the weight ``w`` is 0."""
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.exp((pot - offset) / self.eps)
        return np.where(w > 0, x, 0.0)

    def _weights(self) -> np.ndarray:
        """The pass's row weights (n, K): ``a`` when balanced on the rows, else
        ``a exp(-(1 - tau) alpha / eps)`` (see the class)."""
        tau = self.tau[0]
        if tau == 1.0:
            return self.a
        with np.errstate(over="ignore", invalid="ignore"):
            w = self.a * np.exp(-(1.0 - tau) * self.alpha / self.eps)   # (n, K)
        return np.where(self.a > 0, w, 0.0)

    def _pass(
        self, held: list[Held], f: np.ndarray, g: np.ndarray, omega: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scalings ``(u, t = Kmat^T u)`` for potentials ``(f, g)``, ``u`` over-relaxed:
        each group's sweep, its column shares added in row order."""
        v = self._scalings(g, self.beta, self.b)                         # (m, K)
        u_prev = self._scalings(f, self.alpha, self.a)                   # (n, K)
        w, tau = self._weights(), self.tau[0]
        outs = self.session.call(held, KernelRows.sweep, [
            (v, w[h.lo:h.hi], u_prev[h.lo:h.hi], omega, tau) for h in held])
        u = outs[0][0] if len(outs) == 1 else np.concatenate([o[0] for o in outs])
        t = outs[0][1]
        for o in outs[1:]:
            t = t + o[1]                                                 # (m, K), fixed order
        return u, t

    def evaluate(self, f: np.ndarray, g: np.ndarray) -> Evaluation | None:
        """Row sums (n, K), column sums (m, K) and ``<P, C>`` (K,) of the plan of ``(f, g)``
        from a float64 kernel, ``P_ij = u_i Kmat_ij v_j`` (:meth:`KernelRows.evaluate`).
        None for float32 kernels (the log-domain evaluation then keeps the sums in float64),
        without a kernel, or when it is lost."""
        if self.held is None or self.dtype != np.float64:
            return None
        held = self.held
        u, v = self._scalings(f, self.alpha, self.a), self._scalings(g, self.beta, self.b)
        try:
            outs = self.session.call(held, KernelRows.evaluate,
                                     [(u[h.lo:h.hi], v) for h in held])
        except HeldLost as exc:
            self._lost(exc)
            return None
        rows = np.concatenate([o[0] for o in outs])
        cols, pc = outs[0][1], outs[0][2]
        for o in outs[1:]:
            cols, pc = cols + o[1], pc + o[2]                            # row order
        return Evaluation(rows, cols, pc)

    def step(
        self, f: np.ndarray, g: np.ndarray, omega: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(f_new, g_new)`` from ``(f, g)``, over-relaxed by ``omega``: one read of the
        kernel (None on breakdown, or when the kernel is lost with a worker); absorbs when
        scalings grow."""
        for attempt in range(2):
            if self.held is None:                                        # over the budget
                return None
            try:
                u, t = self._pass(self.held, f, g, omega)
            except HeldLost as exc:
                self._lost(exc)
                return None
            ok = (np.all(np.isfinite(u)) and np.all(u[self.a > 0] > 0)
                  and np.all(t[self.b > 0] > 0) and np.all(np.isfinite(t)))
            if ok:
                break
            if attempt == 0:   # rebuild at the incoming potentials
                self._build(f, g)
                continue
            return None
        tau_b = self.tau[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_u = np.log(u)                                            # -inf where a_i = 0
            log_v = np.log(np.where(self.b > 0, self.b, 1.0) / t ** tau_b)
            if tau_b != 1.0:                                             # unbalanced: see class
                log_v = log_v - (1.0 - tau_b) * self.beta / self.eps
        f_new = np.where(self.a > 0, self.alpha + self.eps * log_u, -np.inf)
        g_sink = self.beta + self.eps * log_v                            # plain g-update
        with np.errstate(invalid="ignore"):                              # -inf where b_j = 0
            g_rel = g + omega * (g_sink - g) if omega != 1.0 else g_sink
        g_new = np.where(self.b > 0, g_rel, -np.inf)
        bound = ABSORB_BOUND[self.dtype]
        with np.errstate(invalid="ignore"):                              # -inf - -inf
            log_v_new = (g_new - self.beta)[self.b > 0] / self.eps
        if max(np.abs(log_u[self.a > 0]).max(initial=0.0),
               np.abs(log_v_new).max(initial=0.0)) > bound:
            self._build(f_new, g_new)
        return f_new, g_new


#: The block-sparse kernel keeps the blocks whose bounds exceed ``theta`` times this (more
#: than a pass needs): the set then rarely grows, and each growth is a rebuild ...
KEEP_MARGIN = 1e-3
#: ... and it is rebuilt smaller when it keeps more than this many times what it would
#: keep now (the large first set of a stage, as the plan concentrates).
SHRINK = 2.0
#: A stage keeps no block-sparse kernel when its passes need more than this share of the
#: blocks (the early, dense stages: few iterations, each kernel build costs a pass and more).
SPARSE_MAX = 0.5
#: The first passes of a stage run in the log domain (:class:`TruncatedStep`): the first
#: f-update at a new eps moves f by up to ``eps log n``, so the blocks a kernel would need
#: are known only after it.
WARMUP = 2
#: A block mass measured on a kernel of this dtype is within this (in log) of the exact
#: one: rounding of each entry (2^-24 relative for float32) and of the vectorised exp.
RECORD_SLACK = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


@dataclass
class SparseScalingStep(ScalingStep):
    """The scaling path over the kept blocks only (certified block truncation with a
    block-sparse resident kernel, :class:`~bigsink.kernels.scaling.BlockKernel`): one
    problem, the iteration, absorption and breakdown rule of :class:`ScalingStep`, on a
    kernel of ``sum_kept |I||J|`` entries instead of ``n m``.

    The first ``WARMUP`` passes of a stage are ``warmup``'s (:class:`TruncatedStep`, the
    log domain, which records the blocks at the new eps). The kept set is then what
    :func:`select_blocks` asks, with a margin (``theta * KEEP_MARGIN``), and is chosen
    again at a rebuild: when a pass needs a block the kernel lacks, or the kernel keeps
    over ``SHRINK`` times what it would keep now; a stage whose passes need over
    ``SPARSE_MAX`` of the blocks keeps none (a breakdown). Each pass records the kept blocks'
    masses in the :class:`BlockBounds` and checks the bound of the rest at its output, as
    :class:`TruncatedStep` does; if that bound grew past ``theta`` the kernel is rebuilt
    with the blocks it needs (at the pass's input potentials: an absorption) and the pass
    rerun. A kernel over the room (``hold_room()``) is a breakdown: a :class:`Fallback`
    then goes on with :class:`TruncatedStep` (the log domain) for the stage.
    """

    theta: float = 0.0
    bounds: BlockBounds | None = None
    warmup: TruncatedStep | None = None
    verify: bool = False
    kept: np.ndarray = field(init=False, repr=False)                     # (nI, nJ)
    bound: float = field(init=False, default=0.0)
    _records: Records = field(init=False, repr=False, default=())
    _passes: int = field(init=False, repr=False, default=0)

    def __post_init__(self, f: np.ndarray, g: np.ndarray) -> None:
        assert self.bounds is not None and self.warmup is not None
        self.bounds.restage(self.eps)
        self.kept = np.ones(self.bounds.sizes.shape, dtype=bool)
        self.alpha, self.beta = f, g          # no kernel before the warm-up (see the class)

    def _build(self, f: np.ndarray, g: np.ndarray) -> None:
        """(Re)build the kernel of the kept blocks, absorbing ``(f, g)``; none (a breakdown)
        when it exceeds the room, cannot be made, or is lost."""
        assert self.bounds is not None
        bounds, kept = self.bounds, self.kept
        betaT = np.ascontiguousarray(g.T)                                # (1, m)
        self._fill(BlockKernel, int(bounds.sizes[kept].sum()) * self.dtype.itemsize,
                   lambda h: (f[h.lo:h.hi], betaT, self.eps, self.dtype, kept,
                              bounds.block_shape), f, g)

    def _pass(
        self, held: list[Held], f: np.ndarray, g: np.ndarray, omega: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`ScalingStep._pass` over the kept blocks; their masses kept for
        :meth:`step`."""
        v = self._scalings(g, self.beta, self.b)                         # (m, 1)
        u_prev = self._scalings(f, self.alpha, self.a)                   # (n, 1)
        w, tau = self._weights(), self.tau[0]
        outs = self.session.call(held, BlockKernel.sweep, [
            (v, w[h.lo:h.hi], u_prev[h.lo:h.hi], omega, tau) for h in held])
        u = np.concatenate([o[0] for o in outs])
        t, records = outs[0][1], outs[0][2]
        for o in outs[1:]:
            t, records = t + o[1], merge_records(records, o[2])          # row order
        self._records = records
        return u, t

    def step(
        self, f: np.ndarray, g: np.ndarray, omega: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(f_new, g_new)`` over the kept blocks (see the class); None on breakdown."""
        assert self.bounds is not None and self.warmup is not None
        self._passes += 1
        if self._passes <= WARMUP:                  # the log domain, while f moves fast
            out = self.warmup.step(f, g, omega)
            assert self.warmup.active is not None
            self.kept, self.bound = self.warmup.active, self.warmup.bound
            return out
        log_u = self.bounds.log_mass(f, g)
        need = select_blocks(log_u, self.theta)
        if self.held is None and need.mean() > SPARSE_MAX:  # a kernel of most blocks would
            return None                                 # not repay its build: log domain
        for _ in range(3):
            want = select_blocks(log_u, self.theta * KEEP_MARGIN) | need
            if self.held is None or (need & ~self.kept).any() or (
                    self.kept.sum() > SHRINK * want.sum()):
                self.kept = want                                         # grow or shrink
                self._build(f, g)
                if self.held is None:                                    # over the room
                    return None
            kept = self.kept
            done = super().step(f, g, omega)
            if done is None:
                return None
            out = done
            self.bounds.record(kept, self._records, out[0], g, RECORD_SLACK[self.dtype])
            log_out = self.bounds.log_mass(*out)
            self.bound = skipped_mass(log_out, kept)
            if self.bound <= self.theta:
                break
            need = kept | select_blocks(log_out, self.theta * KEEP_MARGIN)  # the bound grew
        return out

    def evaluate(self, f: np.ndarray, g: np.ndarray) -> Evaluation | None:
        """The plan's sums over the kept blocks (one pass over them, in float64), the
        rest's bound as slack; None (one exact pass) with ``verify``."""
        assert self.bounds is not None
        if self.verify:
            return None
        ev = truncated_evaluation(self.session, self.bounds, self.kept, f, g, self.eps)
        self.bound = ev.slack
        return ev

    def refine(self, f: np.ndarray, g: np.ndarray) -> bool:
        """The kernel in the cost's dtype (:meth:`ScalingStep.refine`), else a halved
        ``theta``; False when neither is left."""
        if super().refine(f, g):
            return True
        if self.theta < 1e-16:
            return False
        self.theta /= 2
        return True

    def report(self) -> dict[str, float]:
        """The kept fraction of blocks and the certified truncation bound."""
        return {"active_fraction": float(self.kept.mean()), "truncation_bound": self.bound}
