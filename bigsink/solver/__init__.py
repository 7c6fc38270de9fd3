"""The solver wing: :func:`solve`, written once over four parts.

* :mod:`~bigsink.solver.config`: the frozen :class:`SinkhornConfig`, the eps schedule and
  the resident-kernel policy;
* :mod:`~bigsink.solver.steps`: the :class:`~bigsink.solver.steps.Step` contract and its
  steps (log domain, scaling path, fallback);
* :mod:`~bigsink.solver.loop`: the one loop, written against that contract;
* :mod:`~bigsink.solver.finish`: costs, errors and checks of the returned potentials;
  :mod:`~bigsink.solver.checkpoint` and :mod:`~bigsink.solver.hooks` beside them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._xp import device_namespace
from ..costs import CostSource, PointCloudCost, as_cost, on_device, strip_module
from ..errors import InputError
from ..executors import Session, StripJob, make_executor
from ..kernels import check_tolerance, column_pair, pair_to_lse, potential_update, reference
from ..kernels.scaling import kernel_dtype
from ..problem import Problem, log0, make_problem, parse_eps
from ..result import LevelRun, SinkhornResult
from .checkpoint import Checkpointer, check_cost_range
from .checkpoint import check_arguments as checkpoint_arguments
from .config import (
    AUTO_TRUNCATE_ELEMENTS,
    STAGE_TOL,
    Placement,
    SinkhornConfig,
    eps_schedule,
    placement,
    truncating,
)
from .finish import finish
from .hooks import chain, user_hook
from .hooks import progress as progress_hook
from .loop import (
    CostStats,
    SolverState,
    check_resolution,
    iterate,
    relative_eps,
    scan,
    translate,
)
from .multiscale import FANOUT, Level, assign, coarse_to_fine, hierarchy
from .order import Order, spatial_layout
from .steps import Evaluation, StepFactory, evaluate, stage_steps

#: The solver's decisions (executor, eps schedule, kernel placement, multiscale levels) are
#: logged here at INFO; steps and scratch files log to ``bigsink.solver.steps`` and
#: ``bigsink.scratch`` (all below ``logging.getLogger("bigsink")``).
LOG = logging.getLogger(__name__)

__all__ = [
    "Evaluation", "Placement", "SinkhornConfig", "SolverState", "eps_schedule", "evaluate",
    "solve", "translate",
]


def _check_init(init: Any, problem: Problem) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate warm-start potentials ``(f, g)``; either may be None."""
    if init is None:
        return None, None
    try:
        f0, g0 = init
    except (TypeError, ValueError):
        raise InputError("init must be a pair (f, g) of potentials (either may be None).") from None
    out: list[np.ndarray | None] = []
    sides = (("f", f0, problem.a), ("g", g0, problem.b))
    for name, x, w in sides:
        if x is None:
            out.append(None)
            continue
        size = w.shape[0]
        arr = np.asarray(x, dtype=np.float64)
        arr = arr[:, None] if arr.ndim == 1 else arr                      # (size, 1 or K)
        if arr.ndim != 2 or arr.shape[0] != size or arr.shape[1] not in (1, problem.K):
            raise InputError(
                f"init {name}: expected {size} potentials (or ({size}, {problem.K})), "
                f"got shape {np.shape(x)}."
            )
        arr = np.broadcast_to(arr, (size, problem.K)).copy()
        # a returned result has potential -inf where the weight is 0 (that row or column
        # of the plan is exactly 0): accepted there, and only there; and set there, as
        # every path starts (no pass reads a massless row or column)
        unused = np.isneginf(arr) & (w == 0)
        if not np.isfinite(arr[~unused]).all():
            raise InputError(
                f"init {name} contains non-finite potentials (NaN, inf, or -inf where the "
                "weight is not 0).")
        arr[w == 0] = -np.inf
        out.append(arr)
    return out[0], out[1]


