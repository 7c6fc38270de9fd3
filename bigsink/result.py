"""The result of a solve: plain, picklable data plus plan helpers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from .costs import CostSource, as_cost
from .errors import InputError

__all__ = ["History", "MarginalError", "SinkhornResult"]


class MarginalError(NamedTuple):
    """L1 marginal errors ``||P 1 - a||_1`` (row) and ``||P^T 1 - b||_1`` (col).

    Floats for a single problem, (K,) arrays for a batch.
    """

    row: Any
    col: Any


@dataclass(frozen=True)
class History:
    """One entry per iteration: its index (1-based), its eps, and the L1 row error of the
    potentials it started from (``inf`` when unknown, e.g. the first iteration of a solve),
    the worst over a batch."""

    iteration: np.ndarray
    eps: np.ndarray
    error: np.ndarray

    def __len__(self) -> int:
        return len(self.iteration)


def _squeeze(x: np.ndarray, batched: bool) -> Any:
    """(·, K) -> (·,) and (K,) -> float for unbatched problems."""
    if batched:
        return x
    out = x[..., 0]
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class SinkhornResult:
    """Potentials, costs and diagnostics of a solve (DESIGN.md §2 conventions).

    The plan is ``P_ij = exp((f_i + g_j - C_ij) / eps)``. For a batch of K problems each
    per-problem field carries a trailing K axis (potentials (n, K), costs (K,)).

    Attributes:
        f: row potentials (n,) or (n, K).
        g: column potentials (m,) or (m, K).
        eps: the regularisation solved for (the last eps stage).
        transport_cost: ``<P, C>`` (Cuturi's d_M^lambda, POT ``sinkhorn2``).
        reg_cost: the primal objective ``<P, C> + eps*KL(P || a b^T)`` plus, when unbalanced,
            ``rho_a*KL(P 1 || a) + rho_b*KL(P^T 1 || b)`` (generalised KL
            ``sum x log(x/y) - x + y``; OTT ``reg_ot_cost``; for unbalanced problems the
            objective of POT ``sinkhorn_unbalanced(reg_type="kl")`` evaluated on its plan; POT's
            own ``total_cost`` drops the ``- x + y`` mass terms and is ~0 at the optimum).
        dual_cost: balanced: ``<a, f> + <b, g> - eps*(mass - 1)``, which equals
            ``<P,C> - eps*H(P)`` at convergence. Unbalanced: the dual objective of ``reg_cost``,
            ``-sum_sides rho<w, exp(-f'/rho) - 1> - eps*(mass - sum(a)*sum(b))`` with
            ``f' = f - eps*log a`` (``<a, f'>`` for a balanced side), equal to ``reg_cost``
            at convergence.
        marginal_error: exact L1 row and column errors of the returned potentials.
        mass: total mass of the plan.
        n_iter: Sinkhorn iterations over all eps stages (each is one pass over C).
        converged: ``max(marginal_error) <= tol`` for every problem of the batch.
        history: per-iteration eps and error.
        eps_stages: the eps schedule that was followed (last entry is ``eps``).
        rho_a, rho_b: marginal penalties (``inf`` when balanced).
        seconds: wall time of the solve.
    """

    f: Any
    g: Any
    eps: float
    transport_cost: Any
    reg_cost: Any
    dual_cost: Any
    marginal_error: MarginalError
    mass: Any
    n_iter: int
    converged: bool
    history: History
    eps_stages: tuple[float, ...]
    rho_a: float = float("inf")
    rho_b: float = float("inf")
    tol: float = 0.0
    seconds: float = 0.0
    cost: CostSource | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the numbers only: the cost source stays with the caller."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cost"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "cost", None)

    @property
    def batched(self) -> bool:
        """Whether this result holds K problems."""
        return np.ndim(self.f) == 2

    def plan(self, cost: Any = None) -> np.ndarray:
        """The dense plan ``P`` (n, m) or (n, m, K), for problems that fit in memory.

        ``cost`` defaults to the cost the solve ran on (kept in-process, not pickled).
        """
        src = as_cost(cost) if cost is not None else self.cost
        if src is None:
            raise InputError(
                "plan() needs the cost matrix: this result was unpickled or loaded, so pass "
                "it again, e.g. result.plan(C)."
            )
        n, m = src.shape
        if (n, m) != (np.shape(self.f)[0], np.shape(self.g)[0]):
            raise InputError(
                f"plan(): cost has shape {(n, m)} but the potentials are for "
                f"{(np.shape(self.f)[0], np.shape(self.g)[0])}."
            )
        from ._xp import to_numpy
        from .kernels import plan_strip

        C = np.asarray(to_numpy(src.rows(0, n)), dtype=np.float64)
        f = np.asarray(to_numpy(self.f), dtype=np.float64).reshape(n, -1)    # (n, K)
        g = np.asarray(to_numpy(self.g), dtype=np.float64).reshape(m, -1)    # (m, K)
        P, _ = plan_strip(C, 0, f, g, self.eps)                   # (n, m, K)
        return P if self.batched else P[:, :, 0]

    def save(self, path: Any, *, overwrite: bool = False) -> str:
        """Write this result to a Zarr group at ``path`` (atomically); returns the path.

        Read it back with :func:`bigsink.load_result` (no cluster needed). See
        :func:`bigsink.io.save_result`.
        """
        from .io import save_result

        return save_result(self, path, overwrite=overwrite)

    def summary(self) -> str:
        """A short human-readable report."""
        me = self.marginal_error
        lines = [
            f"bigsink Sinkhorn: {'converged' if self.converged else 'NOT converged'} "
            f"in {self.n_iter} iterations over {len(self.eps_stages)} eps stage(s), "
            f"{self.seconds:.3f} s",
            f"  eps              {self.eps:g}",
            f"  transport_cost   {self.transport_cost}",
            f"  reg_cost         {self.reg_cost}",
            f"  dual_cost        {self.dual_cost}",
            f"  marginal error   row {me.row}  col {me.col}  (tol {self.tol:g})",
            f"  plan mass        {self.mass}",
        ]
        return "\n".join(lines)
