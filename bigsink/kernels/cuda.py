"""Fused CuPy strip kernels: the GPU twins of :mod:`bigsink.kernels.cpu` (CUDA C via
``cupy.RawKernel``).

Drop-in replacements for :func:`bigsink.kernels.sinkhorn_strip` and
:func:`bigsink.kernels.evaluate_strip` on CuPy strips: same signatures, same maths, same
outputs (CuPy float64 arrays), to ~1e-12 relative for float64 costs and to float32 precision
for float32 costs. :func:`bigsink.kernels.sinkhorn_strip` and
:func:`~bigsink.kernels.evaluate_strip` send CuPy strips here; CuPy is imported only when one
of them runs (:func:`bigsink._xp.import_cupy`).

Layout: ``C`` (r, m) float32 or float64, rows contiguous (any row stride); potentials and
every accumulator float64, whatever the cost dtype (a float32 cost is widened on load).
Arguments are formed as ``(g_j - C_ij) * (1/eps)`` as in :mod:`bigsink.kernels.cpu` (a double
division per element would cost as much as the exp). The per-element exp is CUDA's double
``exp`` (~1 ulp) for float64 costs; for float32 costs a Cody-Waite + degree-7 polynomial in
double (``exp_poly7``, relative error ~5e-9, as the CPU kernels' float32 exp): about half the
FP64 work, which keeps the kernels memory-bound on GPUs with modest FP64 throughput.

**Reads of C.** The f-update needs the whole row ``i`` reduced before its weight
``w_i = exp(f_i/eps + M_i - W)`` is known, and the column partials need ``sum_i E_ij w_i``
(DESIGN.md §3). On the CPU a row stays in cache between the two; on the GPU a row of a large
``m`` does not fit one block's registers or shared memory, and summing across blocks would
need atomics (non-deterministic order). So each kernel here is **two passes, reading C twice**,
each pass one ``exp`` per element:

1. ``*_rows``: one block of ``BLOCK`` threads per (row ``i``, problem ``k``); each thread keeps
   an online ``(max, sum-exp)`` pair over its columns (one exp per element: the running sum is
   rescaled only when the max rises, ``S*exp(M_old - z) + 1``), then the block merges the pairs
   in a fixed shared-memory tree and thread 0 writes the f-update.
2. ``weighted_cols`` (the column pass of both kernels): one thread per (column ``j``, row
   chunk ``c``, problem ``k``) walks its chunk's rows (coalesced: neighbouring threads read
   neighbouring columns) and writes its partial column sum to ``part[c, j, k]``; the chunks
   are summed by ``cupy.sum`` (no atomics, so the result is the same on every run).

The per-iteration bound of this path is therefore ``2 * bytes(C) / bandwidth``.

A one-read design exists for Hopper GPUs (sm_90) and not too wide rows, left for when it can
be measured: a thread-block *cluster* of 4 blocks spans a row, each block owning a quarter
of the columns, their column accumulators (m/4 doubles) in its shared memory and its
quarter-row in registers; per row the blocks exchange their (max, sum) pairs through
distributed shared memory (``cluster.sync()``), all derive the same ``f_i``, and add
``E_ij w_i`` to their own accumulators (a running max rescales them, as on the CPU). One
cluster per 4 SMs walks every 33rd row; the clusters' (m,) partial pairs are merged in a
fixed order on the host. Deterministic, no atomics, m up to ~100 000 (cluster of 4).

Determinism: fixed reduction trees everywhere, no atomics.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._xp import import_cupy

Array = Any

__all__ = [
    "BLOCK", "SOURCES", "evaluate_strip", "evaluate_with", "fits", "kernel_source",
    "sinkhorn_strip", "sinkhorn_with",
]

#: Threads per block of the row kernels (a power of two: the shared-memory tree halves it).
BLOCK = 256
#: Column kernels: threads per block, and the number of threads aimed at (columns x chunks).
COL_BLOCK = 256
TARGET_THREADS = 1 << 20

_PRELUDE = r"""
typedef {cost_t} cost_t;
#define BLOCK {block}

