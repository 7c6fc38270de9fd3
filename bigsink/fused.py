"""Fused numba CPU strip kernels: one read of C and one ``exp`` per element per iteration.

Drop-in replacements for :func:`bigsink.kernels.sinkhorn_strip` and
:func:`bigsink.kernels.evaluate_strip` (same signatures, same maths, same results to
~1e-12 relative for float64 costs, to float32 precision, ~1e-8, for float32 costs) for
NumPy ``float32``/``float64`` cost strips. CuPy float32/float64 strips go to the CUDA
kernels of :mod:`bigsink._cuda` (same contract, CuPy outputs); any other strip
(array-api-strict, integer costs) goes to the generic kernels unchanged, so the solver
can always use the functions of this module.

Design:

* **One stream over C.** The strip (r, m) is read row by row, once; each row (m values) stays
  in L1/L2 while it is used, so memory traffic is one pass over C per iteration. Potentials
  and all accumulators are float64 whatever the dtype of C (a float32 row is widened on load).
* **One exp per element.** ``E_ij = exp((g_j - C_ij)/eps - M_i)`` gives the f-update of row
  ``i`` and, weighted by ``w_i = exp(f_i/eps + M_i - W)``, the column partial pairs
  (DESIGN.md §3). ``W`` (the running max of ``f_i/eps + M_i`` over the strip) is kept online:
  when a row raises it, the column accumulator is rescaled by ``exp(W_old - W_new)``
  (an (m,) multiply, O(log r) times per strip for random row order).
* **A vectorisable exp** (:func:`exp`; ``_exp_into`` inside the kernels): numba has no SVML
  here, so ``math.exp`` is a scalar call (~0.6 G/s/thread). This one is branch-free:
  ``x = k ln2 + t`` with ``k = round(x/ln2)`` found by the 1.5*2^52 shifter trick, the
  remainder ``t`` by a two-part (Cody-Waite) ``ln2`` so the reduction is exact to ~1e-19,
  ``exp(t)`` by its degree-13 Taylor polynomial in Horner form (truncation
  ``|t|^14/14! < 2e-18`` for ``|t| <= ln2/2``), and ``2^k`` built in the exponent bits.
  Measured maximum relative error against ``np.exp``: 2.2e-16 (1 ulp) on [-708.39, 709.43];
  arguments below -708.39 (and ``-inf``) return 0 (flush, no subnormals), above 709.43 +inf.
  LLVM vectorises its three loops (AVX-512 on the CI machine). For float32 costs the kernels
  use the same exp with a degree-7 polynomial (relative error < 5e-9, below float32's
  6e-8): about 40% fewer operations, results to float32 precision.
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
  :func:`check_tolerance` warns (:class:`PrecisionWarning`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numba as nb
import numpy as np

from . import _cuda, kernels
from ._xp import is_cupy_array

__all__ = [
    "FLOAT32_TOL",
    "PrecisionWarning",
    "check_tolerance",
    "evaluate_strip",
    "exp",
    "fused_available",
    "sinkhorn_strip",
    "strip_kernels",
]

#: Below this L1 tolerance a float32 cost cannot tell the answer apart (float32 epsilon
#: ~1.2e-7, accumulated over the rounding of C against eps): :func:`check_tolerance` warns.
FLOAT32_TOL = 1e-7

_LOG2E = 1.4426950408889634
_LN2_HI = 0.693147180369123816490          # ln2 with its low 32 mantissa bits zero
_LN2_LO = 1.90821492927058770002e-10       # ln2 - _LN2_HI
_SHIFTER = 6755399441055744.0              # 1.5 * 2**52: x + SHIFTER rounds x to an integer
_X_MIN = -708.3964185322641                # below: exp(x) < smallest normal double -> 0
_X_MAX = 709.4361393                      # above: +inf (k would reach 1024)

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


class PrecisionWarning(UserWarning):
    """``tol`` is below what the cost's dtype can resolve (float32 costs)."""


@nb.njit(inline="always", **_JIT)
def _poly13(r: float) -> float:  # pragma: no cover - jit
    """exp(r) for |r| <= ln2/2: Taylor degree 13 (~1 ulp), Horner."""
    p = _C13
    p = p * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    return p * r + 1.0


@nb.njit(inline="always", **_JIT)
def _poly7(r: float) -> float:  # pragma: no cover - jit
    """exp(r) for |r| <= ln2/2: Taylor degree 7 (relative error < 5e-9, for float32 costs)."""
    p = _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    return p * r + 1.0


