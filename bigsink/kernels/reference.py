"""Pure per-strip Sinkhorn maths on an array namespace (NumPy, CuPy, array-api-strict).

Nothing here imports Dask, Zarr or Ray: every function takes arrays and returns arrays of
the same namespace, so a worker, a thread or a GPU can run it unchanged.

Conventions (DESIGN.md §2): potentials ``f`` (n, K), ``g`` (m, K); plan
``P_ij = exp((f_i + g_j - C_ij) / eps)``. ``K`` is the batch of marginal pairs sharing C.

A *pair* ``(m, s)`` stands for ``m + log(s)``: a max-shift ``m`` and a sum of exponentials
``s`` taken relative to it. An empty reduction is ``(-inf, 0)``. Pairs from different
strips are merged with :func:`merge_pairs`, which is associative; :func:`tree_reduce`
applies it in one fixed binary tree so results never depend on timing or worker count.

A *strip* is a range of whole rows of C, ``C_strip`` (r, m). Every strip kernel has the
signature ``kernel(C_strip, start, *row_args, *shared) -> (row_out, partial)``: ``row_out``
belongs to the strip's rows (concatenated by the executor), ``partial`` is merged across
strips with the kernel's merge function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from array_api_compat import array_namespace

Array = Any
Pair = tuple[Array, Array]
T = TypeVar("T")

__all__ = [
    "add_partials",
    "apply_strip",
    "column_pair",
    "evaluate_strip",
    "lse_pair",
    "merge_pairs",
    "merge_scan",
    "moments_strip",
    "pair_to_lse",
    "plan_strip",
    "potential_update",
    "scan_strip",
    "sinkhorn_strip",
    "topk_strip",
    "tree_reduce",
]


def _finite_or_zero(xp: Any, m: Array) -> Array:
    """``m`` with ``-inf`` entries (empty reductions) replaced by 0, safe to subtract."""
    return xp.where(xp.isinf(m) & (m < 0), xp.zeros_like(m), m)


def lse_pair(z: Array, axis: int) -> Pair:
    """Partial log-sum-exp of ``z`` along ``axis`` as a ``(max, sum-exp)`` pair.

    ``m = max(z)``, ``s = sum(exp(z - m))``; an all ``-inf`` slice gives ``(-inf, 0)``.
    """
    xp = array_namespace(z)
    m = xp.max(z, axis=axis)
    shift = _finite_or_zero(xp, m)
    s = xp.sum(xp.exp(z - xp.expand_dims(shift, axis=axis)), axis=axis)
    return m, s


def merge_pairs(p: Pair, q: Pair) -> Pair:
    """Stable merge: ``m = max(m1, m2); s = s1*exp(m1-m) + s2*exp(m2-m)`` (DESIGN.md §2)."""
    (m1, s1), (m2, s2) = p, q
    xp = array_namespace(m1, m2)
    m = xp.maximum(m1, m2)
    shift = _finite_or_zero(xp, m)
    s = s1 * xp.exp(m1 - shift) + s2 * xp.exp(m2 - shift)
    return m, s


def pair_to_lse(p: Pair) -> Array:
    """``m + log(s)``: the log-sum-exp a pair stands for (``-inf`` where ``s == 0``)."""
    m, s = p
    xp = array_namespace(m, s)
    return _finite_or_zero(xp, m) + xp.log(s)


def tree_reduce(items: Sequence[T], merge: Callable[[T, T], T]) -> T:
    """Reduce ``items`` with ``merge`` in a fixed balanced binary tree.

    Level by level, neighbours ``(0, 1), (2, 3), ...`` are merged; an odd last item moves up
    unchanged. Executors use this exact order (locally, or as a tree of Dask tasks), so the
    floating-point result is the same on every executor and for every worker count.
    """
    if not items:
        raise ValueError("tree_reduce needs at least one item")
    level = list(items)
    while len(level) > 1:
        nxt = [merge(level[k], level[k + 1]) for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def add_partials(p: tuple[Array, ...], q: tuple[Array, ...]) -> tuple[Array, ...]:
    """Element-wise sum of two tuples of partial sums (merge rule of :func:`evaluate_strip`)."""
    return tuple(x + y for x, y in zip(p, q, strict=True))


def potential_update(
    log_w: Array, lse: Array, eps: float, tau: Array | float,
    prev: Array | None = None, omega: float = 1.0,
) -> Array:
    """Log-domain update ``f = eps*log(w) - tau*eps*lse`` (DESIGN.md §2), over-relaxed by
    ``omega`` when given the previous potentials: ``f = prev + omega*(f_sinkhorn - prev)``.

    ``tau = rho / (rho + eps)`` (1 for balanced problems). This is the scaling update
    ``u = (a / K v)**tau`` of the KL-regularised problem ``<P,C> + eps*KL(P || a b^T) +
    rho*KL(P 1 || a) + ...`` (POT ``sinkhorn_unbalanced(reg_type="kl")``, whose kernel
    ``K = a b^T exp(-C/eps)`` carries the weights) written for our plan
    ``P_ij = exp((f_i + g_j - C_ij)/eps)``: there ``f = eps*log(u*a)``, so only the LSE term
    is raised to tau. (``tau*(eps*log w - eps*lse)`` would solve the entropy-regularised
    problem ``reg_type="entropy"`` instead; both agree when balanced.) Over-relaxation is
    ``u = u_prev**(1 - omega) * (a / K v)**omega`` in the scaling domain (Thibault et al.
    2021, "Overrelaxed Sinkhorn-Knopp"); ``omega = 1`` is plain Sinkhorn. Zero weights
    (``log_w = -inf``) get potential ``-inf``: their rows (columns) of the plan are exactly zero.
    """
    xp = array_namespace(log_w, lse)
    zero_weight = xp.isinf(log_w) & (log_w < 0)
    safe_lse = xp.where(zero_weight, xp.zeros_like(lse), lse)
    new = eps * log_w - tau * eps * safe_lse
    if omega != 1.0 and prev is not None:
        safe_prev = xp.where(zero_weight, xp.zeros_like(prev), prev)
        new = safe_prev + omega * (new - safe_prev)
    return xp.where(zero_weight, xp.full_like(new, -xp.inf), new)


def _cost3(C: Array, dtype: Any) -> Array:
    """C strip (r, m) as (r, m, 1) in the potentials' dtype, to broadcast against K."""
    xp = array_namespace(C)
    return xp.expand_dims(xp.astype(C, dtype), axis=2)


