"""What a solve is configured with: the frozen :class:`SinkhornConfig`, the eps schedule
and the resident-kernel policy. Everything here is decided before the first iteration."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..costs import CostSource, strip_module
from ..errors import InputError
from ..executors import Session
from ..kernels.scaling import kernel_dtype
from ..problem import Problem, check_max_iter, check_positive

__all__ = [
    "AUTO_TRUNCATE_ELEMENTS", "CLOUD_BLOCK", "Placement", "SinkhornConfig", "eps_schedule",
    "placement", "truncating",
]

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
#: Certified block truncation is on by default (``truncate=None``) for log-domain solves
#: over at least this many entries of C (below, a whole pass costs milliseconds) ...
AUTO_TRUNCATE_ELEMENTS = 1 << 24
#: ... on a grid of at least this many blocks (a point cloud is given square blocks).
AUTO_TRUNCATE_BLOCKS = 16
#: The block side of a point cloud put in spatial order for truncation: 256 x 256 blocks
#: keep the per-block numbers small (10^5 points: 153 000 blocks) and the gathered
#: strips long enough for the fused kernels.
CLOUD_BLOCK = 256


@dataclass(frozen=True)
class SinkhornConfig:
    """The iteration choices of :func:`bigsink.solve`, validated (see its arguments).

    ``omega`` None is adaptive over-relaxation; ``eps_scaling`` None is automatic;
    ``decay`` is the resolved ratio between eps stages; ``resident_kernel``,
    ``mixed_precision`` and ``truncate`` None are automatic; ``theta`` is the truncation's
    L1 budget per pass (``tol / 10`` unless given) and ``verify`` asks for an exact final
    pass over every block; ``multiscale`` None is automatic (a point cloud solved in
    spatial order).
    """

    tol: float = 1e-6
    max_iter: int = 10_000
    omega: float | None = None
    eps_scaling: bool | None = None
    decay: float = AUTO_DECAY[True]
    resident_kernel: bool | None = None
    mixed_precision: bool | None = None
    truncate: bool | None = None
    theta: float = 1e-7
    verify: bool = False
    multiscale: bool | None = None

    @property
    def relaxed(self) -> bool:
        """Whether over-relaxation is adaptive."""
        return self.omega is None

    @classmethod
    def make(
        cls, tol: Any = 1e-6, max_iter: Any = 10_000, omega: Any = None,
        eps_scaling: bool | None = None, eps_decay: Any = None, resident_kernel: Any = None,
        mixed_precision: Any = None, truncate: Any = None, theta: Any = None,
        verify: Any = False, multiscale: Any = None,
    ) -> SinkhornConfig:
        """Validate :func:`bigsink.solve`'s arguments (InputError naming the bad one)."""
        tol = check_positive("tol", tol)
        max_iter = check_max_iter(max_iter)
        relaxed = omega is None
        decay = AUTO_DECAY[relaxed] if eps_decay is None else check_positive("eps_decay",
                                                                            eps_decay)
        if decay >= 1:
            raise InputError(f"eps_decay must be in (0, 1); got {eps_decay!r}.")
        for name, flag in (("resident_kernel", resident_kernel),
                           ("mixed_precision", mixed_precision), ("truncate", truncate),
                           ("verify", verify), ("multiscale", multiscale)):
            if flag is not None and not isinstance(flag, bool | np.bool_):
                raise InputError(f"{name} must be None (auto), True or False; got {flag!r}.")
        if omega is not None and not (isinstance(omega, int | float) and 0 < omega < 2):
            raise InputError(
                f"omega must be None (adaptive) or a number in (0, 2); got {omega!r}.")
        if verify is None:
            raise InputError("verify must be True or False; got None.")
        if truncate and resident_kernel:
            raise InputError("truncate=True keeps no dense resident kernel (only a "
                             "block-sparse one, where it fits): it cannot be combined with "
                             "resident_kernel=True.")
        if theta is not None and truncate is False:
            raise InputError("theta is the truncation budget: it needs truncate=None or True.")
        budget = tol / 10 if theta is None else check_positive("theta", theta)
        return cls(tol, max_iter, None if omega is None else float(omega), eps_scaling, decay,
                   None if resident_kernel is None else bool(resident_kernel),
                   None if mixed_precision is None else bool(mixed_precision),
                   None if truncate is None else bool(truncate), budget, bool(verify),
                   None if multiscale is None else bool(multiscale))

    def schedule(self, eps: float, spread: float, warm: bool) -> tuple[float, ...]:
        """The eps stages of a solve at ``eps`` over a cost of this ``spread``
        (:func:`eps_schedule`)."""
        return eps_schedule(eps, spread, self.eps_scaling, self.decay, warm, self.relaxed)


