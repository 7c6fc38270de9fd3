"""The problem: marginals, regularisation and unbalanced penalties, validated up front.

Every check here runs before any pass over C, and every failure is an
:class:`~bigsink.errors.InputError` naming the argument, what it received and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "MASS_RANGE", "RELATIVE_EPS", "UNBALANCED_MASS_RANGE", "Problem", "check_eps",
    "check_max_iter", "check_positive", "log0", "make_problem", "parse_eps",
]

#: Relative tolerance on ``|sum(a) - sum(b)|`` for a balanced problem.
MASS_RTOL = 1e-6

#: Total masses a solve accepts: from the least normal float64 (below it a sum loses
#: precision) to 1e150, where ``sum(a) * sum(b)`` in the KL term of the objective (and an
#: unbalanced plan, which scales up to the square of the mass) still fits in float64.
MASS_RANGE = (float(np.finfo(np.float64).tiny), 1e150)
#: The narrower range of an unbalanced problem, whose plan scales up to ``t**2`` either way.
UNBALANCED_MASS_RANGE = (1e-150, 1e150)


def check_positive(name: str, value: Any, *, allow_inf: bool = False) -> float:
    """``value`` as a float, or an InputError unless it is positive (and finite); a bool is
    refused (``eps=True`` is not 1.0)."""
    if isinstance(value, bool | np.bool_):
        raise InputError(f"{name} must be a positive number; got {value!r}.")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number; got {value!r}.") from None
    if math.isnan(x) or x <= 0 or (math.isinf(x) and not allow_inf):
        finite = " (or inf)" if allow_inf else " and finite"
        raise InputError(f"{name} must be positive{finite}; got {value!r}.")
    return x


def check_eps(eps: Any) -> tuple[float, ...]:
    """One eps or a sequence of them as a tuple of positive finite floats, or an InputError
    (the one check of ``eps`` for :func:`~bigsink.solve`, sweeps, divergences and ``bench``)."""
    values = (eps,) if np.ndim(eps) == 0 else tuple(np.asarray(eps, dtype=object).ravel())
    if not values:
        raise InputError("eps must be a positive number or a non-empty sequence of them; got "
                         f"{eps!r}.")
    return tuple(check_positive("eps", e) for e in values)


#: The statistics of C a relative eps may be taken against (OTT's ``relative_epsilon``).
RELATIVE_EPS = ("mean", "std")


def parse_eps(eps: Any) -> tuple[float, str | None]:
    """``eps`` as ``(value, rule)``: a positive number is absolute (``rule`` None); a
    string ``"std:0.05"`` or ``"mean:0.05"`` is relative, ``value`` times the standard
    deviation or the mean of C's entries (found by a pass over C), as OTT's
    ``relative_epsilon``. InputError for anything else."""
    if isinstance(eps, str) and ":" in eps:
        rule, _, factor = eps.partition(":")
        if rule.strip() not in RELATIVE_EPS or not factor:
            raise InputError(
                f"eps must be a positive number or a relative eps such as 'std:0.05' or "
                f"'mean:0.05' (a factor of C's standard deviation or mean); got {eps!r}.")
        return check_positive("eps", factor.strip()), rule.strip()
    return check_positive("eps", eps), None


def log0(w: np.ndarray) -> np.ndarray:
    """``log(w)`` with ``log(0) = -inf`` and no warning (log weights of zero-weight rows)."""
    with np.errstate(divide="ignore"):
        return np.log(w)


def check_max_iter(max_iter: Any) -> int:
    """``max_iter`` as an int >= 1, or an InputError."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise InputError(f"max_iter must be an integer >= 1; got {max_iter!r}.")
    return int(max_iter)