def _make_exp_into(poly: Any) -> Any:
    """``exp_into(x, shift, out, scale)``: ``out[:] = exp(x - shift)`` for float64 ``x`` with
    the polynomial ``poly`` on the reduced argument; ``scale`` is float64 scratch (same len).

    Three loops that LLVM vectorises: (1) range reduction and polynomial into ``out``, the
    shifted ``x/ln2`` into ``scale``; (2) ``scale``'s bits turned into ``2^k`` in place;
    (3) ``out *= 2^k`` with the flush/overflow fix-ups. See the module docstring.
    """

    @nb.njit(**_JIT)
    def exp_into(
        x: np.ndarray, shift: float, out: np.ndarray, scale: np.ndarray
    ) -> None:  # pragma: no cover - jit
        n = x.shape[0]
        for j in range(n):
            xj = x[j] - shift
            xj = xj if xj > -745.0 else -745.0     # also maps -inf to -745 (-> 0 below)
            xj = xj if xj < 710.0 else 710.0
            t = xj * _LOG2E + _SHIFTER             # k = round(x/ln2) in the low mantissa bits
            k = t - _SHIFTER                       # k as a double
            r = (xj - k * _LN2_HI) - k * _LN2_LO   # |r| <= ln2/2 (Cody-Waite, exact)
            out[j] = poly(r)                       # exp(r)
            scale[j] = t
        bits = scale[:n].view(np.int64)
        for j in range(n):
            bits[j] = ((bits[j] + 1023) & 0x7FF) << 52   # biased exponent of 2^k
        for j in range(n):
            xj = x[j] - shift
            v = out[j] * scale[j]
            v = 0.0 if xj < _X_MIN else v
            out[j] = np.inf if xj > _X_MAX else v

    return exp_into


#: float64 costs: ~1 ulp. float32 costs: ~5e-9, cheaper.
_exp_into = _make_exp_into(_poly13)
_exp_into_f32 = _make_exp_into(_poly7)


def exp(x: np.ndarray) -> np.ndarray:
    """The fused kernels' vectorisable ``exp`` of a float64 array (for tests and ``bench``).

    Relative error ~1 ulp on [-708.39, 709.43]; 0 below, +inf above.
    """
    x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(x)
    _exp_into(x, 0.0, out, np.empty_like(x))
    return out


@nb.njit(**_JIT_SUM)
def _sinkhorn_rows(
    C: np.ndarray, log_a: np.ndarray, f_prev: np.ndarray, gT: np.ndarray, eps: float,
    tau: float, omega: float, f_out: np.ndarray, col_s: np.ndarray, W: np.ndarray, low: bool,
) -> None:  # pragma: no cover - jit
    """Fused f-update and column sums of a strip (see :func:`sinkhorn_strip`).

    ``C`` (r, m) float32/float64; ``log_a``, ``f_prev`` (r, K); ``gT`` (K, m) float64 contiguous;
    outputs ``f_out`` (r, K), ``col_s`` (K, m) zeroed, ``W`` (K,) set to -inf on entry;
    ``low``: use the float32-accurate exp (float32 costs).
    """
    r, m = C.shape
    K = gT.shape[0]
    inv = 1.0 / eps
    crow = np.empty(m)
    z = np.empty(m)
    e = np.empty(m)
    scratch = np.empty(m)
    for i in range(r):
        for j in range(m):
            crow[j] = C[i, j]                                        # widen to float64
        for k in range(K):
            g = gT[k]
            M = -np.inf
            for j in range(m):
                zj = (g[j] - crow[j]) * inv                          # Z_ij = (g_j - C_ij)/eps
                z[j] = zj
                M = max(M, zj)
            Mf = M if M > -np.inf else 0.0
            if low:                                                  # E_ij = exp(Z_ij - M_i)
                _exp_into_f32(z, Mf, e, scratch)
            else:
                _exp_into(z, Mf, e, scratch)
            S = 0.0
            for j in range(m):
                S += e[j]
            la = log_a[i, k]
            if la == -np.inf:
                f = -np.inf                                          # a_i = 0
            else:
                f = eps * la - tau * eps * (Mf + math.log(S))        # f-update, KL form
                if omega != 1.0:                                     # over-relaxed
                    f = f_prev[i, k] + omega * (f - f_prev[i, k])
            f_out[i, k] = f
            lw = f * inv + Mf                                        # log weight of row i
            if lw == -np.inf:
                continue
            acc = col_s[k]
            if lw > W[k]:                                            # new running max W
                if W[k] > -np.inf:
                    shrink = math.exp(W[k] - lw)
                    for j in range(m):
                        acc[j] *= shrink
                W[k] = lw
            w = math.exp(lw - W[k])                                  # in (0, 1]
            for j in range(m):
                acc[j] += w * e[j]                                   # sum_i E_ij w_i