def sinkhorn_strip(
    C: Array, start: int, log_a: Array, f_prev: Array, g: Array, eps: float, tau: float,
    omega: float = 1.0,
) -> tuple[Array, Pair]:
    """One fused Sinkhorn pass over a row strip: new ``f`` rows and the column partials.

    One read of C and one ``exp`` per element (DESIGN.md §3). With
    ``Z_ij = (g_j - C_ij)/eps`` and its row max ``M_i``, ``E_ij = exp(Z_ij - M_i)`` gives

        f_i = eps*log a_i - tau*eps*(M_i + log sum_j E_ij)                       (f-update)

(over-relaxed by ``omega`` towards it from ``f_prev``, see :func:`potential_update`)

    and, for the *new* f, ``exp((f_i - C_ij)/eps) = E_ij * exp(f_i/eps + M_i) * exp(-g_j/eps)``,
    so the column partial is the pair ``(W - g_j/eps, sum_i E_ij exp(f_i/eps + M_i - W))``
    with ``W = max_i (f_i/eps + M_i)``. For a balanced problem ``f_i/eps + M_i`` equals
    ``log a_i - log sum_j E_ij``, whose spread over rows is bounded, so no term that matters
    underflows; the solver still checks for columns whose partial vanished and recomputes
    those exactly with :func:`column_pair`.

    Args:
        C: cost strip (r, m), any real dtype.
        start: index of the strip's first row (unused here; part of the strip signature).
        log_a: log row weights of the strip (r, K), float64.
        f_prev: the strip's current row potentials (r, K), float64 (read when omega != 1).
        g: column potentials (m, K), float64.
        eps: regularisation of this pass.
        tau: ``rho / (rho + eps)``; 1 for balanced.
        omega: over-relaxation factor; 1 is plain Sinkhorn.

    Returns:
        ``f_new`` (r, K) and the column pair ``((m, K), (m, K))``.
    """
    xp = array_namespace(C, g)
    Z = (xp.expand_dims(g, axis=0) - _cost3(C, g.dtype)) / eps       # (r, m, K)
    M = xp.max(Z, axis=1)                                            # (r, K) row max
    M_fin = _finite_or_zero(xp, M)
    E = xp.exp(Z - xp.expand_dims(M_fin, axis=1))                    # (r, m, K) in [0, 1]
    S = xp.sum(E, axis=1)                                            # (r, K)
    f_new = potential_update(log_a, M_fin + xp.log(S), eps, tau, f_prev, omega)  # (r, K)
    lw = f_new / eps + M_fin                                         # (r, K), -inf for a_i = 0
    W = _finite_or_zero(xp, xp.max(lw, axis=0))                      # (K,)
    w = xp.exp(lw - xp.expand_dims(W, axis=0))                       # (r, K) in [0, 1]
    col_s = xp.sum(E * xp.expand_dims(w, axis=1), axis=0)            # (m, K)
    col_m = xp.expand_dims(W, axis=0) - _finite_or_zero(xp, g) / eps  # (m, K); b_j = 0 -> s = 0
    return f_new, (col_m, col_s)


