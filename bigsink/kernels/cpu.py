"""Fused numba CPU strip kernels: one read of C and one ``exp`` per element per iteration.

Twins of :func:`bigsink.kernels.reference.sinkhorn_strip` and
:func:`~bigsink.kernels.reference.evaluate_strip` (same signatures, same maths, same
results to ~1e-12 relative for float64 costs, to float32 precision, ~1e-8, for float32
costs) for NumPy ``float32``/``float64`` cost strips (:func:`fits`). The dispatcher
:mod:`bigsink.kernels` sends such strips here, CuPy strips to :mod:`bigsink.kernels.cuda`
and anything else to the reference kernels.

Design:

* **One stream over C.** The strip (r, m) is read row by row, once; each row (m values) stays
  in L1/L2 while it is used, so memory traffic is one pass over C per iteration. Potentials
  and all accumulators are float64 whatever the dtype of C (a float32 row is widened on load).
* **One exp per element.** ``E_ij = exp((g_j - C_ij)/eps - s_i)`` gives the f-update of row
  ``i`` and, weighted by ``w_i = exp(f_i/eps + s_i - W)``, the column partial pairs
  (DESIGN.md §3). ``W`` (the running max of ``f_i/eps + s_i`` over the strip) is kept online:
  when a group of rows raises it, the column accumulator is rescaled by ``exp(W_old - W_new)``
  (an (m,) multiply, O(log r) times per strip for random row order).
* **No max pass.** The shift ``s_i`` need not be the row max, only keep the sum of
  ``E_ij`` away from overflow and underflow: it is the row's log-sum-exp at the previous
  ``f`` (exact at a fixed point), kept when the sum lands in ``exp(+-50)``. A poor guess
  (the first iteration, a new eps stage) costs that row a max pass and a second exp pass.
* **Chunks and groups.** A row is exponentiated and summed in chunks of :data:`_CHUNK`
  elements that stay in L1. The ``E`` rows of :data:`_GROUP` rows are kept (L2), and the
  column sums take the group in one read-modify-write of the accumulator.
* **A vectorisable exp** (:func:`exp`; ``_exp_row`` inside the kernels): numba has no SVML
  here, so ``math.exp`` is a scalar call (~0.6 G/s/thread). This one is one branch-free loop
  (bit casts are LLVM intrinsics, :func:`_bits`): ``x = k ln2 + r`` with ``k = round(x/ln2)``
  found by the 1.5*2^52 shifter trick, the remainder ``r`` by a two-part (Cody-Waite) ``ln2``
  so the reduction is exact to ~1e-19, ``exp(r)`` by its degree-13 Taylor polynomial in
  Horner form (truncation ``|r|^14/14! < 2e-18`` for ``|r| <= ln2/2``), and ``2^k`` added to
  its exponent field. Maximum relative error against ``np.exp``: 2.2e-16 (1 ulp) on
  [-708.05, 709.43]; arguments below -708.05 (and ``-inf``) return 0 (flush, no subnormals),
  above 709.43 +inf. LLVM vectorises the loop (AVX-512 on the CI machine). For float32 costs
  the kernels use the same exp with a degree-7 polynomial (relative error < 5e-9, below
  float32's 6e-8): fewer operations, results to float32 precision.
* **Threads.** Kernels are compiled ``nogil=True`` and run serially inside a strip: the
  executor's threads (or Dask workers) run strips in parallel, and strip partials are merged
  in the executor's fixed tree, so results never depend on thread timing or count and there
  is no nested parallelism (numba's default workqueue layer is not safe to enter from several
  threads at once).
* **Specialisations.** Each kernel compiles for exactly two signatures (float32 or float64 C,
  float64 everything else), cached on disk (``cache=True``).

Accuracy by cost dtype (the tolerance a solve can reach):

* ``float64`` C: potentials to ~1e-13 relative; any ``tol`` down to ~1e-12 is reachable.
* ``float32`` C: the cost itself carries a relative rounding of ``2^-24 ~ 6e-8``, and the
  kernels' float32 exp is accurate to ~5e-9: marginal errors (float64 sums) reach ~1e-8,
  and ``<P, C>`` and the potentials differ
  from the float64-cost answer by about ``6e-8 * max|C| / eps`` relative at worst; a ``tol``
  below :data:`FLOAT32_TOL` asks for more precision than the data carries, and
  :func:`bigsink.kernels.check_tolerance` warns (:class:`~bigsink.errors.PrecisionWarning`).
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from . import reference
from .reference import Pair

__all__ = [
    "apply_pass", "apply_strip", "evaluate_pass", "evaluate_strip", "exp", "fits",
    "merge_pairs", "sinkhorn_pass",
    "sinkhorn_strip",
]

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693147180369123816490          # ln2 with its low 32 mantissa bits zero
_LN2_LO = 1.90821492927058770002e-10       # ln2 - _LN2_HI
_SHIFTER = 6755399441055744.0              # 1.5 * 2**52: x + SHIFTER rounds x to an integer
_SHIFTER_BITS = 0x4338000000000000         # the bits of _SHIFTER: bits(x + SHIFTER) - this = k
_K_MIN = -1021                             # 2^k exp(r) is a normal double for k >= this
_K_MAX = 1023                              # and finite for k <= this
#: Elements per chunk of a row: the fused kernels' per-row temporaries stay in L1.
_CHUNK = 512
#: Rows whose E rows are kept for one pass of column sums.
_GROUP = 4
#: A shift guess is kept when the row's sum of exponentials lands in exp(+-_WINDOW).
_WINDOW = 50.0
_S_LOW = math.exp(-_WINDOW)
_S_HIGH = math.exp(_WINDOW)

# 1/k! for k = 13..0 (Horner order).
_C13 = 1.0 / 6227020800.0
_C12 = 1.0 / 479001600.0
_C11 = 1.0 / 39916800.0
_C10 = 1.0 / 3628800.0
_C9 = 1.0 / 362880.0
_C8 = 1.0 / 40320.0
_C7 = 1.0 / 5040.0
_C6 = 1.0 / 720.0
_C5 = 1.0 / 120.0
_C4 = 1.0 / 24.0
_C3 = 1.0 / 6.0
_C2 = 0.5

#: exp: FMA contraction only (reassociation would break the Cody-Waite reduction).
_JIT: dict[str, Any] = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")
#: Row loops: reassociation lets LLVM vectorise the sums and maxima (deterministic for a
#: given build and machine; never dependent on threads). No ``ninf``: -inf potentials are data.
_JIT_SUM: dict[str, Any] = dict(
    nogil=True, cache=True, fastmath={"contract", "reassoc", "nsz", "nnan"}, error_model="numpy"
)


@nb.njit(inline="always", **_JIT)
def _horner_tail(p: float, r: float) -> float:  # pragma: no cover - jit
    """The last seven Horner steps of exp's Taylor polynomial: ``p`` holds the sum down to
    the ``1/7!`` term; the terms ``1/6!`` to ``1/0!`` follow."""
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    return p * r + 1.0


@nb.njit(inline="always", **_JIT)
def _poly13(r: float) -> float:  # pragma: no cover - jit
    """exp(r) for |r| <= ln2/2: Taylor degree 13 (~1 ulp), Horner."""
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    return _horner_tail(p * r + _C7, r)


@nb.njit(inline="always", **_JIT)
def _poly7(r: float) -> float:  # pragma: no cover - jit
    """exp(r) for |r| <= ln2/2: Taylor degree 7 (relative error < 5e-9, for float32 costs)."""
    return _horner_tail(_C7, r)


@intrinsic
def _bits(typingctx: Any, x: Any) -> Any:  # pragma: no cover - compile time
    """The IEEE-754 bits of a float64 as an int64: a bitcast, which LLVM vectorises."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx: Any, i: Any) -> Any:  # pragma: no cover - compile time
    """The float64 whose IEEE-754 bits are the int64 ``i`` (inverse of :func:`_bits`)."""
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