__device__ __forceinline__ double neg_inf() {{
    return -__longlong_as_double(0x7ff0000000000000LL);
}}

// exp for float32 costs: Cody-Waite reduction x = k ln2 + r (|r| <= ln2/2), Taylor degree 7
// for exp(r) (relative error ~5e-9, < 1e-8, below float32 rounding; as the CPU float32 exp),
// 2^k from the exponent bits; 0 below -708.39 (and for -inf), +inf above 709.43.
__device__ __forceinline__ double exp_poly7(double x) {{
    if (!(x >= -708.3964185322641)) return 0.0;
    if (x > 709.43613930) return -neg_inf();
    const double k = rint(x * 1.4426950408889634);
    double r = fma(-k, 0.693147180369123816490, x);
    r = fma(-k, 1.90821492927058770002e-10, r);
    double p = 1.0 / 5040.0;
    p = fma(p, r, 1.0 / 720.0);
    p = fma(p, r, 1.0 / 120.0);
    p = fma(p, r, 1.0 / 24.0);
    p = fma(p, r, 1.0 / 6.0);
    p = fma(p, r, 0.5);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    return p * __longlong_as_double((long long)((int)k + 1023) << 52);
}}

// The per-element exp: CUDA's double exp (~1 ulp) for float64 costs, exp_poly7 for float32.
#define EXP_C(x) {exp_c}(x)

// Merge the pair (m2, s2) into (m1, s1): m = max(m1, m2); s = s1 exp(m1-m) + s2 exp(m2-m).
__device__ __forceinline__ void merge_pair(double& m1, double& s1, double m2, double s2) {{
    const double mx = fmax(m1, m2);
    s1 = (mx == neg_inf()) ? 0.0 : s1 * exp(m1 - mx) + s2 * exp(m2 - mx);
    m1 = mx;
}}

// Tree sum of one double per thread (shared sh[BLOCK]); the result is in sh[0].
__device__ __forceinline__ void block_sum(double* sh, double v) {{
    const int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int h = BLOCK / 2; h > 0; h >>= 1) {{
        if (t < h) sh[t] += sh[t + h];
        __syncthreads();
    }}
}}
"""

#: CUDA C of each kernel (``{cost_t}`` and ``{block}`` are filled in by :func:`kernel_source`).
SOURCES: dict[str, str] = {
    # f-update of a row strip: grid (r, K), block BLOCK.
    "sinkhorn_rows": r"""
extern "C" __global__ void sinkhorn_rows(
    const cost_t* C, long long ld, int m, int K,   // C (r, m), row stride ld
    const double* gT,                              // (K, m)
    const double* log_a, const double* f_prev,     // (r, K) each
    double eps, double tau, double omega,
    double* f_out, double* M_out, double* lw_out)  // (r, K) each
{{
    const int i = blockIdx.x, k = blockIdx.y, t = threadIdx.x;
    const cost_t* row = C + (long long)i * ld;
    const double* g = gT + (long long)k * m;
    const double inv = 1.0 / eps;
    double M = neg_inf(), S = 0.0;                 // online pair of Z_ij = (g_j - C_ij)/eps
    #pragma unroll 4
    for (int j = t; j < m; j += BLOCK) {{
        const double z = (g[j] - (double)row[j]) * inv;
        if (z > M) {{ S = S * EXP_C(M - z) + 1.0; M = z; }}   // one exp per element either way
        else if (z != neg_inf()) {{ S += EXP_C(z - M); }}
    }}
    __shared__ double sM[BLOCK];
    __shared__ double sS[BLOCK];
    sM[t] = M; sS[t] = S;
    __syncthreads();
    for (int h = BLOCK / 2; h > 0; h >>= 1) {{      // fixed tree over the block's pairs
        if (t < h) {{
            double m1 = sM[t], s1 = sS[t];
            merge_pair(m1, s1, sM[t + h], sS[t + h]);
            sM[t] = m1; sS[t] = s1;
        }}
        __syncthreads();
    }}
    if (t == 0) {{
        const long long o = (long long)i * K + k;
        const double Mf = (sM[0] == neg_inf()) ? 0.0 : sM[0];   // finite row max M_i
        const double la = log_a[o];
        double f;
        if (la == neg_inf()) {{
            f = neg_inf();                                        // a_i = 0
        }} else {{
            f = eps * la - tau * eps * (Mf + log(sS[0]));          // f-update, KL form
            if (omega != 1.0) {{ const double p = f_prev[o]; f = p + omega * (f - p); }}
        }}
        f_out[o] = f;
        M_out[o] = Mf;
        lw_out[o] = f / eps + Mf;                                 // log weight of row i
    }}
}}
""",
    # column sums of E_ij w_i over row chunks, E_ij = exp((g_j - C_ij)/eps - M_i): the
    # f-update's column partials, and (M_i = -f_i/eps, w_i = 1) the plan's column sums.
    # grid (ceil(m/COL_BLOCK), chunks, K).
    "weighted_cols": r"""