def truncating(config: SinkhornConfig, place: Placement, src: CostSource) -> bool:
    """Whether the solve runs :class:`~bigsink.solver.steps.TruncatedStep`: always with
    ``truncate=True``; never with False or a resident kernel; auto (None) for a log-domain
    solve over at least ``AUTO_TRUNCATE_ELEMENTS`` entries on a grid of at least
    ``AUTO_TRUNCATE_BLOCKS`` blocks and two block columns."""
    if config.truncate is not None or place.dtype is not None:
        return bool(config.truncate) and place.dtype is None
    (n, m), (nI, nJ) = src.shape, src.grid.n_blocks
    return n * m >= AUTO_TRUNCATE_ELEMENTS and nJ >= 2 and nI * nJ >= AUTO_TRUNCATE_BLOCKS


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


@dataclass(frozen=True)
class Placement:
    """Where the scaling path's kernel ``exp((f + g - C)/eps)`` is kept, or why there is
    none: ``kind`` is ``"resident"`` (memory, a scratch file or the workers, as ``reason``
    says), ``"recompute"`` (a point cloud's costs computed in registers every pass: the log
    domain with the fused cloud kernels) or ``"log domain"`` (a stored cost read every pass).
    ``dtype`` is the kernel's storage dtype when resident."""

    kind: str
    reason: str
    dtype: np.dtype[Any] | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


#: Bytes read to measure this process's read rate for the placement's comparison.
PROBE_BYTES = 32 << 20


def read_seconds_per_byte(threads: int) -> float:
    """Measured seconds per byte to read memory with ``threads`` threads (one NumPy sum of
    a PROBE_BYTES array, best of three, assumed to scale with the threads)."""
    probe = np.ones(PROBE_BYTES // 4, dtype=np.float32)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        probe.sum()
        best = min(best, time.perf_counter() - t0)
    return best / PROBE_BYTES / max(1, threads)


def placement(
    flag: bool | None, session: Session, src: CostSource, problem: Problem, tol: float,
    mixed: bool | None, scan_seconds: float | None,
) -> Placement:
    """Where the kernel goes (:func:`kernel_dtype` gives its dtype): resident where the
    session has room (``hold_room()``) unless ``flag`` is False.

    A point cloud (a cost with a ``strip`` member: its strips are computed, never read) is
    kept resident only where reading the kernel is measured cheaper than recomputing: the
    recompute cost per element is the first scan's (``scan_seconds`` over ``n * m``; a
    scan computes every cost once, as a log-domain pass does before its exp), the read
    cost the kernel's bytes at this process's measured read rate; a cloud that was never
    scanned (``scan_seconds`` None: a multiscale solve bounds its costs from the clouds'
    boxes) is recomputed. ``resident_kernel=True`` (``flag``) insists, and is an
    InputError where no room is.
    """
    n, m = src.shape
    cost_dtype = np.dtype(src.dtype)
    dtype = kernel_dtype(cost_dtype, tol, problem.K, mixed)
    computed = hasattr(src, "strip")
    fallback = "recompute" if computed else "log domain"
    if flag is False:
        return Placement(fallback, "resident_kernel=False")
    room, where = session.hold_room()       # memory, a scratch file, or the workers'
    size = n * m * dtype.itemsize                                    # a batch may share one
    reasons = [
        (cost_dtype not in (np.float32, np.float64), f"the cost dtype is {cost_dtype}"),
        (size > room, f"the kernel ({size / 2**30:.1f} GiB) exceeds {where}"),
    ]
    why = [text for bad, text in reasons if bad]
    if strip_module(src) != "numpy":
        why.append("the cost is not a NumPy array")
    if why and flag:
        raise InputError(f"resident_kernel=True is not possible here: {'; '.join(why)}.")
    if why:
        return Placement(fallback, "; ".join(why))
    fits = f"the {dtype} kernel ({size / 2**30:.2g} GiB) fits {where}"
    if not computed:
        return Placement("resident", fits, dtype)
    if scan_seconds is None:                  # nothing measured to compare with
        if flag:
            return Placement("resident", f"{fits}; resident_kernel=True", dtype)
        return Placement("recompute", "the cloud's costs are computed in every pass "
                         "(bounded from its boxes, never scanned)")
    threads = int(getattr(session, "threads", 1) or 1)
    read_ns = dtype.itemsize * read_seconds_per_byte(threads) * 1e9
    recompute_ns = scan_seconds / (n * m) * 1e9
    compared = (f"reading it costs {read_ns:.2g} ns/element, recomputing the cloud's costs "
                f"{recompute_ns:.2g} ns/element (measured)")
    if read_ns < recompute_ns or flag:
        return Placement("resident", f"{fits}; {compared}", dtype)
    return Placement("recompute", compared)