def column_pair(C: Array, start: int, f: Array, eps: float) -> tuple[None, Pair]:
    """Exact column partials ``LSE_i((f_i - C_ij)/eps)`` of a strip, as a pair (m, K).

    The plain two-``exp`` reduction, used when a fused column partial vanished.
    """
    xp = array_namespace(C, f)
    Z = (xp.expand_dims(f, axis=1) - _cost3(C, f.dtype)) / eps      # (r, m, K)
    return None, lse_pair(Z, axis=0)


def _weighted_sum(xp: Any, w: Array, x: Array, axis: int | tuple[int, ...]) -> Array:
    """``sum(w * x)`` where ``w == 0`` terms count as 0 even if ``x`` is infinite."""
    prod = xp.where(w == 0, xp.zeros_like(w), w * x)
    return xp.sum(prod, axis=axis)


def evaluate_strip(
    C: Array, start: int, f: Array, g: Array, eps: float
) -> tuple[Array, tuple[Array, Array]]:
    """Plan marginals and ``<P, C>`` of a strip for given potentials.

    Returns the row sums ``P 1`` of the strip (r, K) and the partial
    ``(col_sums (m, K), <P, C>_strip (K,))``, merged across strips by addition.
    """
    xp = array_namespace(C, f, g)
    C3 = _cost3(C, f.dtype)                                          # (r, m, 1)
    P = xp.exp((xp.expand_dims(f, axis=1) + xp.expand_dims(g, axis=0) - C3) / eps)  # (r, m, K)
    rows = xp.sum(P, axis=1)                                         # (r, K)
    cols = xp.sum(P, axis=0)                                         # (m, K)
    pc = _weighted_sum(xp, P, C3, axis=(0, 1))                       # (K,)
    return rows, (cols, pc)


def scan_strip(C: Array, start: int) -> tuple[None, tuple[float, float, int, int]]:
    """Minimum, maximum and non-finite count of a strip, and the flat index of its first bad value.

    The flat index is into the whole matrix (``row * m + col``), ``-1`` when all are finite.
    Finite min/max ignore non-finite entries.
    """
    xp = array_namespace(C)
    lo, hi = float(xp.min(C)), float(xp.max(C))     # NaN or +-inf if any entry is not finite
    if math.isfinite(lo) and math.isfinite(hi):     # the common case: two reads, no temporaries
        return None, (lo, hi, 0, -1)
    finite = xp.isfinite(C)
    n_bad = int(xp.sum(xp.astype(~finite, xp.int64)))
    first = -1
    if n_bad:
        m = C.shape[1]
        flat = xp.reshape(~finite, (-1,))
        first = start * m + int(xp.argmax(xp.astype(flat, xp.int8)))
    if n_bad == C.shape[0] * C.shape[1]:
        return None, (float("inf"), float("-inf"), n_bad, first)
    lo = float(xp.min(xp.where(finite, C, xp.full_like(C, xp.inf))))
    hi = float(xp.max(xp.where(finite, C, xp.full_like(C, -xp.inf))))
    return None, (lo, hi, n_bad, first)