def _make_exp_row(poly: Any, name: str) -> Any:
    """``exp_row(a, c, inv, shift, out)``: ``out[j] = exp((a[j] - c[j]) * inv - shift)``, one
    loop that LLVM vectorises, with the polynomial ``poly`` on the reduced argument.

    Each variant gets its own ``name`` (qualified name), so its own on-disk cache index:
    closures of one factory would share one, and processes compiling at once (Dask or Ray
    workers) race on an index's entries; one of them once handed the 7-term variant's code
    to the 13-term one (an exp good to 1e-9 where 1e-16 was due, seen in CI).

    ``a`` float64, ``c`` float32 or float64 (widened), all of ``out``'s length. ``x`` is
    clamped to [-745, 710] (which also maps ``-inf`` to 0), ``k = round(x/ln2)`` read off
    the shifter's low mantissa bits, and ``exp(r) * 2^k`` formed by adding ``k`` to the
    exponent field of ``exp(r)`` in [1/sqrt2, sqrt2]: exact while the result is a normal
    double (``k >= -1021``; below, 0) and finite (``k <= 1023``; above, +inf).
    """

    def exp_row(
        a: np.ndarray, c: np.ndarray, inv: float, shift: float, out: np.ndarray
    ) -> None:  # pragma: no cover - jit
        for j in range(out.shape[0]):
            x = (a[j] - c[j]) * inv - shift
            x = x if x > -745.0 else -745.0
            x = x if x < 710.0 else 710.0
            t = x * _LOG2E + _SHIFTER              # k = round(x/ln2) in the low mantissa bits
            k = t - _SHIFTER                       # k as a double
            r = (x - k * _LN2_HI) - k * _LN2_LO    # |r| <= ln2/2 (Cody-Waite, exact)
            ki = _bits(t) - _SHIFTER_BITS  # type: ignore[call-arg]  # k as an integer
            v = _from_bits(_bits(poly(r)) + (ki << 52))    # exp(r) * 2^k
            v = 0.0 if ki < _K_MIN else v
            out[j] = np.inf if ki > _K_MAX else v

    exp_row.__name__ = exp_row.__qualname__ = name
    return nb.njit(**_JIT)(exp_row)