extern "C" __global__ void weighted_cols(
    const cost_t* C, long long ld, int r, int m, int K, int chunk,
    const double* g,                               // (m, K)
    const double* Mf, const double* w,             // (r, K) each: row shift, row weight
    double eps,
    double* part)                                  // (chunks, m, K)
{{
    const int j = blockIdx.x * blockDim.x + threadIdx.x, c = blockIdx.y, k = blockIdx.z;
    if (j >= m) return;
    const int i0 = c * chunk, i1 = min(r, i0 + chunk);
    const double gj = g[(long long)j * K + k];
    const double inv = 1.0 / eps;
    double s = 0.0;
    #pragma unroll 4
    for (int i = i0; i < i1; ++i) {{
        const double wi = w[(long long)i * K + k];
        if (wi == 0.0) continue;                                  // a_i = 0: no mass
        const double z = (gj - (double)C[(long long)i * ld + j]) * inv;
        s += EXP_C(z - Mf[(long long)i * K + k]) * wi;            // E_ij w_i
    }}
    part[((long long)c * m + j) * K + k] = s;
}}
""",
    # row sums of P and of P*C: grid (r, K), block BLOCK.
    "evaluate_rows": r"""
extern "C" __global__ void evaluate_rows(
    const cost_t* C, long long ld, int m, int K,
    const double* f, const double* gT,             // (r, K), (K, m)
    double eps,
    double* rows, double* pc_rows)                 // (r, K) each
{{
    const int i = blockIdx.x, k = blockIdx.y, t = threadIdx.x;
    const long long o = (long long)i * K + k;
    const double fi = f[o];
    const cost_t* row = C + (long long)i * ld;
    const double* g = gT + (long long)k * m;
    const double inv = 1.0 / eps;
    double s = 0.0, p = 0.0;
    if (fi != neg_inf()) {{
        #pragma unroll 4
        for (int j = t; j < m; j += BLOCK) {{
            const double c = (double)row[j];
            const double e = EXP_C((fi + g[j] - c) * inv);        // P_ij
            s += e;
            if (e != 0.0) p += e * c;                             // 0 * inf counts as 0
        }}
    }}
    __shared__ double sh[BLOCK];
    block_sum(sh, s);
    if (t == 0) rows[o] = sh[0];
    __syncthreads();
    block_sum(sh, p);
    if (t == 0) pc_rows[o] = sh[0];
}}
""",
}

_CTYPES = {"float32": "float", "float64": "double"}
_EXPS = {"float32": "exp_poly7", "float64": "exp"}


def kernel_source(name: str, dtype: str) -> str:
    """Complete CUDA C of kernel ``name`` for a cost of ``dtype`` ("float32"/"float64")."""
    fill = {"cost_t": _CTYPES[dtype], "block": BLOCK, "exp_c": _EXPS[dtype]}
    return _PRELUDE.format(**fill) + SOURCES[name].format(**fill)


@functools.cache
def _kernel(name: str, dtype: str) -> Any:
    """The compiled ``cupy.RawKernel`` (CuPy caches the binary on disk as well)."""
    cupy = import_cupy()
    return cupy.RawKernel(kernel_source(name, dtype), name)


def _launch(name: str, dtype: str, grid: tuple[int, ...], block: int, args: tuple[Any, ...]
            ) -> None:
    """Run kernel ``name`` (cost ``dtype``) on the current CuPy stream."""
    _kernel(name, dtype)(grid, (block,), args)


#: ``launch(name, dtype, grid, block, args)``: runs one kernel of :data:`SOURCES`.
Launch = Callable[[str, str, tuple[int, ...], int, tuple[Any, ...]], None]


def _strip(xp: Any, C: Array) -> tuple[Array, int]:
    """``C`` with unit column stride, and its row stride in elements (copies only if needed)."""
    item = C.dtype.itemsize
    if C.strides[1] != item or C.strides[0] % item or C.strides[0] < C.shape[1] * item:
        C = xp.ascontiguousarray(C)
    return C, int(C.strides[0] // item)


def _f64(xp: Any, x: Array) -> Array:
    """``x`` as a C-contiguous float64 array of ``xp``."""
    return xp.ascontiguousarray(xp.asarray(x, dtype=xp.float64))


def _chunks(r: int, m: int, K: int) -> tuple[int, int]:
    """``(rows per chunk, chunks)`` of the column kernels: about ``TARGET_THREADS`` threads."""
    want = max(1, min(r, math.ceil(TARGET_THREADS / max(1, m * K))))
    chunk = math.ceil(r / want)
    return chunk, math.ceil(r / chunk)


def fits(C: Array) -> bool:
    """Whether the CUDA kernels apply: a non-empty 2-D float32/float64 strip."""
    return C.ndim == 2 and str(C.dtype) in _CTYPES and min(C.shape) > 0


def sinkhorn_strip(
    C: Array, start: int, log_a: Array, f_prev: Array, g: Array, eps: float, tau: float,
    omega: float = 1.0,
) -> tuple[Array, tuple[Array, Array]]:
    """CUDA :func:`bigsink.kernels.reference.sinkhorn_strip`: new ``f`` rows (r, K) and the
    column pair ``(col_m, col_s)`` ((m, K) each), all CuPy float64.

    Two passes over C (module docstring): ``sinkhorn_rows`` gives ``f_new``, the finite row
    max ``M`` and ``lw = f_new/eps + M``; with ``W = max_i lw_i`` and ``w = exp(lw - W)``
    (r x K exps), ``weighted_cols`` gives ``col_s_j = sum_i exp(Z_ij - M_i) w_i`` and
    ``col_m = W - g/eps``, exactly the generic kernel's pair.
    """
    return sinkhorn_with(import_cupy(), _launch, C, log_a, f_prev, g, eps, tau, omega)


def sinkhorn_with(
    xp: Any, launch: Launch, C: Array, log_a: Array, f_prev: Array, g: Array, eps: float,
    tau: float, omega: float = 1.0,
) -> tuple[Array, tuple[Array, Array]]:
    """:func:`sinkhorn_strip` with the array module ``xp`` and kernel runner ``launch``
    (CuPy and ``cupy.RawKernel`` on a GPU; NumPy and a CPU emulation in the tests)."""
    C, ld = _strip(xp, C)
    dtype = str(C.dtype)
    r, m = (int(s) for s in C.shape)
    g = _f64(xp, g)                                                  # (m, K)
    K = int(g.shape[1])
    gT = xp.ascontiguousarray(g.T)                                   # (K, m)
    f_new = xp.empty((r, K), dtype=xp.float64)
    M = xp.empty((r, K), dtype=xp.float64)                           # finite row max
    lw = xp.empty((r, K), dtype=xp.float64)                          # f_new/eps + M
    i32, f64 = np.int32, np.float64
    launch("sinkhorn_rows", dtype, (r, K, 1), BLOCK,
           (C, np.int64(ld), i32(m), i32(K), gT, _f64(xp, log_a), _f64(xp, f_prev),
            f64(eps), f64(tau), f64(omega), f_new, M, lw))
    W = xp.max(lw, axis=0)                                           # (K,)
    W = xp.where(xp.isneginf(W), 0.0, W)
    w = xp.exp(lw - W[None, :])                                      # (r, K) in [0, 1]
    col_s = _weighted_cols(xp, launch, C, ld, g, M, w, eps)          # (m, K)
    col_m = W[None, :] - xp.where(xp.isneginf(g), 0.0, g) / eps      # (m, K)
    return f_new, (col_m, col_s)


def _weighted_cols(
    xp: Any, launch: Launch, C: Array, ld: int, g: Array, M: Array, w: Array, eps: float
) -> Array:
    """``sum_i exp((g_j - C_ij)/eps - M_i) w_i`` (m, K) by the ``weighted_cols`` kernel over
    fixed row chunks, the chunks summed in order (no atomics): C (r, m) with row stride
    ``ld``; g (m, K); M, w (r, K) float64, rows with ``w_i = 0`` skipped."""
    r, m = (int(s) for s in C.shape)
    K = int(g.shape[1])
    chunk, n_chunks = _chunks(r, m, K)
    part = xp.empty((n_chunks, m, K), dtype=xp.float64)
    i32 = np.int32
    launch("weighted_cols", str(C.dtype), (math.ceil(m / COL_BLOCK), n_chunks, K), COL_BLOCK,
           (C, np.int64(ld), i32(r), i32(m), i32(K), i32(chunk), g, _f64(xp, M),
            _f64(xp, w), np.float64(eps), part))
    return xp.sum(part, axis=0)


def evaluate_strip(
    C: Array, start: int, f: Array, g: Array, eps: float
) -> tuple[Array, tuple[Array, Array]]:
    """CUDA :func:`bigsink.kernels.reference.evaluate_strip`: row sums of P (r, K) and the partial
    ``(col_sums (m, K), <P, C>_strip (K,))``, all CuPy float64. Two passes over C."""
    return evaluate_with(import_cupy(), _launch, C, f, g, eps)


def evaluate_with(
    xp: Any, launch: Launch, C: Array, f: Array, g: Array, eps: float
) -> tuple[Array, tuple[Array, Array]]:
    """:func:`evaluate_strip` with the array module ``xp`` and kernel runner ``launch``."""
    C, ld = _strip(xp, C)
    dtype = str(C.dtype)
    r, m = (int(s) for s in C.shape)
    f, g = _f64(xp, f), _f64(xp, g)                                  # (r, K), (m, K)
    K = int(g.shape[1])
    rows = xp.empty((r, K), dtype=xp.float64)
    pc_rows = xp.empty((r, K), dtype=xp.float64)
    i32, f64 = np.int32, np.float64
    launch("evaluate_rows", dtype, (r, K, 1), BLOCK,
           (C, np.int64(ld), i32(m), i32(K), f, xp.ascontiguousarray(g.T), f64(eps),
            rows, pc_rows))
    live = ~xp.isneginf(f)                                           # (r, K): a_i > 0
    shift = xp.where(live, -f / eps, 0.0)                            # E_ij = P_ij
    cols = _weighted_cols(xp, launch, C, ld, g, shift, xp.where(live, 1.0, 0.0), eps)
    return rows, (cols, xp.sum(pc_rows, axis=0))
