"""Balanced soft assignment of samples to prototypes (SwAV's Sinkhorn-Knopp), in the log domain.

For scores ``S`` (B, K) of B samples against K prototypes, SwAV (Caron et al. 2020) forms
``Q = exp(S / eps)``, normalises it to total mass 1 and then alternately

    1. divides each prototype column by its sum and by K   (prototype masses -> 1/K),
    2. divides each sample row by its sum and by B          (sample masses    -> 1/B),

``n_iter`` times, and returns ``B * Q``: every sample's row sums to 1 and the prototype
columns are pushed toward ``B / K`` samples each. Here every step is done on
``L = log Q`` with max-shifted log-sum-exps, so scores up to ``1e3 / eps`` and beyond neither
overflow nor underflow.

Only array-API operations are used, so the same code runs on NumPy, CuPy, array-api-strict
and Dask arrays (through ``array_api_compat``). For a Dask array sharded by samples (row
chunks), the per-prototype log-sums of step 1 (K numbers) are the only values reduced across
shards; the row step is shard-local.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import array_namespace

from .errors import InputError
from .problem import check_positive

__all__ = ["assign"]


def _lse(xp: Any, L: Any, axis: int) -> Any:
    """Max-shifted log-sum-exp of ``L`` along ``axis`` (keeps that axis, size 1)."""
    m = xp.max(L, axis=axis, keepdims=True)                          # (1, K) or (B, 1)
    return m + xp.log(xp.sum(xp.exp(L - m), axis=axis, keepdims=True))


def assign(scores: Any, eps: float = 0.05, n_iter: int = 3, tol: float | None = None) -> Any:
    """SwAV-style balanced soft assignment of B samples to K prototypes.

    Args:
        scores: (B, K) similarities of samples (rows) to prototypes (columns): NumPy, CuPy,
            any array-API array, or a Dask array chunked along rows (samples).
        eps: temperature (> 0); ``Q = exp(scores / eps)`` before normalisation.
        n_iter: number of prototype/sample normalisation rounds (SwAV uses 3). With ``tol``,
            the maximum number of rounds.
        tol: if given, stop early once every prototype's mass is within ``tol`` (relative)
            of ``B / K`` at the start of a round (checked from the same per-prototype sums
            the round needs, so it costs no extra reduction; it does force evaluation of a
            lazy array each round).

    Returns:
        The (B, K) assignment in the input's namespace (lazy for Dask), each row summing to 1.
        With ``n_iter = 0`` it is ``B * softmax`` over all entries.

    Raises:
        InputError: for a non-2-D input, a non-positive ``eps``, a negative ``n_iter`` or a
            non-positive ``tol``.
    """
    if not hasattr(scores, "shape") or len(scores.shape) != 2:
        raise InputError(
            f"scores: expected a 2-D (samples, prototypes) array, got "
            f"{type(scores).__name__} of shape {getattr(scores, 'shape', None)}."
        )
    eps = check_positive("eps", eps)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise InputError(f"n_iter must be an integer >= 0; got {n_iter!r}.")
    if tol is not None and not (isinstance(tol, int | float) and tol > 0):
        raise InputError(f"tol must be None or a positive number; got {tol!r}.")
    xp = array_namespace(scores)
    B, K = int(scores.shape[0]), int(scores.shape[1])
    if B == 0 or K == 0:
        raise InputError(f"scores is empty (shape {(B, K)}).")
    if not xp.isdtype(scores.dtype, "real floating"):
        scores = xp.astype(scores, xp.float64)
    log_B, log_K = math.log(B), math.log(K)
    L = scores / eps                                                 # (B, K) log Q
    # total mass 1: the global LSE from the per-prototype ones (a K-vector reduction)
    L = L - _lse(xp, _lse(xp, L, axis=0), axis=1)                    # (B, K)
    for it in range(n_iter):
        col = _lse(xp, L, axis=0)                                    # (1, K) log prototype mass
        if tol is not None and it > 0:
            err = xp.max(xp.abs(xp.exp(col + log_K) - 1.0))          # rel. error vs 1/K
            if float(err) <= tol:
                break
        L = L - col - log_K                                          # prototype masses 1/K
        L = L - _lse(xp, L, axis=1) - log_B                          # sample masses 1/B
        if tol is not None and hasattr(L, "persist"):
            L = L.persist()                                          # lazy: keep graph flat
    return xp.exp(L + log_B)                                         # (B, K), rows sum to 1