#: float64 costs: ~1 ulp. float32 costs: ~5e-9, cheaper.
_exp_row = _make_exp_row(_poly13, "_exp_row")
_exp_row_f32 = _make_exp_row(_poly7, "_exp_row_f32")


@nb.njit(**_JIT)
def _exp_to(
    a: np.ndarray, c: np.ndarray, inv: float, shift: float, out: np.ndarray, low: bool
) -> None:  # pragma: no cover - jit
    """``out = exp((a - c) * inv - shift)`` with the float32-accurate exp when ``low``."""
    if low:
        _exp_row_f32(a, c, inv, shift, out)
    else:
        _exp_row(a, c, inv, shift, out)


def exp(x: np.ndarray) -> np.ndarray:
    """The fused kernels' vectorisable ``exp`` of a float64 array (for tests and ``bench``).

    Relative error ~1 ulp on [-708.05, 709.43]; 0 below, +inf above.
    """
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(x)
    _exp_row(x, np.zeros(1, x.dtype).repeat(x.size), 1.0, 0.0, out)
    return out


@nb.njit(**_JIT_SUM)
def _exp_sum(
    a: np.ndarray, c: np.ndarray, inv: float, shift: float, out: np.ndarray, low: bool
) -> float:  # pragma: no cover - jit
    """``out = exp((a - c) * inv - shift)`` (m,) in L1-sized chunks; returns ``sum(out)``.

    ``low``: the float32-accurate exp (float32 costs)."""
    m = out.shape[0]
    total = 0.0
    for lo in range(0, m, _CHUNK):
        hi = min(m, lo + _CHUNK)
        o = out[lo:hi]
        _exp_to(a[lo:hi], c[lo:hi], inv, shift, o, low)
        for j in range(o.shape[0]):
            total += o[j]
    return total