def solve(
    cost: Any,
    a: Any = None,
    b: Any = None,
    *,
    eps: float | str,
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
    truncate: bool | None = None,
    theta: float | None = None,
    verify: bool = False,
    multiscale: bool | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SinkhornResult:
    """Solve entropic optimal transport ``min <P,C> + eps*KL(P || a b^T)`` (DESIGN.md §1).

    Args:
        cost: an (n, m) array (NumPy/CuPy/array-API), a cost source (:class:`DenseCost`,
            ...), a path/URL of a Zarr array or a ``.npy`` file, a ``zarr.Array``, a
            ``dask.array``, an xarray ``DataArray``, a pandas ``DataFrame`` or a
            scipy.sparse matrix (:func:`bigsink.costs.as_cost`).
        a, b: marginals (n,) and (m,), or (n, K) / (m, K) to solve K problems with one pass
            over C per iteration; default uniform.
        eps: entropic regularisation (> 0), or relative to the cost as OTT's
            ``relative_epsilon``: ``"std:0.05"`` (0.05 times the standard deviation of C's
            entries) or ``"mean:0.05"`` (times their mean), found by one pass over C; the
            result's ``eps`` is then the absolute value and ``relative_eps`` says how it
            was set.
        tol: stop when the L1 marginal error, relative to the total mass ``sum(a)``, is
            at most this (for unbalanced problems: the L1 change of the row scaling between
            iterations, relative to the geometric mean of ``sum(a)`` and ``sum(b)``). The
            solve runs on weights normalised to total mass 1 and scales the answer back,
            so it does not depend on the weights' scale (total masses in
            :data:`~bigsink.problem.MASS_RANGE`; else an InputError).
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
        resident_kernel: the scaling fast path (:mod:`bigsink.kernels.scaling`): keep the kernel
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
            (:func:`bigsink.kernels.scaling.kernel_dtype`).
        truncate: certified block truncation (:class:`~bigsink.solver.steps.TruncatedStep`,
            ``docs/design.md``): each log-domain pass reads only the cost's blocks whose
            plan mass is not provably negligible, skipping at most ``theta`` of it in all
            (then the marginals move by at most ``theta`` in L1, re-checked after every
            pass). A point cloud is then solved in a spatial (k-d) order with square blocks
            of 256 points (unless its grid already has block columns); the result is in
            your order. For one NumPy problem, a stage whose kept blocks' kernel fits (and
            needs at most half the blocks) runs the scaling path on that block-sparse
            kernel (``resident_kernel=False`` turns it off), else the log domain. None
            (auto): on for solves without a dense resident kernel over at least 2^24
            entries and 16 blocks; True: always (no dense resident kernel); False: never.
            The result reports ``active_fraction`` and ``truncation_bound``, and
            ``history.active`` per iteration; its marginal error is exact over the blocks
            read plus the bound of the rest.
        theta: the truncation's L1 budget per pass; default ``tol / 10``.
        verify: with truncation, make the final check one exact pass over every block
            (the marginal error is then exact).
        multiscale: for a point cloud, run the early (large) eps stages on clusters of
            16, 256, ... points (their centroids and summed weights) and only the later
            ones on the points, each level from the coarser one's potentials
            (:mod:`bigsink.solver.multiscale`): a level serves the stages at whose eps its
            clusters' radii move no cost by more than eps. The coarse levels only warm-start
            the points' stages, whose truncation and convergence are certified as always.
            Skips the first pass over C (the cost's range is bounded from the clouds'
            boxes). None (auto): on where the cloud is solved in spatial order (see
            ``truncate``) unless ``truncate=False``; True: always (a point-cloud cost only);
            False: never. The result's ``levels`` and ``multiscale`` say what ran.
        callback: called after every iteration as ``callback(n_iter, err)``: the
            iterations so far and the L1 row marginal error before the last one,
            relative to the total mass (for
            logging, or timing iterations apart from the solve's one-off costs).
        storage_options: fsspec options (credentials, endpoint) for a URL ``cost``.

    Returns:
        A :class:`SinkhornResult`. Warns (ConvergenceWarning) when not converged.

    Raises:
        InputError: on bad input, before any iteration.
        NumericalError: instead of returning non-finite potentials or a vanished plan.
    """
    t0 = time.perf_counter()
    user_src = as_cost(cost, storage_options)
    eps_value, eps_rule = parse_eps(eps)             # absolute, or a factor of C's mean/std
    user_problem = make_problem(user_src.shape, a, b, eps_value, rho, rho_a, rho_b)
    config = SinkhornConfig.make(tol, max_iter, omega, eps_scaling, eps_decay, resident_kernel,
                                 mixed_precision, truncate, theta, verify, multiscale)
    f0, g0 = _check_init(init, user_problem)
    src, order = spatial_layout(user_src, config)     # a point cloud: in spatial order
    problem = user_problem.normalised()              # total mass 1: scale-free numbers
    if order is not None:
        problem = order.problem(problem)
        f0, g0 = order.potentials(f0, g0)
    levels, note = _hierarchy(src, order, problem, config)   # (from the host's points)
    host = src
    if device is not None:
        src = on_device(src, device_namespace(device))
    resumed, fp = checkpoint_arguments(checkpoint, checkpoint_every, resume, problem)
    user = user_hook(callback)
    session = make_executor(executor, client).open(src, problem.K)
    src = session.cost                 # a lazy array: computed once when solved in process
    LOG.info("executor: %s; cost %s (%d x %d, %s)", session.where, type(src).__name__,
             *src.shape, np.dtype(src.dtype).name)
    runs: tuple[LevelRun, ...] = ()
    try:
        scan_seconds: float | None = None
        relative = ""
        if levels is not None:                 # a cloud's range from its boxes: no pass
            assert isinstance(host, PointCloudCost)
            stats = CostStats(*host.cost_range(), 0, -1)
            problem, relative = _relative(session, src, stats, problem, eps_rule, eps_value)
            cold = config.schedule(problem.eps, stats.spread, False)
            if assign(levels, cold)[0] is None:     # no level serves a stage: as without
                note = (f"off: none of the {len(levels)} cluster levels fits an eps stage "
                        "(their clusters are too wide against eps, typical of high "
                        "dimensions)")
                levels = None
        if levels is None:
            t_scan = time.perf_counter()
            stats = scan(session, src)
            scan_seconds = time.perf_counter() - t_scan
            if not relative:
                problem, relative = _relative(session, src, stats, problem, eps_rule,
                                              eps_value)
        check_resolution(problem.eps, stats, np.dtype(src.dtype))
        check_tolerance(src.dtype, config.tol, src.shape, max(abs(stats.lo), abs(stats.hi)),
                        problem.eps, stacklevel=2)
        schedule = config.schedule(problem.eps, stats.spread, init is not None)
        if resumed is not None:
            check_cost_range(resumed, (stats.lo, stats.hi), checkpoint)
            schedule = resumed.schedule
            f0, g0 = resumed.f, resumed.g
        else:                                      # the user's potentials, normalised
            s_f, s_g = user_problem.shifts(schedule[0])
            f0, g0 = (None if f0 is None else f0 - s_f), (None if g0 is None else g0 - s_g)
        if g0 is None and f0 is not None:  # g from the given f: one column pass
            _, col = session.run(StripJob(column_pair, reference.merge_pairs, (f0,),
                                          (schedule[0],)))
            g0 = potential_update(log0(problem.b), pair_to_lse(col), schedule[0],
                                  problem.tau(schedule[0])[1])
        if g0 is None:         # 0, and -inf where b is 0: no path reads a massless column
            g0 = np.where(problem.b > 0, 0.0, -np.inf)
        start = SolverState(0, f0, g0, 0)
        if resumed is not None:
            start = SolverState(resumed.stage, f0, resumed.g, resumed.n_iter, resumed.history)
        elif levels and init is not None:
            note = "off: the solve starts from the given potentials (init)"
        elif levels:                     # the early stages on the clusters, then the points
            coarse, runs = coarse_to_fine(levels, schedule, problem,
                                          lambda lv, sch, st: _solve_level(lv, sch, st, config))
            start = start if coarse is None else coarse
            note = f"{len(runs)} of {len(levels)} cluster levels used, coarsest first"
        hooks = [progress_hook(progress, session.dashboard), user]
        if checkpoint is not None:
            hooks.append(Checkpointer(checkpoint, checkpoint_every, schedule, fp,
                                      (stats.lo, stats.hi)))
        LOG.info("eps schedule: %d stage(s), %s (eps-scaling %s)", len(schedule),
                 ", ".join(f"{e:.3g}" for e in schedule),
                 {None: "auto", True: "on", False: "off"}[config.eps_scaling])
        if note:
            LOG.info("multiscale: %s", note)
        place, steps = _open_steps(session, src, problem, config, scan_seconds)
        LOG.info("placement: %s", place)
        state, ev, converged, report = iterate(session, problem, schedule, start, config,
                                               steps, chain(hooks))
        if ev is None:
            assert state.f is not None
            ev = evaluate(session, state.f, state.g, schedule[-1])
    finally:
        session.close()
    where = session.where
    if order is not None:                             # back to the user's order
        state, ev = order.back(state, ev)
        if device is not None:
            src = on_device(user_src, device_namespace(device))
    problem = dataclasses.replace(problem, a=user_problem.a, b=user_problem.b)
    state, ev = _scale_back(problem, state, ev, schedule[-1])
    result = finish(problem, state, ev, schedule, config.tol, converged,
                    time.perf_counter() - t0, user_src if order is not None and device is None
                    else src, str(place), relative, report, config.omega)
    return dataclasses.replace(result, levels=runs, multiscale=note, executor=where)


def _scale_back(problem: Problem, state: SolverState, ev: Evaluation, eps: float
                ) -> tuple[SolverState, Evaluation]:
    """The final state and evaluation of the normalised solve, for ``problem``'s own
    weights (:meth:`~bigsink.problem.Problem.shifts`): the potentials shifted, the plan's
    sums and cost scaled by ``exp((s_f + s_g) / eps)``."""
    assert state.f is not None
    s_f, s_g = problem.shifts(eps)                                    # (K,) each
    factor = np.exp((s_f + s_g) / eps)                                # (K,) the plan's scale
    state = dataclasses.replace(state, f=state.f + s_f, g=state.g + s_g)
    ev = dataclasses.replace(ev, rows=ev.rows * factor, cols=ev.cols * factor,
                             transport_cost=ev.transport_cost * factor,
                             slack=ev.slack * float(factor.max()))
    return state, ev


def _open_steps(
    session: Session, src: CostSource, problem: Problem, config: SinkhornConfig,
    scan_seconds: float | None,
) -> tuple[Placement, StepFactory]:
    """Where the kernel goes (:func:`~bigsink.solver.config.placement`) and the factory of
    each eps stage's step: truncated, block-sparse, resident or log domain
    (:func:`~bigsink.solver.steps.stage_steps`)."""
    place = placement(False if config.truncate else config.resident_kernel, session, src,
                      problem, config.tol, config.mixed_precision, scan_seconds)
    theta = config.theta if truncating(config, place, src) else None
    sparse = None            # the block-sparse kernel's dtype, where one may be kept
    if (theta is not None and config.resident_kernel is not False and problem.K == 1
            and strip_module(src) == "numpy"):
        sparse = kernel_dtype(src.dtype, config.tol, 1, config.mixed_precision)
    return place, stage_steps(session, problem, place.dtype, theta, config.verify, sparse)


def _relative(session: Session, src: CostSource, stats: CostStats, problem: Problem,
              rule: str | None, factor: float) -> tuple[Problem, str]:
    """The problem at a relative eps (:func:`~bigsink.solver.loop.relative_eps`: one pass)
    and how it was set; unchanged, and "", for an absolute eps."""
    if rule is None:
        return problem, ""
    value, relative = relative_eps(session, src, stats, rule, factor)
    return dataclasses.replace(problem, eps=value), relative


def _hierarchy(src: CostSource, order: Order | None, problem: Problem, config: SinkhornConfig
               ) -> tuple[tuple[Level, ...] | None, str]:
    """The multiscale levels of the solve (:func:`~bigsink.solver.multiscale.hierarchy`),
    or None when it runs without, and a note on why (empty when multiscale was not asked
    for and does not apply). With levels, the cost's range comes from the clouds' boxes
    (whether or not a resumed or warm-started solve runs them: a checkpoint records it)."""
    if order is None or config.multiscale is False or (
            config.multiscale is None and config.truncate is False):
        return None, ""
    if not order.nested or not isinstance(src, PointCloudCost):
        return None, (f"off: the cost's blocks {src.grid.block_shape} are not powers of "
                      f"{FANOUT} points, so clusters would not be compact")
    return hierarchy(src, problem), ""


def _solve_level(level: Level, schedule: Sequence[float], start: SolverState,
                 config: SinkhornConfig) -> SolverState:
    """Run the stages ``start.stage ..`` of ``schedule`` on a coarse level, in this process
    (it is small), to the intermediate stages' tolerance; its own placement and
    truncation as for any cloud (a level small enough is scanned for the placement)."""
    cfg = dataclasses.replace(config, tol=max(config.tol, STAGE_TOL), truncate=None,
                              verify=False)
    n, m = level.cost.shape
    session = make_executor("local").open(level.cost, level.problem.K)
    try:
        scan_seconds = None
        if n * m < AUTO_TRUNCATE_ELEMENTS:
            t0 = time.perf_counter()
            scan(session, level.cost)
            scan_seconds = time.perf_counter() - t0
        _, steps = _open_steps(session, level.cost, level.problem, cfg, scan_seconds)
        state, _, _, _ = iterate(session, level.problem, schedule, start, cfg, steps)
    finally:
        session.close()
    return state
