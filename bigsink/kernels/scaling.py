"""The scaling path's kernel side: resident-kernel passes with absorption (Schmitzer 2019).

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
evaluation decides convergence, and the scaling step's ``refine``
(:class:`bigsink.solver.steps.ScalingStep`) rebuilds in float64 if it ever misses ``tol``.

Where the kernel lives (:func:`bigsink.executors.local.kernel_room`): in memory, within 40%
of it, for a cost held or computed in this process; in a **scratch file** for a cost read
from a Zarr store, which is never held whole in one process. The file is created in
``tempfile.gettempdir()`` (set ``TMPDIR`` to choose the disk; a tmpfs there, which holds its
files in memory, is held to the memory budget), unlinked at once (nothing is left behind,
even by a killed process), its blocks reserved up front (a full disk is an error before the
build, not a crash while writing), and mapped: a pass reads it through the OS's file cache
with no copy, so it streams like the store itself, at the speed of memory while the file
stays cached and of the disk when it does not. The iteration then reads the kernel instead
of C: one read per iteration, no ``exp``, the same bytes as C for a float32 store, half for
a float64 one in mixed precision. A pass drops each window of the file's pages from its
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
the session's ``hold_room()`` (in process; on the workers next to resident strips, or in their
scratch room for a streamed store). Everything else runs in the log domain.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numba as nb
import numpy as np

from ..costs import CostSource, read_strip, reads_store
from ..scratch import release_pages, scratch_array
from . import cpu
from .blocks import Records, active_columns, columns, merge_records, segments
from .cloud import as_matrix

__all__ = [
    "ABSORB_BOUND", "FLUSH", "MIXED_TOL", "BlockKernel", "HeldRows", "KernelRows", "chunk_rows",
    "kernel_dtype",
]

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
    products would sum in float32). The scaling step's ``refine`` returns to float64 if
    the exact evaluation ever misses ``tol``.
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


@nb.njit(inline="always", fastmath=True, cache=True)
def _update_row(
    a: np.ndarray, u: np.ndarray, i: int, hi: int, s: float, omega: float, tau: float
) -> float:  # pragma: no cover - compiled
    """``u_i <- u_i**(1 - omega) * (a_i / s**tau)**omega`` with ``s = (Kmat v)_i``; returns
    the new ``u_i`` (0 for a 0-weight row, and for ``i >= hi``: a padding row, left alone).

    ``a``: the row weights (their unbalanced form when ``tau != 1``:
    ``ScalingStep._weights``)."""
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


@nb.njit(fastmath=True, cache=True, error_model="numpy")   # x / 0 -> inf, as in prange
def _sweep_rows(
    Kmat: np.ndarray, v: np.ndarray, a: np.ndarray, u: np.ndarray, omega: float, tau: float,
    acc: np.ndarray, lo: int, hi: int,
) -> None:  # pragma: no cover - compiled
    """Rows ``[lo, hi)`` of the pass of :func:`_scaling_pass`: their ``u`` updated, and
    ``acc = sum_i u_i Kmat_i`` (m,) over them.

    Rows go ROWS_PER_STEP = 8 at a time: the reads of ``v`` and the read-modify-write of the
    accumulator (L2 traffic, 24 bytes per step and column) are shared by 8 rows, which
    keeps the pass bound by the read of ``Kmat`` itself. The last step repeats the last
    row with weight 0.
    """
    m = Kmat.shape[1]
    acc[:] = 0.0
    for i in range(lo, hi, ROWS_PER_STEP):
        last = min(i + ROWS_PER_STEP, hi) - 1
        i1, i2, i3 = min(i + 1, last), min(i + 2, last), min(i + 3, last)
        i4, i5, i6, i7 = min(i + 4, last), min(i + 5, last), min(i + 6, last), last
        r0, r1, r2, r3 = Kmat[i], Kmat[i1], Kmat[i2], Kmat[i3]                    # (m,) each
        r4, r5, r6, r7 = Kmat[i4], Kmat[i5], Kmat[i6], Kmat[i7]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for j in range(m):                                               # (Kmat v)_i
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
        for j in range(m):                                               # (Kmat^T u) partial
            acc[j] += ((r0[j] * w0 + r1[j] * w1) + (r2[j] * w2 + r3[j] * w3)) + (
                (r4[j] * w4 + r5[j] * w5) + (r6[j] * w6 + r7[j] * w7))


@nb.njit(parallel=True, fastmath=True, cache=True)
def _scaling_pass(
    Kmat: np.ndarray, v: np.ndarray, a: np.ndarray, u: np.ndarray, omega: float, tau: float,
    cols: np.ndarray, rows: int,
) -> None:  # pragma: no cover - compiled
    """``u = u**(1 - omega) * (a / (Kmat v)**tau)**omega`` and ``cols[c] = sum_{i in chunk c}
    u_i Kmat_i`` in one read of ``Kmat``, for one problem: Kmat (n, m) float32 or float64;
    v (m,); a (n,) (unbalanced form when ``tau != 1``: ``ScalingStep._weights``);
    u (n,) holds the previous scalings on entry; cols (ceil(n / rows), m); all sums in
    float64.

    Rows are split into fixed chunks of ``rows`` (:func:`chunk_rows`) run in parallel
    (:func:`_sweep_rows` each); each chunk owns its column accumulator, so the sum over
    chunks (done by the caller) has a fixed order.
    """
    n = Kmat.shape[0]
    for c in nb.prange(cols.shape[0]):
        _sweep_rows(Kmat, v, a, u, omega, tau, cols[c], c * rows, min(n, (c + 1) * rows))


@nb.njit(parallel=True, fastmath=True, cache=True)
def _block_pass(
    flat: np.ndarray, at: np.ndarray, rows: np.ndarray, r0: np.ndarray, col_at: np.ndarray,
    cols: np.ndarray, v: np.ndarray, a: np.ndarray, u: np.ndarray, omega: float, tau: float,
    part: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """:func:`_scaling_pass` over the segments of a block-sparse kernel at once, in
    parallel over segments: segment ``s`` is the kernel ``flat[at[s]:]`` (rows[s], c) of
    rows ``r0[s] ..`` and the columns ``cols[col_at[s]:col_at[s + 1]]`` (c of them); its
    column partials go to ``part[col_at[s]:col_at[s + 1]]`` (one slot per segment: the
    caller adds them in a fixed order)."""
    for s in nb.prange(rows.shape[0]):
        c0, c1 = col_at[s], col_at[s + 1]
        r, c = rows[s], c1 - c0
        K = flat[at[s]:at[s] + r * c].reshape((r, c))
        vc = v[cols[c0:c1]]                                              # (c,) gathered
        _sweep_rows(K, vc, a[r0[s]:r0[s] + r], u[r0[s]:r0[s] + r], omega, tau,
                    part[c0:c1], 0, r)


@nb.njit(parallel=True, cache=True)
def _fill_kernel(
    C: np.ndarray, alpha: np.ndarray, betaT: np.ndarray, eps: float, flush: float,
    out: np.ndarray, low: bool,
) -> None:  # pragma: no cover - compiled
    """``out[k, i, j] = exp((alpha[i, k] + betaT[k, j] - C[i, j]) / eps)``, 0 below ``flush``,
    for a strip: C (r, m); alpha (r, K); betaT (K, m); out (K, r, m) in the storage dtype.

    The fused kernels' vectorised exp (:mod:`bigsink.kernels.cpu`), row by row: ``low`` takes its
    float32-accurate variant (5e-9 relative, below a float32 kernel's own rounding)."""
    r, m = C.shape
    inv = 1.0 / eps
    for c0 in nb.prange(-(-r // MIN_CHUNK_ROWS)):
        e = np.empty(m)                                                 # per chunk of rows
        for i in range(c0 * MIN_CHUNK_ROWS, min(r, (c0 + 1) * MIN_CHUNK_ROWS)):
            c = C[i]
            for k in range(out.shape[0]):
                ak, bk, o = alpha[i, k], betaT[k], out[k, i]
                cpu._exp_to(bk, c, inv, -ak * inv, e, low)  # exp((beta_j - C_ij + alpha_i)/eps)
                for j in range(m):
                    o[j] = e[j] if e[j] >= flush else 0.0


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


class HeldRows:
    """Rows ``[lo, hi)`` of C that a held kernel is made from: ``source`` is a cost source
    (read per piece) or the arrays of ``pieces`` themselves (a worker's resident strips);
    a cost read from a Zarr store puts its kernels in a scratch file (``scratch``)."""

    def __init__(self, source: CostSource | Sequence[np.ndarray],
                 pieces: Sequence[tuple[int, int]], threads: int | None = None) -> None:
        self.source = source
        self.pieces = [(int(s0), int(s1)) for s0, s1 in pieces]
        self.lo, self.hi = self.pieces[0][0], self.pieces[-1][1]
        self.threads = threads
        self.scratch = isinstance(source, CostSource) and reads_store(source)


class KernelRows(HeldRows):
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
        super().__init__(source, pieces, threads)
        self.K: np.ndarray | None = None                # (J, hi - lo, m)
        self._cols: np.ndarray | None = None

    def _rows(self, k: int) -> Any:
        """C's rows of piece ``k``."""
        if isinstance(self.source, CostSource):
            return as_matrix(read_strip(self.source, *self.pieces[k]))
        return as_matrix(self.source[k])

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
        ``ScalingStep._weights``), u_prev (r, K)."""
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


class BlockKernel(HeldRows):
    """The scaling path's kernel over a set of blocks only (block-sparse; certified block
    truncation, :class:`bigsink.solver.steps.SparseScalingStep`), for one problem: rows
    ``[lo, hi)`` of C, kept like :class:`KernelRows` (in this process, or one per Dask
    worker; in a scratch file for a cost read from a store).

    For each segment of those rows within one block row ``I`` it keeps the block row's
    kept columns (the column blocks ``blocks[I]``, gathered) and their kernel
    ``exp((alpha_i + beta_j - C_ij) / eps)`` (r, c), so it takes ``sum_kept |I||J|``
    entries, not ``n m``. :meth:`sweep` is :class:`KernelRows`'s fused pass on each segment
    (the same numba pass, one read of the kernel) with the column shares scattered back, and
    it also returns each kept block's plan mass under the pass's new row scalings and the
    old column ones (``M_IJ = sum_{j in J} t_Ij v_j``: the records of
    :class:`~bigsink.solver.steps.BlockBounds`).
    """

    def __init__(self, source: CostSource | Sequence[np.ndarray],
                 pieces: Sequence[tuple[int, int]], threads: int | None = None) -> None:
        super().__init__(source, pieces, threads)
        # the segments' kernels (r, c) one after the other in `flat`, and per segment s:
        # its block row I[s], first entry at[s], rows[s] rows from row r0[s] (from lo), its
        # kept columns cols[col_at[s]:col_at[s + 1]], and where each kept block starts
        # among all kept columns (starts[block_at[s]:block_at[s + 1]])
        self.flat = np.empty(0)
        self.I = self.at = self.rows = self.r0 = np.zeros(0, dtype=np.int64)
        self.cols = self.starts = np.zeros(0, dtype=np.int64)
        self.col_at = self.block_at = np.zeros(1, dtype=np.int64)
        self.blocks: np.ndarray | None = None                           # (nI, nJ) kept

    @property
    def entries(self) -> int:
        """Kernel entries kept (``sum_kept |I||J|`` over this group's rows)."""
        return int((self.rows * np.diff(self.col_at)).sum())

    def _strip(self, k: int, s0: int, s1: int, blocks: np.ndarray | None) -> Any:
        """C's rows ``[s0, s1)``: read from a cost source (from a store: only the chunks of
        ``blocks``), or resident strip ``k``."""
        if isinstance(self.source, CostSource):
            return read_strip(self.source, s0, s1, blocks)
        return self.source[k]

    def build(self, alpha: np.ndarray, betaT: np.ndarray, eps: float, dtype: np.dtype[Any],
              blocks: np.ndarray, block_shape: tuple[int, int]) -> str | None:
        """Fill the kernels of the ``blocks`` ((nI, nJ) bool) in this group's rows:
        alpha (hi - lo, 1), betaT (1, m). Returns None, or why no kernel could be made."""
        dtype = np.dtype(dtype)
        (rb, cb), m = block_shape, betaT.shape[1]
        self.blocks = blocks.copy()
        # the units read: a cost source's rows by whole block rows (few, long segments: the
        # pass's cost per segment is fixed), a worker's resident strips as they are
        units = self.pieces
        if isinstance(self.source, CostSource):
            units = [(max(self.lo, I * rb), min(self.hi, (I + 1) * rb))
                     for I in range(self.lo // rb, (self.hi - 1) // rb + 1)]
        plan = []                                      # (k, I, a, b, cols) per segment
        for k, (s0, s1) in enumerate(units):
            for I, a, b in segments(s0, s1 - s0, rb):
                plan.append((k, I, a, b, active_columns(blocks[I], cb, m)))
        self.I = np.array([p[1] for p in plan], dtype=np.int64)
        self.rows = np.array([p[3] - p[2] for p in plan], dtype=np.int64)
        self.r0 = np.array([units[p[0]][0] - self.lo + p[2] for p in plan], dtype=np.int64)
        widths = np.array([len(p[4]) for p in plan], dtype=np.int64)
        self.col_at = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        self.at = np.concatenate([[0], np.cumsum(self.rows * widths)[:-1]]).astype(np.int64)
        self.cols = (np.concatenate([p[4] for p in plan]) if plan
                     else np.zeros(0)).astype(np.int64)
        firsts = []                                     # each kept block's first column
        for (_, I, _, _, _), c0 in zip(plan, self.col_at, strict=False):
            sizes = np.diff(np.append(np.flatnonzero(blocks[I]) * cb, m))
            firsts.append(c0 + np.concatenate([[0], np.cumsum(np.minimum(sizes, cb))[:-1]]))
        self.starts = (np.concatenate(firsts) if firsts else np.zeros(0)).astype(np.int64)
        self.block_at = np.concatenate([[0], np.cumsum([len(x) for x in firsts])]
                                       ).astype(np.int64)
        total = self.entries
        try:
            self.flat = (scratch_array((max(1, total),), dtype) if self.scratch
                         else np.empty(max(1, total), dtype=dtype))
        except OSError as exc:
            return f"no room for the kernel's scratch file ({exc})"
        strip, current = None, -1               # (strip: the unit read last, index current)
        with _numba_threads(self.threads):
            for s, (k, _, a, b, cols) in enumerate(plan):
                s0, s1 = units[k]
                if k != current:
                    need = np.asarray(blocks[s0 // rb:(s1 - 1) // rb + 1].any(axis=0))
                    strip, current = self._strip(k, s0, s1, need), k
                assert strip is not None
                r0 = int(self.r0[s])                                   # offset in alpha
                C = np.ascontiguousarray(as_matrix(columns(strip[a:b], cols)))  # (r, c)
                K = self.flat[self.at[s]:self.at[s] + C.size].reshape(1, *C.shape)
                _fill_kernel(C, alpha[r0:r0 + C.shape[0]], np.ascontiguousarray(betaT[:, cols]),
                             eps, FLUSH[dtype], K, dtype == np.float32)
        return None

    def sweep(self, v: np.ndarray, a: np.ndarray, u_prev: np.ndarray, omega: float,
              tau: float = 1.0) -> tuple[np.ndarray, np.ndarray, Records]:
        """One pass over the kept blocks: ``u`` (r, 1) as :meth:`KernelRows.sweep`, this
        group's share ``t`` (m, 1) of the column sums, and the kept blocks' masses as
        records (``(I, log M (nJ_kept, 1))``, merged by block row): all segments in one
        parallel pass (:func:`_block_pass`), their column partials added in segment order."""
        assert self.blocks is not None
        m = v.shape[0]
        u = np.ascontiguousarray(u_prev[:, 0]).copy()                    # (r,)
        aw, vv = np.ascontiguousarray(a[:, 0]), np.ascontiguousarray(v[:, 0])
        part = np.empty(len(self.cols))                          # per segment's columns
        with _numba_threads(self.threads):
            _block_pass(self.flat, self.at, self.rows, self.r0, self.col_at, self.cols, vv,
                        aw, u, omega, tau, part)
        t = np.bincount(self.cols, weights=part, minlength=m)            # (m,) in order
        records: Records = ()
        if len(self.starts):
            with np.errstate(divide="ignore"):                           # each block's mass
                log_m = np.log(np.add.reduceat(part * vv[self.cols], self.starts))
            records = merge_records(tuple(
                (int(I), log_m[b0:b1, None]) for I, b0, b1 in
                zip(self.I, self.block_at[:-1], self.block_at[1:], strict=True)), ())
        return u[:, None], t[:, None], records

    def close(self) -> None:
        """Drop the kernels and the rows of C."""
        self.flat, self.blocks = np.empty(0), None
        self.source = []