@nb.njit(**_JIT_SUM)
def _row_lse(
    g: np.ndarray, c: np.ndarray, inv: float, guess: float, e: np.ndarray, low: bool
) -> tuple[float, float]:  # pragma: no cover - jit
    """``(s, S)`` with ``e = exp((g - c)/eps - s)`` (m,) and ``S = sum(e)``, so the row's
    log-sum-exp ``LSE_j((g_j - c_j)/eps)`` is ``s + log S``.

    ``s`` is ``guess`` when that keeps ``S`` within ``exp(+-_WINDOW)`` (one exp per element,
    no max pass); otherwise (a poor or non-finite guess) the row max, as in the reference
    kernel (a second pass)."""
    if -np.inf < guess < np.inf:
        S = _exp_sum(g, c, inv, guess, e, low)
        if _S_LOW < S < _S_HIGH:
            return guess, S
    M = -np.inf
    for j in range(e.shape[0]):
        M = max(M, (g[j] - c[j]) * inv)                              # row max of Z
    s = M if M > -np.inf else 0.0
    return s, _exp_sum(g, c, inv, s, e, low)


@nb.njit(**_JIT_SUM)
def _sinkhorn_rows(
    C: np.ndarray, log_a: np.ndarray, f_prev: np.ndarray, gT: np.ndarray, eps: float,
    tau: float, omega: float, f_out: np.ndarray, col_s: np.ndarray, W: np.ndarray, low: bool,
    e: np.ndarray,
) -> None:  # pragma: no cover - jit
    """Fused f-update and column sums of a strip (see :func:`sinkhorn_strip`).

    ``C`` (r, m) float32/float64; ``log_a``, ``f_prev`` (r, K); ``gT`` (K, m) float64 contiguous;
    outputs ``f_out`` (r, K), ``col_s`` (K, m) zeroed, ``W`` (K,) set to -inf on entry;
    ``low``: use the float32-accurate exp (float32 costs); ``e`` (_GROUP, m) float64 scratch
    with finite entries (it holds the group's E rows).

    Rows go in groups of :data:`_GROUP`: their ``E`` rows are kept, and the column sums take
    the whole group in one pass over ``col_s``. The shift of row ``i`` is its log-sum-exp
    at ``f_prev`` (exact at a fixed point: ``f = eps log a - tau eps LSE``), so a converging
    solve needs no max pass.
    """
    r, m = C.shape
    K = gT.shape[0]
    inv = 1.0 / eps
    lw = np.empty(_GROUP)                                            # their log weights
    w = np.empty(_GROUP)
    for i0 in range(0, r, _GROUP):
        for k in range(K):
            g = gT[k]
            for t in range(_GROUP):
                lw[t] = -np.inf
            for t in range(min(_GROUP, r - i0)):
                i = i0 + t
                la = log_a[i, k]
                if la == -np.inf:
                    f_out[i, k] = -np.inf                            # a_i = 0
                    continue
                fp = f_prev[i, k]
                s, S = _row_lse(g, C[i], inv, (la - fp * inv) / tau, e[t], low)
                f = eps * la - tau * eps * (s + math.log(S))         # f-update, KL form
                if omega != 1.0:                                     # over-relaxed
                    f = fp + omega * (f - fp)
                f_out[i, k] = f
                lw[t] = f * inv + s                                  # log weight of row i
            top = -np.inf
            for t in range(_GROUP):
                top = max(top, lw[t])
            if top == -np.inf:
                continue
            acc = col_s[k]
            if top > W[k]:                                           # new running max W
                if W[k] > -np.inf:
                    shrink = math.exp(W[k] - top)
                    for j in range(m):
                        acc[j] *= shrink
                W[k] = top
            for t in range(_GROUP):
                w[t] = math.exp(lw[t] - W[k])                        # in [0, 1]
            for j in range(m):
                x = 0.0
                for t in range(_GROUP):
                    x += w[t] * e[t, j]
                acc[j] += x                                          # sum_i E_ij w_i


