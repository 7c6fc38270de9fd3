"""The scaling fast path: Sinkhorn on a resident kernel with absorption (Schmitzer 2019).

When the kernel fits in this process's memory, an iteration needs no ``exp``. With offsets
``alpha`` (n, K), ``beta`` (m, K) (the potentials at the last absorption) the kernel

    Kmat_kij = exp((alpha_ik + beta_jk - C_ij) / eps)                    (DESIGN.md §3)

(one (n, m) kernel per problem of a batch) is built once (one pass over C, one exp per
element), and the potentials are carried as
bounded scalings ``f = alpha + eps log u``, ``g = beta + eps log v``. One iteration is then
one read of ``Kmat``: for every row, ``u_i = a_i / (Kmat_i . v)`` and, from the same row
while it is in cache, ``t += u_i Kmat_i`` gives ``v = b / t`` -- exactly the log-domain
f-then-g update of :func:`bigsink.kernels.sinkhorn_strip`, in the scaling domain.

Absorption: when a scaling leaves ``[exp(-B), exp(B)]`` it is folded into the offsets and
``Kmat`` is rebuilt, so the products ``u_i Kmat_ij v_j`` (the plan) never leave the range of
the storage dtype where they matter. A row or column whose reduction vanished (an underflow
the bound did not prevent) triggers a rebuild at the current potentials; if that does not
cure it, the step reports a breakdown and the solver continues in the log domain. The
solver's final exact evaluation still checks the returned plan's mass.

Storage: the kernel has the cost's dtype, except that a float64 cost's kernel is stored in
float32 when the tolerance allows (mixed precision, :func:`kernel_dtype`): the pass is
memory-bound, so half the bytes is about half the time, while scalings, potentials and
every sum stay float64. Rounding moves each entry by at most 2**-24 relative, so the fixed
point moves by at most ~6e-8 in the L1 marginal error; the solver's exact float64
evaluation decides convergence, and :meth:`ScalingStep.widen` rebuilds in float64 if it
ever misses ``tol``.

Where the kernel lives (:func:`kernel_room`): in memory, within 40% of it, for a cost held
or computed in this process; in a **scratch file** for a cost read from a Zarr store, which
is never held whole in one process. The file is created in ``tempfile.gettempdir()`` (set
``TMPDIR`` to choose the disk; a tmpfs there, which holds its files in memory, is held to
the memory budget), unlinked at once (nothing is left behind, even by a killed
process), its blocks reserved up front (a full disk is an error before the build, not a
crash while writing), and mapped: a pass reads it through the OS's file cache with no copy,
so it streams like the store itself, at the speed of memory while the file stays cached
and of the disk when it does not. The iteration then reads the kernel instead of C: one
read per iteration, no ``exp``, the same bytes as C for a float32 store, half for a
float64 one in mixed precision. A pass drops each window of the file's pages from its
mapping once done (:func:`~bigsink.scratch.release_pages`), so the process's resident set
stays near one window whatever the kernel's size.

On a Dask cluster (:mod:`bigsink.executors.dask`) each worker holds the kernel rows of the
strips of C dealt to it (a :class:`KernelRows` actor): built there from the strips it keeps
resident, or, when C is streamed from a Zarr store, read from the store into a scratch
file on the worker's own disk. An iteration sends ``v`` (and each worker's rows of ``a``
and the previous ``u``) to every worker at once and adds their column shares here, in row
order. Only O(n + m) numbers travel, and an actor call costs a few milliseconds where a
round of tasks costs tens. A worker that dies takes its kernels with it: the step says so
and the stage goes on in the log domain, whose jobs recompute (or re-read) the lost strips
of C.

Scope: balanced and unbalanced problems, NumPy kernels, kernel bytes within
:func:`kernel_space` (in process; on the workers next to resident strips, or in their
scratch room for a streamed store). Everything else runs in the log domain.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import InitVar, dataclass, field
from typing import Any

import numba as nb
import numpy as np

from . import fused
from .costs import CostSource
from .executors import LocalSession, Session
from .executors.base import Held, HeldLost
from .scratch import kernel_budget, release_pages, scratch_array, scratch_room
from .zarr_cost import reads_store

__all__ = ["ABSORB_BOUND", "MIXED_TOL", "KernelRows", "ScalingStep", "kernel_dtype",
           "kernel_room", "kernel_space"]

#: Absorb when ``|log u|`` or ``|log v|`` exceeds this, by storage dtype.
ABSORB_BOUND = {np.dtype(np.float32): 10.0, np.dtype(np.float64): 100.0}
#: Kernel entries below this are stored as 0: subnormal numbers are orders of magnitude
#: slower to multiply. With the scalings bounded by ``exp(ABSORB_BOUND)``, a dropped entry
#: is a plan entry below ``FLUSH * exp(2 * ABSORB_BOUND)``: 7e-114 (float64), 5e-22 (float32).
FLUSH = {np.dtype(np.float32): 1e-30, np.dtype(np.float64): 1e-200}
#: The parallel pass splits the rows into about this many chunks (fixed by n alone, so
#: the column sums' order never depends on the threads), of at least MIN_CHUNK_ROWS rows.
CHUNKS = 32
MIN_CHUNK_ROWS = 64
#: Rows of a chunk that the pass handles together (the pass is written for 8).
ROWS_PER_STEP = 8
#: A pass over a scratch kernel runs this many chunks per thread at a time, then drops
#: their pages from its mapping (:func:`~bigsink.scratch.release_pages`): its resident set
#: stays near one window (a Dask nanny counts mapped pages against the worker's limit)...
WINDOW_CHUNKS_PER_THREAD = 2
#: ...of chunks of at most this many bytes (and MIN_CHUNK_ROWS rows).
SCRATCH_CHUNK_BYTES = 8 << 20


#: Smallest ``tol`` for which a float64 cost's kernel is stored in float32 by default.
#: Rounding the kernel to float32 moves each entry by at most 2**-24 (6e-8) relative, so a
#: row or column sum moves by at most that: the float32 kernel's fixed point is within
#: ~6e-8 (L1) of the float64 one, far below this. Sums stay float64 either way.
MIXED_TOL = 1e-7


def kernel_dtype(
    cost_dtype: Any, tol: float, batch: int, mixed: bool | None = None
) -> np.dtype[Any]:
    """Storage dtype of the resident kernel of a cost of ``cost_dtype``.

    Mixed precision (``mixed`` None: when ``tol >= MIXED_TOL`` and one problem is solved;
    True: whenever the cost is float64; False: never) stores a float64 cost's kernel in
    float32: half the bytes, and so about half the time, per iteration of the
    memory-bound pass. A batch keeps float64 so that it can share one kernel (BLAS-3
    products would sum in float32). :meth:`ScalingStep.widen` returns to float64 if the
    exact evaluation ever misses ``tol``.
    """
    dtype = np.dtype(cost_dtype)
    if mixed is None:
        mixed = tol >= MIXED_TOL and batch == 1
    return np.dtype(np.float32) if dtype == np.float64 and mixed else dtype


def chunk_rows(n: int, row_bytes: int | None = None) -> int:
    """Rows per chunk of the parallel pass over ``n`` rows: a multiple of ROWS_PER_STEP.

    Each chunk owns an ``m``-long column accumulator that the caller sums, so few chunks
    keep that traffic small (32 x m doubles), while 32 still balance the threads. Given
    ``row_bytes`` (a scratch kernel's, whose pass releases its pages chunk window by
    window), a chunk also stays within SCRATCH_CHUNK_BYTES (at least MIN_CHUNK_ROWS rows)."""
    rows = max(MIN_CHUNK_ROWS, -(-n // CHUNKS))
    if row_bytes is not None:
        rows = min(rows, max(MIN_CHUNK_ROWS, SCRATCH_CHUNK_BYTES // max(1, row_bytes)))
    return -(-rows // ROWS_PER_STEP) * ROWS_PER_STEP


def kernel_room(cost: CostSource) -> tuple[int, str]:
    """Bytes the kernel of ``cost`` may take, and where it would live (for messages).

    A cost read from a Zarr store gets a scratch file (:func:`~bigsink.scratch.scratch_room`:
    the free space of the temporary directory). Any other cost gets memory:
    :func:`~bigsink.scratch.kernel_budget`."""
    if reads_store(cost):
        return scratch_room()
    budget = kernel_budget()
    return budget, f"40% of memory ({budget / 2**30:.1f} GiB)"


@nb.njit(inline="always", fastmath=True, cache=True)
def _update_row(
    a: np.ndarray, u: np.ndarray, i: int, hi: int, s: float, omega: float, tau: float
) -> float:  # pragma: no cover - compiled
    """``u_i <- u_i**(1 - omega) * (a_i / s**tau)**omega`` with ``s = (Kmat v)_i``; returns
    the new ``u_i`` (0 for a 0-weight row, and for ``i >= hi``: a padding row, left alone).

    ``a``: the row weights (their unbalanced form when ``tau != 1``:
    :meth:`ScalingStep._weights`)."""
    if i >= hi:
        return 0.0
    if a[i] <= 0.0:
        w = 0.0
    elif tau == 1.0:
        w = a[i] / s                                                     # f-update
    else:
        w = a[i] * s ** -tau                                             # unbalanced
    if omega != 1.0 and w > 0.0:                                         # over-relaxed
        w = u[i] * (w / u[i]) ** omega
    u[i] = w
    return w


@nb.njit(parallel=True, fastmath=True, cache=True)
def _scaling_pass(
    Kmat: np.ndarray, v: np.ndarray, a: np.ndarray, u: np.ndarray, omega: float, tau: float,
    cols: np.ndarray, rows: int,
) -> None:  # pragma: no cover - compiled
    """``u = u**(1 - omega) * (a / (Kmat v)**tau)**omega`` and ``cols[c] = sum_{i in chunk c}
    u_i Kmat_i`` in one read of ``Kmat``, for one problem: Kmat (n, m) float32 or float64;
    v (m,); a (n,) (unbalanced form when ``tau != 1``: :meth:`ScalingStep._weights`);
    u (n,) holds the previous scalings on entry; cols (ceil(n / rows), m); all sums in
    float64.

    Rows are split into fixed chunks of ``rows`` (:func:`chunk_rows`) run in parallel; each
    chunk owns its column accumulator, so the sum over chunks (done by the caller) has a
    fixed order.
    Rows go ROWS_PER_STEP = 8 at a time: the reads of ``v`` and the read-modify-write of the
    accumulator (L2 traffic, 24 bytes per step and column) are shared by 8 rows, which
    keeps the pass bound by the read of ``Kmat`` itself. A chunk's last step repeats its
    last row with weight 0.
    """
    n, m = Kmat.shape
    for c in nb.prange(cols.shape[0]):
        acc = cols[c]
        acc[:] = 0.0
        lo, hi = c * rows, min(n, (c + 1) * rows)
        for i in range(lo, hi, ROWS_PER_STEP):
            last = min(i + ROWS_PER_STEP, hi) - 1
            i1, i2, i3 = min(i + 1, last), min(i + 2, last), min(i + 3, last)
            i4, i5, i6, i7 = min(i + 4, last), min(i + 5, last), min(i + 6, last), last
            r0, r1, r2, r3 = Kmat[i], Kmat[i1], Kmat[i2], Kmat[i3]                # (m,) each
            r4, r5, r6, r7 = Kmat[i4], Kmat[i5], Kmat[i6], Kmat[i7]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
            for j in range(m):                                           # (Kmat v)_i
                vj = v[j]
                s0 += r0[j] * vj
                s1 += r1[j] * vj
                s2 += r2[j] * vj
                s3 += r3[j] * vj
                s4 += r4[j] * vj
                s5 += r5[j] * vj
                s6 += r6[j] * vj
                s7 += r7[j] * vj
            w0 = _update_row(a, u, i, hi, s0, omega, tau)
            w1 = _update_row(a, u, i + 1, hi, s1, omega, tau)
            w2 = _update_row(a, u, i + 2, hi, s2, omega, tau)
            w3 = _update_row(a, u, i + 3, hi, s3, omega, tau)
            w4 = _update_row(a, u, i + 4, hi, s4, omega, tau)
            w5 = _update_row(a, u, i + 5, hi, s5, omega, tau)
            w6 = _update_row(a, u, i + 6, hi, s6, omega, tau)
            w7 = _update_row(a, u, i + 7, hi, s7, omega, tau)
            for j in range(m):                                           # (Kmat^T u) partial
                acc[j] += ((r0[j] * w0 + r1[j] * w1) + (r2[j] * w2 + r3[j] * w3)) + (
                    (r4[j] * w4 + r5[j] * w5) + (r6[j] * w6 + r7[j] * w7))


@nb.njit(parallel=True, cache=True)
def _fill_kernel(
    C: np.ndarray, alpha: np.ndarray, betaT: np.ndarray, eps: float, flush: float,
    out: np.ndarray, low: bool,
) -> None:  # pragma: no cover - compiled
    """``out[k, i, j] = exp((alpha[i, k] + betaT[k, j] - C[i, j]) / eps)``, 0 below ``flush``,
    for a strip: C (r, m); alpha (r, K); betaT (K, m); out (K, r, m) in the storage dtype.

    The fused kernels' vectorised exp (:mod:`bigsink.fused`), row by row: ``low`` takes its
    float32-accurate variant (5e-9 relative, below a float32 kernel's own rounding)."""
    r, m = C.shape
    inv = 1.0 / eps
    for c0 in nb.prange(-(-r // MIN_CHUNK_ROWS)):
        e = np.empty(m)                                                 # per chunk of rows
        for i in range(c0 * MIN_CHUNK_ROWS, min(r, (c0 + 1) * MIN_CHUNK_ROWS)):
            c = C[i]
            for k in range(out.shape[0]):
                ak, bk, o = alpha[i, k], betaT[k], out[k, i]
                fused._exp_to(bk, c, inv, -ak * inv, e, low)  # exp((beta_j - C_ij + alpha_i)/eps)
                for j in range(m):
                    o[j] = e[j] if e[j] >= flush else 0.0


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


@contextmanager
def _numba_threads(threads: int | None) -> Iterator[None]:
    """Run the enclosed numba passes on at most ``threads`` threads (None: all)."""
    if threads is None:
        yield
        return
    prev = nb.get_num_threads()
    nb.set_num_threads(max(1, min(threads, nb.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        nb.set_num_threads(prev)


class KernelRows:
    """The absorbed kernels of one group of C's rows ``[lo, hi)``, kept where those rows
    are: in this process (one group: all rows) or on a Dask worker (one group per worker,
    an actor; :meth:`~bigsink.executors.base.Session.hold`). Plain NumPy and numba: it
    does not know where it runs.

    ``source`` gives the rows: a cost source (read per piece) or the arrays of ``pieces``
    themselves (a worker's resident strips). :meth:`build` fills the kernels from them,
    :meth:`sweep` is one iteration's pass over them, :meth:`evaluate` the plan's sums. A
    cost read from a Zarr store keeps its kernels in a scratch file (:func:`scratch_array`).
    """

    def __init__(self, source: CostSource | Sequence[np.ndarray],
                 pieces: Sequence[tuple[int, int]], threads: int | None = None) -> None:
        self.source = source
        self.pieces = [(int(s0), int(s1)) for s0, s1 in pieces]
        self.lo, self.hi = self.pieces[0][0], self.pieces[-1][1]
        self.threads = threads
        self.scratch = isinstance(source, CostSource) and reads_store(source)
        self.K: np.ndarray | None = None                # (J, hi - lo, m)
        self._cols: np.ndarray | None = None

    def _rows(self, k: int) -> Any:
        """C's rows of piece ``k``."""
        if isinstance(self.source, CostSource):
            return self.source.rows(*self.pieces[k])
        return self.source[k]

    def build(self, alpha: np.ndarray, betaT: np.ndarray, eps: float,
              dtype: np.dtype[Any]) -> str | None:
        """Fill ``K_kij = exp((alpha_ik + betaT_kj - C_ij) / eps)`` in ``dtype`` for this
        group: alpha (hi - lo, J), betaT (J, m). Returns None, or why no kernel could be
        made (its scratch file: the disk filled up, or no TMPDIR)."""
        dtype = np.dtype(dtype)
        shape = (betaT.shape[0], self.hi - self.lo, betaT.shape[1])
        if self.K is None or self.K.shape != shape or self.K.dtype != dtype:
            self.K = None                                  # free before allocating
            try:
                self.K = (scratch_array(shape, dtype) if self.scratch
                          else np.empty(shape, dtype=dtype))
            except OSError as exc:
                return f"no room for the kernel's scratch file ({exc})"
        with _numba_threads(self.threads):
            for k, (s0, s1) in enumerate(self.pieces):
                i0, i1 = s0 - self.lo, s1 - self.lo
                _fill_kernel(self._rows(k), alpha[i0:i1], betaT, eps, FLUSH[dtype],
                             self.K[:, i0:i1, :], dtype == np.float32)
                for kernel in self.K:
                    release_pages(kernel[i0:i1])                         # written: let go
        return None

    def sweep(self, v: np.ndarray, a: np.ndarray, u_prev: np.ndarray,
              omega: float, tau: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """One pass: ``u = u_prev**(1 - omega) * (a / (K v)**tau)**omega`` (r, K) for this
        group's rows and its share ``t = K^T u`` (m, K) of the column sums: v (m, K),
        a (r, K) (the weights; their unbalanced form when ``tau != 1``:
        :meth:`ScalingStep._weights`), u_prev (r, K)."""
        assert self.K is not None
        Kmat = self.K
        if Kmat.shape[0] == 1 and v.shape[1] > 1:                        # shared kernel: BLAS-3
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                s = Kmat[0] @ v                                          # (r, K)
                u = np.where(a > 0, a / s if tau == 1.0 else a * s ** -tau, 0.0)
                if omega != 1.0:
                    u = np.where(u > 0, u_prev * (u / u_prev) ** omega, 0.0)
            return u, Kmat[0].T @ u                                      # (r, K), (m, K)
        K, r, m = v.shape[1], *Kmat.shape[1:]
        uT = np.ascontiguousarray(u_prev.T)                              # (K, r)
        t = np.empty((K, m))
        rows = chunk_rows(r, m * Kmat.itemsize if self.scratch else None)
        windows = self._windows(-(-r // rows))
        width = max(c1 - c0 for c0, c1 in windows)
        if self._cols is None or self._cols.shape != (width, m):
            self._cols = np.empty((width, m))                            # kept: no page faults
        cols = self._cols
        aT, vT = np.ascontiguousarray(a.T), np.ascontiguousarray(v.T)    # (K, r), (K, m)
        with _numba_threads(self.threads):
            for k in range(K):                                           # one kernel each
                for w, (c0, c1) in enumerate(windows):
                    r0, r1 = c0 * rows, min(r, c1 * rows)                # whole chunks
                    part = cols[:c1 - c0]                                # (chunks, m)
                    _scaling_pass(Kmat[k, r0:r1], vT[k], aT[k, r0:r1], uT[k, r0:r1],
                                  omega, tau, part, rows)
                    release_pages(Kmat[k, r0:r1])
                    if w:
                        part[0] += t[k]                                  # the sum so far, then
                    t[k] = part.sum(axis=0)      # the chunks in order (NumPy adds axis 0 so)
        return uT.T, t.T

    def _windows(self, chunks: int) -> list[tuple[int, int]]:
        """The ranges of a pass's chunks that it runs at once: all of them for a kernel in
        memory; for a scratch file WINDOW_CHUNKS_PER_THREAD per thread, whose pages are
        released after each window. The column sums add the chunks' accumulators in
        chunk order, so windows never change the result."""
        if not self.scratch:
            return [(0, chunks)]
        step = WINDOW_CHUNKS_PER_THREAD * (self.threads or nb.get_num_threads())
        return [(c, min(chunks, c + step)) for c in range(0, chunks, step)]

    def close(self) -> None:
        """Drop the kernels and the rows of C (the object may outlive its use)."""
        self.K = self._cols = None
        self.source = []

    def evaluate(self, u: np.ndarray, v: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This group's share of the plan ``P_ij = u_i K_ij v_j``: its row sums (r, K), its
        share of the column sums (m, K) and of ``<P, C>`` (K,); u (r, K), v (m, K). No
        ``exp``: products, and one read of C for ``<P, C>``."""
        assert self.K is not None
        rows, cols, pc = np.empty_like(u), np.zeros_like(v), np.zeros(u.shape[1])
        shared = self.K.shape[0] == 1
        for k, Km in enumerate(self.K):
            ks = slice(None) if shared else slice(k, k + 1)              # problems of Km
            for p, (s0, s1) in enumerate(self.pieces):                   # piece by piece
                i0, i1 = s0 - self.lo, s1 - self.lo
                Kp, up, vk = Km[i0:i1], u[i0:i1, ks], v[:, ks]   # (r_p, m), (r_p, J), (m, J)
                rows[i0:i1, ks] = up * (Kp @ vk)
                cols[:, ks] += Kp.T @ up                                 # (Kmat^T u), row order
                pc[ks] += np.einsum("ik,ik->k", up, (Kp * self._rows(p)) @ vk)  # sum P_ij C_ij
                release_pages(Kp)
        return rows, cols * v, pc


def kernel_space(session: Session) -> tuple[int, str]:
    """Bytes the scaling path's kernels may take in ``session`` and where they would be
    (for messages): :func:`kernel_room` in this process; on a cluster the session's
    ``hold_room()`` (the workers' memory next to resident strips, their scratch room when
    they stream a store)."""
    if isinstance(session, LocalSession):
        return kernel_room(session.cost)
    room = getattr(session, "hold_room", None)
    return room() if room is not None else (0, "this executor's memory (it holds nothing)")


@dataclass
class ScalingStep:
    """One eps stage of scaling-domain iterations; called like the log-domain step.

    ``step(f, g, omega) -> (f_new, g_new)`` is the same map as
    :func:`bigsink.solver.sinkhorn_step`, or None when the scaling domain cannot continue
    (the caller then uses the log domain for the rest of the stage).

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
    (None: :func:`kernel_space`; float32 kernels always: their fused pass accumulates in
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
        try:
            if self.held is None or self._layout != layout:
                self.close()                                          # free before allocating
                budget = kernel_space(self.session)[0] if self.budget is None else self.budget
                if layout[0] * n * m * self.dtype.itemsize > budget:
                    return
                self.held, self._layout = self.session.hold(KernelRows), layout
            betaT = np.ascontiguousarray(beta.T)                      # (J, m)
            why = self.session.call(self.held, "build", [
                (alpha[h.lo:h.hi], betaT, self.eps, self.dtype) for h in self.held])
        except HeldLost as exc:
            self._lost(exc)
            return
        if any(why):                               # the scratch disk filled up meanwhile
            warnings.warn(f"{next(w for w in why if w)}: going on in the log domain",
                          RuntimeWarning, stacklevel=3)
            self.close()
            return
        self.alpha, self.beta = alpha, beta
        self.absorptions += 1

    def widen(self, f: np.ndarray, g: np.ndarray) -> bool:
        """Store the kernel in the cost's own dtype from now on, rebuilt at ``(f, g)``: for a
        mixed-precision kernel whose fixed point missed ``tol`` in the exact evaluation.
        False (nothing done) when the kernel already has the cost's dtype."""
        cost_dtype = np.dtype(self.session.cost.dtype)
        if self.dtype == cost_dtype:
            return False
        self.dtype = cost_dtype
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
        outs = self.session.call(held, "sweep", [
            (v, w[h.lo:h.hi], u_prev[h.lo:h.hi], omega, tau) for h in held])
        u = outs[0][0] if len(outs) == 1 else np.concatenate([o[0] for o in outs])
        t = outs[0][1]
        for o in outs[1:]:
            t = t + o[1]                                                 # (m, K), fixed order
        return u, t

    def evaluate(
        self, f: np.ndarray, g: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Row sums (n, K), column sums (m, K) and ``<P, C>`` (K,) of the plan of ``(f, g)``
        from a float64 kernel, ``P_ij = u_i Kmat_ij v_j`` (:meth:`KernelRows.evaluate`).
        None for float32 kernels (the log-domain evaluation then keeps the sums in float64),
        without a kernel, or when it is lost."""
        if self.held is None or self.dtype != np.float64:
            return None
        held = self.held
        u, v = self._scalings(f, self.alpha, self.a), self._scalings(g, self.beta, self.b)
        try:
            outs = self.session.call(held, "evaluate", [(u[h.lo:h.hi], v) for h in held])
        except HeldLost as exc:
            self._lost(exc)
            return None
        rows = np.concatenate([o[0] for o in outs])
        cols, pc = outs[0][1], outs[0][2]
        for o in outs[1:]:
            cols, pc = cols + o[1], pc + o[2]                            # row order
        return rows, cols, pc

    def __call__(
        self, f: np.ndarray, g: np.ndarray, omega: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(f_new, g_new)`` from ``(f, g)``, over-relaxed by ``omega`` (None on breakdown,
        or when the kernel is lost with a worker); absorbs when scalings grow."""
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