@nb.njit(**_JIT_SUM)
def _evaluate_rows(
    C: np.ndarray, f: np.ndarray, gT: np.ndarray, eps: float,
    rows: np.ndarray, cols: np.ndarray, pc: np.ndarray, low: bool,
) -> None:  # pragma: no cover - jit
    """Row sums (r, K), column sums (K, m, accumulated) and ``<P, C>`` (K,, accumulated)."""
    r, m = C.shape
    K = gT.shape[0]
    inv = 1.0 / eps
    crow = np.empty(m)
    z = np.empty(m)
    e = np.empty(m)
    scratch = np.empty(m)
    for i in range(r):
        for j in range(m):
            crow[j] = C[i, j]
        for k in range(K):
            fi = f[i, k]
            if fi == -np.inf:
                rows[i, k] = 0.0
                continue
            g = gT[k]
            for j in range(m):
                z[j] = (fi + g[j] - crow[j]) * inv                   # log P_ij
            if low:                                                  # P_ij
                _exp_into_f32(z, 0.0, e, scratch)
            else:
                _exp_into(z, 0.0, e, scratch)
            s = 0.0
            p = 0.0
            acc = cols[k]
            for j in range(m):
                s += e[j]
                p += e[j] * crow[j]
                acc[j] += e[j]
            rows[i, k] = s
            pc[k] += p


def _fits(C: Any, *others: Any) -> bool:
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


def sinkhorn_strip(
    C: Any, start: int, log_a: Any, f_prev: Any, g: Any, eps: float, tau: float,
    omega: float = 1.0,
) -> tuple[Any, kernels.Pair]:
    """Fused drop-in for :func:`bigsink.kernels.sinkhorn_strip` (same maths and outputs).

    NumPy float32/float64 strips run the numba kernel (one read of C, one exp per element);
    CuPy float32/float64 strips the CUDA kernels (:mod:`bigsink._cuda`); anything else the
    generic kernel.
    """
    if is_cupy_array(C) and _cuda.fits(C):
        return _cuda.sinkhorn_strip(C, start, log_a, f_prev, g, eps, tau, omega)
    if not _fits(C, log_a, f_prev, g):
        return kernels.sinkhorn_strip(C, start, log_a, f_prev, g, eps, tau, omega)
    r, m = C.shape
    K = g.shape[1]
    f_new = np.empty((r, K))
    col_s = np.zeros((K, m))
    W = np.full(K, -np.inf)
    _sinkhorn_rows(np.ascontiguousarray(C), _f64(log_a), _f64(f_prev), _f64(g.T), float(eps),
                   float(tau), float(omega), f_new, col_s, W, C.dtype == np.float32)
    W = np.where(np.isneginf(W), 0.0, W)                             # (K,) as the generic kernel
    g_fin = np.where(np.isneginf(g), 0.0, g)
    col_m = W[None, :] - g_fin / eps                                 # (m, K)
    return f_new, (col_m, np.ascontiguousarray(col_s.T))


def evaluate_strip(
    C: Any, start: int, f: Any, g: Any, eps: float
) -> tuple[Any, tuple[Any, Any]]:
    """Fused drop-in for :func:`bigsink.kernels.evaluate_strip` (one exp per element).

    CuPy float32/float64 strips run the CUDA kernels (:mod:`bigsink._cuda`).
    """
    if is_cupy_array(C) and _cuda.fits(C):
        return _cuda.evaluate_strip(C, start, f, g, eps)
    if not _fits(C, f, g):
        return kernels.evaluate_strip(C, start, f, g, eps)
    r, m = C.shape
    K = g.shape[1]
    rows = np.empty((r, K))
    cols = np.zeros((K, m))
    pc = np.zeros(K)
    _evaluate_rows(np.ascontiguousarray(C), _f64(f), _f64(g.T), float(eps), rows, cols, pc,
                   C.dtype == np.float32)
    return rows, (np.ascontiguousarray(cols.T), pc)


def fused_available(dtype: Any, namespace: Any = np) -> bool:
    """Whether strips of ``dtype`` in ``namespace`` get fused kernels (numba for NumPy,
    CUDA for CuPy)."""
    return (
        (namespace is np or getattr(namespace, "__name__", "") == "cupy")
        and np.dtype(dtype) in (np.float32, np.float64)
    )


def strip_kernels(
    dtype: Any, namespace: Any = np
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``(sinkhorn, evaluate, column)`` strip kernels for costs of ``dtype`` in ``namespace``.

    NumPy and CuPy float32/float64 get the fused kernels (the column fallback, rare, stays
    generic); other namespaces (array-api-strict) and dtypes get :mod:`bigsink.kernels`.
    """
    if fused_available(dtype, namespace):
        return sinkhorn_strip, evaluate_strip, kernels.column_pair
    return kernels.sinkhorn_strip, kernels.evaluate_strip, kernels.column_pair


def check_tolerance(dtype: Any, tol: float, stacklevel: int = 2) -> None:
    """Warn (:class:`PrecisionWarning`) when ``tol`` is below what a ``dtype`` cost resolves."""
    if np.dtype(dtype) == np.float32 and tol < FLOAT32_TOL:
        warnings.warn(
            PrecisionWarning(
                f"tol={tol:g} is below the precision of a float32 cost (~{FLOAT32_TOL:g}): "
                "the marginals still converge, but <P, C> and the potentials only carry "
                "float32 accuracy. Use a float64 cost, or tol >= 1e-7."
            ),
            stacklevel=stacklevel + 1,
        )