@nb.njit(**_JIT_SUM)
def _evaluate_rows(
    C: np.ndarray, f: np.ndarray, gT: np.ndarray, eps: float,
    rows: np.ndarray, cols: np.ndarray, pc: np.ndarray, low: bool,
) -> None:  # pragma: no cover - jit
    """Row sums (r, K), column sums (K, m, accumulated) and ``<P, C>`` (K,, accumulated),
    in L1-sized chunks of each row."""
    r, m = C.shape
    K = gT.shape[0]
    inv = 1.0 / eps
    buf = np.empty(_CHUNK)
    for i in range(r):
        crow = C[i]
        for k in range(K):
            fi = f[i, k]
            if fi == -np.inf:
                rows[i, k] = 0.0
                continue
            g = gT[k]
            acc = cols[k]
            s = 0.0
            p = 0.0
            for lo in range(0, m, _CHUNK):
                hi = min(m, lo + _CHUNK)
                c = crow[lo:hi]
                a = acc[lo:hi]
                e = buf[: hi - lo]
                _exp_to(g[lo:hi], c, inv, -fi * inv, e, low)            # P_ij
                for j in range(e.shape[0]):
                    s += e[j]
                    p += e[j] * c[j]
                    a[j] += e[j]
            rows[i, k] = s
            pc[k] += p


@nb.njit(**_JIT_SUM)
def _apply_rows(
    C: np.ndarray, f: np.ndarray, gT: np.ndarray, eps: float, VT: np.ndarray,
    U: np.ndarray, rows: np.ndarray, cols: np.ndarray, low: bool,
) -> None:  # pragma: no cover - jit
    """The plan as an operator, one exp per element: ``rows[i, t, k] = sum_j P_kij VT[t, j]``
    (set) and ``cols[k, t, j] += sum_i P_kij U[i, t]`` (accumulated), with
    ``P_kij = exp((f_ik + g_jk - C_ij) / eps)``; C (r, m), f (r, K), gT (K, m), VT (dv, m),
    U (r, du), rows (r, dv, K), cols (K, du, m); L1-sized chunks of each row."""
    r, m = C.shape
    K, dv, du = gT.shape[0], VT.shape[0], U.shape[1]
    inv = 1.0 / eps
    buf = np.empty(_CHUNK)
    for i in range(r):
        crow = C[i]
        for k in range(K):
            fi = f[i, k]
            for t in range(dv):
                rows[i, t, k] = 0.0
            if fi == -np.inf:                                        # a_i = 0: row of zeros
                continue
            g = gT[k]
            for lo in range(0, m, _CHUNK):
                hi = min(m, lo + _CHUNK)
                e = buf[: hi - lo]
                _exp_to(g[lo:hi], crow[lo:hi], inv, -fi * inv, e, low)  # P_ij
                for t in range(dv):
                    v = VT[t, lo:hi]
                    s = 0.0
                    for j in range(e.shape[0]):
                        s += e[j] * v[j]
                    rows[i, t, k] += s
                for t in range(du):
                    ui = U[i, t]
                    acc = cols[k, t, lo:hi]
                    for j in range(e.shape[0]):
                        acc[j] += e[j] * ui