def merge_scan(
    p: tuple[float, float, int, int], q: tuple[float, float, int, int]
) -> tuple[float, float, int, int]:
    """Merge two :func:`scan_strip` partials (strips are merged in row order)."""
    firsts = [x for x in (p[3], q[3]) if x >= 0]
    return (min(p[0], q[0]), max(p[1], q[1]), p[2] + q[2], min(firsts) if firsts else -1)


def apply_strip(
    C: Array, start: int, f: Array, U: Array, g: Array, eps: float, V: Array
) -> tuple[Array, tuple[Array]]:
    """The plan as an operator on a strip: ``P_k V`` rows (r, dv, K) and the partial
    ``(P_k^T U,)`` ((m, du, K), merged by addition) for ``P_kij = exp((f_ik + g_jk -
    C_ij) / eps)``; U (r, du) are the strip's rows of the row vectors, V (m, dv).
    One exp per element; ``dv`` or ``du`` may be 0."""
    xp = array_namespace(C, f, g)
    P, _ = plan_strip(C, start, f, g, eps)                           # (r, m, K)
    K = P.shape[2]
    rows = xp.stack([P[:, :, k] @ V for k in range(K)], axis=2)      # (r, dv, K)
    cols = xp.stack([xp.matrix_transpose(P[:, :, k]) @ U for k in range(K)], axis=2)
    return rows, (cols,)                                             # (m, du, K)


def moments_strip(C: Array, start: int, shift: float) -> tuple[None, tuple[float, float]]:
    """``(sum(C - shift), sum((C - shift)^2))`` of a strip in float64 (merged by addition):
    the mean and variance of C's entries, shifted by ``shift`` (C's minimum) against
    cancellation."""
    xp = array_namespace(C)
    D = xp.astype(C, xp.float64) - shift                             # (r, m)
    return None, (float(xp.sum(D)), float(xp.sum(D * D)))


def plan_strip(C: Array, start: int, f: Array, g: Array, eps: float) -> tuple[Array, None]:
    """The strip's rows of the plan ``P_ij = exp((f_i + g_j - C_ij)/eps)`` (DESIGN.md §2).

    Returns ``P`` (r, m, K) as the row output and no partial.
    """
    xp = array_namespace(C, f, g)
    C3 = _cost3(C, f.dtype)                                          # (r, m, 1)
    P = xp.exp((xp.expand_dims(f, axis=1) + xp.expand_dims(g, axis=0) - C3) / eps)  # (r, m, K)
    return P, None


def topk_strip(
    C: Array, start: int, f: Array, g: Array, eps: float, k: int
) -> tuple[Array, None]:
    """The ``k`` largest plan entries of each row of the strip, packed in one array.

    ``P_ij`` is largest where ``(f_i + g_j - C_ij)/eps`` is; a stable descending sort keeps
    the lower column first on ties. Returns (r, k, K, 2): ``[..., 0]`` the column index (as
    float64, exact below 2^53), ``[..., 1]`` the value ``P_ij``; no partial.
    """
    xp = array_namespace(C, f, g)
    k = int(k)
    C3 = _cost3(C, f.dtype)                                          # (r, m, 1)
    L = (xp.expand_dims(f, axis=1) + xp.expand_dims(g, axis=0) - C3) / eps  # (r, m, K) log P
    order = xp.argsort(L, axis=1, descending=True, stable=True)[:, :k, :]   # (r, k, K)
    vals = xp.exp(xp.take_along_axis(L, order, axis=1))             # (r, k, K)
    return xp.stack([xp.astype(order, vals.dtype), vals], axis=-1), None  # (r, k, K, 2)