def _weights(name: str, w: Any, size: int, axis_name: str) -> np.ndarray:
    """Validate one marginal: returns float64 (size, K) with K = 1 for a vector."""
    if w is None:
        return np.full((size, 1), 1.0 / size)
    arr = np.asarray(w.get() if hasattr(w, "get") and not isinstance(w, np.ndarray) else w)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(f"{name}: expected real weights, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.ndim not in (1, 2):
        raise InputError(
            f"{name}: expected shape ({size},) or ({size}, K) for K batched problems, "
            f"got shape {arr.shape}."
        )
    if arr.shape[0] != size:
        raise InputError(
            f"{name} has {arr.shape[0]} entries but the cost has {size} {axis_name}; "
            f"they must match (cost is n x m, a has n entries, b has m)."
        )
    arr2 = arr.reshape(size, -1)
    for bad, what, rule in (
        (~np.isfinite(arr2), "non-finite", "Weights must be finite and non-negative."),
        (arr2 < 0, "negative", "Weights must be non-negative."),
    ):
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise InputError(
                f"{name} contains {int(bad.sum())} {what} value(s); the first is "
                f"{name}[{', '.join(map(str, idx[: arr.ndim]))}] = {arr2[tuple(idx)]}. {rule}"
            )
    zero = arr2.sum(axis=0) == 0
    if zero.any():
        which = f" (column {int(np.argmax(zero))})" if arr.ndim == 2 else ""
        raise InputError(f"{name} is all zeros{which}: a marginal needs positive total mass.")
    return arr2


@dataclass(frozen=True)
class Problem:
    """A validated entropic OT problem (possibly a batch of K marginal pairs sharing C).

    Attributes:
        a: row marginals (n, K), float64.
        b: column marginals (m, K), float64.
        eps: target regularisation.
        rho_a, rho_b: KL penalties on the row/column marginals; ``inf`` means balanced.
        batched: whether the caller passed (n, K)/(m, K) weights (results then carry K values).
    """

    a: np.ndarray
    b: np.ndarray
    eps: float
    rho_a: float = math.inf
    rho_b: float = math.inf
    batched: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``."""
        return self.a.shape[0], self.b.shape[0]

    @property
    def K(self) -> int:
        """Number of marginal pairs solved together."""
        return self.a.shape[1]

    @property
    def balanced(self) -> bool:
        """True when both marginals are hard constraints."""
        return math.isinf(self.rho_a) and math.isinf(self.rho_b)

    def tau(self, eps: float) -> tuple[float, float]:
        """Exponents ``rho / (rho + eps)`` of the f- and g-updates (1 when balanced)."""
        return tuple(1.0 if math.isinf(r) else r / (r + eps) for r in (self.rho_a, self.rho_b))  # type: ignore[return-value]

    @property
    def mass(self) -> np.ndarray:
        """The scale ``t`` (K,) of the weights: ``sum(a)`` when balanced, else the geometric
        mean of ``sum(a)`` and ``sum(b)``. ``tol`` and ``history.error`` are relative to it."""
        sa, sb = self.a.sum(axis=0), self.b.sum(axis=0)
        return sa if self.balanced else np.sqrt(sa) * np.sqrt(sb)

    def normalised(self) -> Problem:
        """The problem with weights ``a / t``, ``b / t`` (``t`` = :attr:`mass`): the solve
        runs on these, so its numbers do not depend on the scale of the weights."""
        t = self.mass
        return dataclasses.replace(self, a=self.a / t, b=self.b / t)

    def shifts(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """``(s_f, s_g)`` (K,) each: the potentials of this problem at ``eps`` are those of
        :meth:`normalised` plus these. From the update ``f = eps log a - tau_a eps LSE``:
        scaling the weights by ``t`` adds ``L = eps log t`` to ``eps log a``, so the shifts
        solve ``s_f = L - tau_a s_g`` and ``s_g = L - tau_b s_f``:
        ``s_f = L (1 - tau_a) / (1 - tau_a tau_b)``, likewise ``s_g``. When balanced only
        ``s_f + s_g = L`` is fixed; we take ``(L, 0)``. The plan scales by
        ``exp((s_f + s_g) / eps)``: ``t`` when balanced, up to ``t**2`` as ``rho -> 0``."""
        L = eps * np.log(self.mass)                                      # (K,)
        ta, tb = self.tau(eps)
        if ta == 1.0 and tb == 1.0:
            return L, np.zeros_like(L)
        d = 1.0 - ta * tb
        return L * (1.0 - ta) / d, L * (1.0 - tb) / d


def make_problem(
    shape: tuple[int, int],
    a: Any,
    b: Any,
    eps: Any,
    rho: Any = math.inf,
    rho_a: Any = None,
    rho_b: Any = None,
) -> Problem:
    """Validate marginals against a cost of ``shape`` and build a :class:`Problem`.

    ``a``/``b`` default to uniform; a vector next to an (·, K) matrix is repeated K times.
    """
    n, m = shape
    eps_f = check_positive("eps", eps)
    ra = check_positive("rho_a" if rho_a is not None else "rho", rho if rho_a is None else rho_a,
                        allow_inf=True)
    rb = check_positive("rho_b" if rho_b is not None else "rho", rho if rho_b is None else rho_b,
                        allow_inf=True)
    A = _weights("a", a, n, "rows")
    B = _weights("b", b, m, "columns")
    batched = (a is not None and np.ndim(a) == 2) or (b is not None and np.ndim(b) == 2)
    if A.shape[1] != B.shape[1]:
        if A.shape[1] == 1:
            A = np.repeat(A, B.shape[1], axis=1)
        elif B.shape[1] == 1:
            B = np.repeat(B, A.shape[1], axis=1)
        else:
            raise InputError(
                f"a has {A.shape[1]} batched columns and b has {B.shape[1]}; "
                "pass the same K for both, or a single vector for one of them."
            )
    if math.isinf(ra) and math.isinf(rb):
        sa, sb = A.sum(axis=0), B.sum(axis=0)
        off = np.abs(sa - sb) > MASS_RTOL * np.maximum(sa, sb)
        if off.any():
            k = int(np.argmax(off))
            where = f" in batch column {k}" if batched else ""
            raise InputError(
                f"balanced problem needs equal masses, but sum(a) = {sa[k]:.12g} and "
                f"sum(b) = {sb[k]:.12g}{where} (relative difference "
                f"{abs(sa[k] - sb[k]) / max(sa[k], sb[k]):.3g} > {MASS_RTOL:g}). Normalise both "
                "to the same total, or pass rho=... for unbalanced transport."
            )
    problem = Problem(a=A, b=B, eps=eps_f, rho_a=ra, rho_b=rb, batched=bool(batched))
    lo, hi = MASS_RANGE if problem.balanced else UNBALANCED_MASS_RANGE
    for name, w in (("a", A), ("b", B)):
        total = w.sum(axis=0)                                            # (K,)
        bad = (total < lo) | (total > hi)
        if bad.any():
            k = int(np.argmax(bad))
            where = f" (batch column {k})" if batched else ""
            kind = "" if problem.balanced else " for an unbalanced problem"
            raise InputError(
                f"{name} sums to {total[k]:.3g}{where}, outside the total masses float64 "
                f"can solve{kind}, [{lo:.3g}, {hi:.3g}]. Multiply a and b by one factor "
                "to bring their total near 1: the plan, costs and marginal errors scale "
                "with it (by the factor itself when balanced).")
    return problem