@nb.njit(**_JIT_SUM)
def _merge_flat(
    m1: np.ndarray, s1: np.ndarray, m2: np.ndarray, s2: np.ndarray, m: np.ndarray,
    s: np.ndarray,
) -> None:  # pragma: no cover - jit
    """:func:`bigsink.kernels.reference.merge_pairs` on flat float64 arrays, in L1-sized chunks."""
    shift = np.empty(_CHUNK)
    e1 = np.empty(_CHUNK)
    e2 = np.empty(_CHUNK)
    for lo in range(0, m.shape[0], _CHUNK):
        hi = min(m.shape[0], lo + _CHUNK)
        a, b, mo, so, t1, t2 = m1[lo:hi], m2[lo:hi], m[lo:hi], s[lo:hi], s1[lo:hi], s2[lo:hi]
        sh = shift[: hi - lo]
        for j in range(sh.shape[0]):
            mx = max(a[j], b[j])
            mo[j] = mx
            sh[j] = mx if mx > -np.inf else 0.0                      # empty: (-inf, 0)
        _exp_row(a, sh, 1.0, 0.0, e1[: hi - lo])                      # exp(m1 - m)
        _exp_row(b, sh, 1.0, 0.0, e2[: hi - lo])                      # exp(m2 - m)
        for j in range(sh.shape[0]):
            so[j] = t1[j] * e1[j] + t2[j] * e2[j]


def merge_pairs(p: Pair, q: Pair) -> Pair:
    """Fused drop-in for :func:`bigsink.kernels.reference.merge_pairs` (same maths, exp to 1 ulp):
    NumPy float64 pairs of one shape in one vectorised pass with two output arrays, where
    NumPy makes five full-size temporaries (an iteration merges one pair per strip, ~200
    of them at m = 20 000 in process); others go to the generic merge."""
    (m1, s1), (m2, s2) = p, q
    arrays = (m1, s1, m2, s2)
    if not all(isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == m1.shape
               for x in arrays):
        return reference.merge_pairs(p, q)
    m, s = np.empty(m1.shape), np.empty(m1.shape)
    flat = [np.ascontiguousarray(x).reshape(-1) for x in arrays]
    _merge_flat(*flat, m.reshape(-1), s.reshape(-1))
    return m, s


def fits(C: Any, *others: Any) -> bool:
    """Whether the fused kernels apply: NumPy float32/float64 strip and NumPy arguments."""
    return (
        isinstance(C, np.ndarray)
        and C.ndim == 2
        and C.dtype in (np.float32, np.float64)
        and all(isinstance(x, np.ndarray) for x in others)
    )


def _f64(x: np.ndarray) -> np.ndarray:
    """Contiguous float64 copy-if-needed."""
    return np.ascontiguousarray(x, dtype=np.float64)


_local = threading.local()


def _scratch(size: int) -> np.ndarray:
    """A float64 buffer of ``size`` zeros-or-finite values, kept per thread across calls:
    a fresh one per strip would cost page faults on every call."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < size:
        buf = _local.buf = np.zeros(size)
    return buf[:size]


def sinkhorn_strip(
    C: np.ndarray, start: int, log_a: np.ndarray, f_prev: np.ndarray, g: np.ndarray,
    eps: float, tau: float, omega: float = 1.0,
) -> tuple[np.ndarray, Pair]:
    """The numba :func:`bigsink.kernels.reference.sinkhorn_strip` (same maths and outputs):
    one read of C and one exp per element, for a NumPy float32/float64 strip (:func:`fits`).
    """
    return sinkhorn_pass(_sinkhorn_rows, (np.ascontiguousarray(C),), C.shape, C.dtype,
                         log_a, f_prev, g, eps, tau, omega)


def sinkhorn_pass(
    rows_kernel: Any, source: tuple[Any, ...], shape: tuple[int, int], dtype: Any,
    log_a: np.ndarray, f_prev: np.ndarray, g: np.ndarray, eps: float, tau: float,
    omega: float,
) -> tuple[np.ndarray, Pair]:
    """One fused pass over a strip of ``shape`` whose C rows ``rows_kernel`` reads from
    ``source`` (a strip in memory: :func:`_sinkhorn_rows`; a point cloud's rows computed in
    registers: :func:`bigsink.kernels.cloud._cloud_sinkhorn_rows`, same trailing arguments):
    new ``f`` rows (r, K) and the column pair ((m, K), (m, K)) of
    :func:`bigsink.kernels.reference.sinkhorn_strip`."""
    r, m = shape
    K = g.shape[1]
    f_new = np.empty((r, K))
    col_s = np.zeros((K, m))
    W = np.full(K, -np.inf)
    rows_kernel(*source, _f64(log_a), _f64(f_prev), _f64(g.T), float(eps), float(tau),
                float(omega), f_new, col_s, W, np.dtype(dtype) == np.float32,
                _scratch(_GROUP * m).reshape(_GROUP, m))
    W = np.where(np.isneginf(W), 0.0, W)                             # (K,) as the generic kernel
    col_m = np.multiply(g, -1.0 / eps)                               # (m, K): -g_j/eps, and
    col_m[np.isposinf(col_m)] = 0.0                                  # 0 where b_j = 0
    col_m += W[None, :]
    return f_new, (col_m, np.ascontiguousarray(col_s.T))


def evaluate_strip(
    C: np.ndarray, start: int, f: np.ndarray, g: np.ndarray, eps: float
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The numba :func:`bigsink.kernels.reference.evaluate_strip` (one exp per element),
    for a NumPy float32/float64 strip (:func:`fits`)."""
    return evaluate_pass(_evaluate_rows, (np.ascontiguousarray(C),), C.shape, C.dtype, f, g,
                         eps)


def apply_strip(
    C: np.ndarray, start: int, f: np.ndarray, U: np.ndarray, g: np.ndarray, eps: float,
    V: np.ndarray,
) -> tuple[np.ndarray, tuple[np.ndarray]]:
    """The numba :func:`bigsink.kernels.reference.apply_strip` (one exp per element)."""
    return apply_pass(_apply_rows, (np.ascontiguousarray(C),), C.shape, C.dtype, f, U, g,
                      eps, V)


def apply_pass(
    rows_kernel: Any, source: tuple[Any, ...], shape: tuple[int, int], dtype: Any,
    f: np.ndarray, U: np.ndarray, g: np.ndarray, eps: float, V: np.ndarray,
) -> tuple[np.ndarray, tuple[np.ndarray]]:
    """``P V`` rows (r, dv, K) and the partial ``(P^T U,)`` ((m, du, K)) of a strip whose C
    rows ``rows_kernel`` reads from ``source`` (see :func:`sinkhorn_pass`)."""
    r, m = shape
    K = g.shape[1]
    rows = np.empty((r, V.shape[1], K))
    cols = np.zeros((K, U.shape[1], m))
    rows_kernel(*source, _f64(f), _f64(g.T), float(eps), _f64(V.T), _f64(U), rows, cols,
                np.dtype(dtype) == np.float32)
    return rows, (np.ascontiguousarray(cols.transpose(2, 1, 0)),)


def evaluate_pass(
    rows_kernel: Any, source: tuple[Any, ...], shape: tuple[int, int], dtype: Any,
    f: np.ndarray, g: np.ndarray, eps: float,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Row sums (r, K) and the partial ``(col_sums (m, K), <P, C> (K,))`` of a strip whose C
    rows ``rows_kernel`` reads from ``source`` (see :func:`sinkhorn_pass`)."""
    r, m = shape
    K = g.shape[1]
    rows = np.empty((r, K))
    cols = np.zeros((K, m))
    pc = np.zeros(K)
    rows_kernel(*source, _f64(f), _f64(g.T), float(eps), rows, cols, pc,
                np.dtype(dtype) == np.float32)
    return rows, (np.ascontiguousarray(cols.T), pc)
