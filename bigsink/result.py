"""The result of a solve: plain, picklable data, plan helpers, and its own save and load
(a Zarr group, written atomically, readable without a cluster)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from ._fs import FORMAT, atomic_path, check_target, local_path
from ._version import __version__
from ._xp import to_numpy
from .costs import CostSource, as_cost
from .errors import InputError
from .kernels import plan_strip
from .operators import apply_plan, cost_gradients, log_potentials

__all__ = ["History", "LevelRun", "MarginalError", "SinkhornResult", "load_result", "save_result"]


class MarginalError(NamedTuple):
    """L1 marginal errors ``||P 1 - a||_1`` (row) and ``||P^T 1 - b||_1`` (col).

    Floats for a single problem, (K,) arrays for a batch.
    """

    row: Any
    col: Any


@dataclass(frozen=True)
class LevelRun:
    """What one coarse level of a multiscale solve ran (:mod:`bigsink.solver.multiscale`):
    its clusters ``points`` (n, m), its eps stages, iterations and seconds."""

    points: tuple[int, int]
    eps_stages: tuple[float, ...]
    iterations: int
    seconds: float


@dataclass(frozen=True)
class History:
    """One entry per iteration: its index (1-based), its eps, the L1 row error of the
    potentials it started from relative to the total mass (the quantity ``tol`` bounds;
    ``inf`` when unknown, e.g. the first iteration of a solve), the worst over a batch,
    and the share of the cost's blocks it read (``active``: 1
    without truncation)."""

    iteration: np.ndarray
    eps: np.ndarray
    error: np.ndarray
    active: np.ndarray = field(default_factory=lambda: np.ones(0))

    def __post_init__(self) -> None:
        if self.active is None or len(self.active) != len(self.iteration):  # older saves
            object.__setattr__(self, "active", np.ones(len(self.iteration)))

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
        placement: where the scaling path's kernel was kept and why, or why it was not
            (the solver's :class:`~bigsink.solver.config.Placement`; "" when loaded from an
            older save).
        relative_eps: how a relative ``eps`` (``"std:0.05"``) was set, e.g.
            ``"std:0.05 (std of C 0.213)"``; "" for an absolute one.
        active_fraction: the share of the cost's blocks the last pass touched (None
            without ``truncate``).
        truncation_bound: the certified L1 bound of what the last pass's truncation left
            out of each marginal (None without ``truncate``).
        levels: what each coarse level of a multiscale solve ran (:class:`LevelRun`,
            coarsest first); empty without one.
        multiscale: how the multiscale hierarchy was used, or why not ("" when off).
        executor: where the solve ran: ``"local, 2 threads"``, or the Dask scheduler, its
            workers, whether it was your (default) client, and its dashboard.
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
    placement: str = ""
    relative_eps: str = ""
    active_fraction: float | None = None
    truncation_bound: float | None = None
    levels: tuple[LevelRun, ...] = ()
    multiscale: str = ""
    executor: str = ""
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
        src = self.checked_cost(cost, "plan()")
        f, g = self.potentials()
        C = np.asarray(to_numpy(src.rows(0, src.shape[0])), dtype=np.float64)
        P, _ = plan_strip(C, 0, f, g, self.eps)                   # (n, m, K)
        return P if self.batched else P[:, :, 0]

    def checked_cost(self, cost: Any = None, use: str = "this") -> CostSource:
        """``cost`` as a cost source, or the one the solve ran on, checked against the
        potentials' shape (InputError naming ``use``, the call that needs it)."""
        src = as_cost(cost) if cost is not None else self.cost
        if src is None:
            raise InputError(
                f"{use} needs the cost matrix: this result was unpickled or loaded, so pass "
                "it again, e.g. result.plan(C).")
        shape = (np.shape(self.f)[0], np.shape(self.g)[0])
        if src.shape != shape:
            raise InputError(f"{use}: cost has shape {src.shape} but the potentials are for "
                             f"{shape}; pass the cost the result was solved on.")
        return src

    def potentials(self) -> tuple[np.ndarray, np.ndarray]:
        """``f`` (n, K) and ``g`` (m, K) as float64 NumPy (K = 1 for one problem)."""
        n, m = np.shape(self.f)[0], np.shape(self.g)[0]
        f = np.asarray(to_numpy(self.f), dtype=np.float64).reshape(n, -1)
        return f, np.asarray(to_numpy(self.g), dtype=np.float64).reshape(m, -1)

    def _out(self, x: np.ndarray, vector: bool) -> np.ndarray:
        """(size, d, K) -> (size, d) or (size,) for one problem, (size, d, K) or (size, K)
        for a batch."""
        x = x if self.batched else x[..., 0]
        return x[:, 0] if vector else x

    def apply(self, v: Any, cost: Any = None, axis: int = 1, *, executor: Any = None,
              client: Any = None) -> np.ndarray:
        """The plan as an operator, never formed: ``P v`` (``axis=1``; v (m,) or (m, d))
        or ``P^T u`` (``axis=0``; u (n,) or (n, d)), one pass over C on any executor
        (:func:`bigsink.operators.apply_plan`). Shape (n,) / (n, d) (a batch: a trailing
        K axis). At the optimum this is also the gradient of ``reg_cost`` by ``C``,
        applied to ``v``."""
        if axis not in (0, 1):
            raise InputError(f"axis must be 1 (P v) or 0 (P^T u); got {axis!r}.")
        src = self.checked_cost(cost, "apply()")
        f, g = self.potentials()
        V, U = (v, None) if axis == 1 else (None, v)
        rows, cols = apply_plan(f, g, self.eps, src, V, U, executor, client)
        return self._out(rows if axis == 1 else cols, np.ndim(v) == 1)

    def map_sources(self, y: Any = None, cost: Any = None, *, executor: Any = None,
                    client: Any = None) -> np.ndarray:
        """The barycentric projection of the sources, ``(P Y)_i / (P 1)_i`` (n, d): where
        the plan sends each source point on average. ``Y`` defaults to the target points
        of a :class:`~bigsink.costs.PointCloudCost`. One pass (``P [Y, 1]``); dividing by
        the plan's own row sums (``a`` at convergence) keeps it a weighted mean."""
        src = self.checked_cost(cost)
        Y = _points(y, getattr(src, "y", None), "y", src.shape[1])
        f, g = self.potentials()
        rows, _ = apply_plan(f, g, self.eps, src, np.hstack([Y, np.ones((len(Y), 1))]), None,
                             executor, client)
        with np.errstate(invalid="ignore", divide="ignore"):         # 0-weight rows: NaN
            return self._out(rows[:, :-1] / rows[:, -1:], False)

    def map_targets(self, x: Any = None, cost: Any = None, *, executor: Any = None,
                    client: Any = None) -> np.ndarray:
        """The barycentric projection of the targets, ``(P^T X)_j / (P^T 1)_j`` (m, d);
        ``X`` defaults to the source points of a point cloud."""
        src = self.checked_cost(cost)
        X = _points(x, getattr(src, "x", None), "x", src.shape[0])
        f, g = self.potentials()
        _, cols = apply_plan(f, g, self.eps, src, None, np.hstack([X, np.ones((len(X), 1))]),
                             executor, client)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._out(cols[:, :-1] / cols[:, -1:], False)

    def _weight_gradient(self, side: int, cost: Any, centred: bool, executor: Any,
                         client: Any) -> np.ndarray:
        """The gradient of ``reg_cost`` by the row (``side`` 0) or column weights: ``F -
        eps``, where ``F`` is the potential of the KL form (``f - eps log a`` at the
        optimum; the c-transform of the other side's potential, finite even where a weight
        is 0: one pass over C); ``centred``: ``F - mean(F)``, the gradient within the
        simplex (weights that keep their sum), where the constant drops out."""
        if not (math.isinf(self.rho_a) and math.isinf(self.rho_b)):
            raise InputError("grad_a / grad_b are derived for balanced results only.")
        f, g = self.potentials()
        F = log_potentials(f, g, self.eps, self.checked_cost(cost), side, executor, client)
        F = F - F.mean(axis=0) if centred else F - self.eps
        return F if self.batched else F[:, 0]

    def grad_a(self, cost: Any = None, *, centred: bool = True, executor: Any = None,
               client: Any = None) -> np.ndarray:
        """The gradient of ``reg_cost`` by the source weights ``a`` (n,) (envelope theorem,
        balanced results); ``centred`` (default) within the simplex."""
        return self._weight_gradient(0, cost, centred, executor, client)

    def grad_b(self, cost: Any = None, *, centred: bool = True, executor: Any = None,
               client: Any = None) -> np.ndarray:
        """The gradient of ``reg_cost`` by the target weights ``b`` (m,); see
        :meth:`grad_a`."""
        return self._weight_gradient(1, cost, centred, executor, client)

    def _point_gradients(self, cost: Any, executor: Any, client: Any
                         ) -> tuple[np.ndarray, np.ndarray]:
        """``(grad_x, grad_y)`` of ``reg_cost`` (envelope theorem: the plan-weighted
        gradients of the cost), one pass (:func:`bigsink.operators.cost_gradients`)."""
        f, g = self.potentials()
        gx, gy = cost_gradients(f, g, self.eps, self.checked_cost(cost), executor, client)
        return self._out(gx, False), self._out(gy, False)

    def grad_x(self, cost: Any = None, *, executor: Any = None, client: Any = None
               ) -> np.ndarray:
        """The gradient of ``reg_cost`` by the source points of a
        :class:`~bigsink.costs.PointCloudCost`, ``sum_j P_ij grad_x c(x_i, y_j)`` (n, d)."""
        return self._point_gradients(cost, executor, client)[0]

    def grad_y(self, cost: Any = None, *, executor: Any = None, client: Any = None
               ) -> np.ndarray:
        """The gradient of ``reg_cost`` by the target points, ``sum_i P_ij grad_y c(x_i,
        y_j)`` (m, d)."""
        return self._point_gradients(cost, executor, client)[1]

    def save(self, path: Any, *, overwrite: bool = False) -> str:
        """Write this result to a Zarr group at ``path`` (atomically); returns the path.

        Read it back with :func:`bigsink.load_result` (no cluster needed). See
        :func:`save_result`.
        """
        return save_result(self, path, overwrite=overwrite)

    def __repr__(self) -> str:
        """One line: shape, eps, iterations, errors, convergence (no potentials)."""
        K = f", K={np.shape(self.f)[1]}" if np.ndim(self.f) == 2 else ""
        me = self.marginal_error
        return (f"SinkhornResult(shape=({len(self.f)}, {len(self.g)}){K}, eps={self.eps:g}, "
                f"n_iter={self.n_iter}, marginal_error=(row={np.max(me.row):.3g}, "
                f"col={np.max(me.col):.3g}), converged={self.converged}, "
                f"transport_cost={np.round(self.transport_cost, 10)})")

    def summary(self) -> str:
        """A short human-readable report."""
        me = self.marginal_error
        lines = [
            f"bigsink Sinkhorn: {'converged' if self.converged else 'NOT converged'} "
            f"in {self.n_iter} iterations over {len(self.eps_stages)} eps stage(s), "
            f"{self.seconds:.3f} s",
            f"  eps              {self.eps:g}"
            + (f"  ({self.relative_eps})" if self.relative_eps else ""),
            f"  transport_cost   {self.transport_cost}",
            f"  reg_cost         {self.reg_cost}",
            f"  dual_cost        {self.dual_cost}",
            f"  marginal error   row {me.row}  col {me.col}  (tol {self.tol:g})",
            f"  plan mass        {self.mass}",
        ]
        if self.executor:
            lines.append(f"  executor         {self.executor}")
        if self.placement:
            lines.append(f"  kernel           {self.placement}")
        if self.active_fraction is not None and self.truncation_bound is not None:
            lines.append(f"  truncation       {self.active_fraction:.1%} of blocks touched, "
                         f"certified bound {self.truncation_bound:.2g} (L1)")
        if self.multiscale:
            lines.append(f"  multiscale       {self.multiscale}")
        for run in self.levels:
            lines.append(f"    {run.points[0]} x {run.points[1]} clusters: eps "
                         f"{', '.join(f'{e:g}' for e in run.eps_stages)}, "
                         f"{run.iterations} iterations, {run.seconds:.2f} s")
        return "\n".join(lines)


def _points(given: Any, default: Any, name: str, size: int) -> np.ndarray:
    """Points to map (size, d): ``given``, else the point cloud's own (``default``)."""
    pts = default if given is None else given
    if pts is None:
        raise InputError(f"{name}: pass the points to map ({size}, d); only a point cloud "
                         "cost has its own.")
    arr = np.asarray(to_numpy(pts), dtype=np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != size:
        raise InputError(f"{name}: expected ({size}, d) points; got shape {np.shape(pts)}.")
    return arr


# ---------------------------------------------------------------------------------------------
# save and load


_ARRAY_FIELDS = ("f", "g", "transport_cost", "reg_cost", "dual_cost", "mass")
_SCALAR_FIELDS = ("eps", "rho_a", "rho_b", "tol", "seconds")


def _put(group: Any, name: str, value: Any) -> str:
    """Store ``value`` (float or array) as a float/int array; returns its kind for loading."""
    arr = np.asarray(to_numpy(value))
    kind = "float" if arr.ndim == 0 else "array"
    chunks = arr.shape if arr.ndim and all(arr.shape) else None
    z = group.create_array(name, shape=arr.shape, dtype=arr.dtype, compressors=None,
                           chunks=chunks if chunks is not None else "auto")
    z[...] = arr
    return kind


def _get(group: Any, name: str, kind: str) -> Any:
    """Read back what :func:`_put` stored."""
    arr = np.asarray(group[name][...])
    return float(arr) if kind == "float" else arr


def save_result(result: SinkhornResult, path: Any, *, overwrite: bool = False) -> str:
    """Write ``result`` to a Zarr group at ``path`` (atomically); returns the path.

    Arrays ``f``, ``g``, the costs, the marginal errors, the history and the eps stages are
    stored as arrays (exactly, float64); ``n_iter``, ``converged`` and how to read each field
    back are attributes. :func:`load_result` reads it without any cluster.
    """
    import zarr

    target = local_path("path", path)
    check_target("path", target, overwrite)
    kinds: dict[str, str] = {}
    with atomic_path(target, overwrite) as tmp:
        group = zarr.open_group(tmp, mode="w")
        for name in (*_ARRAY_FIELDS, *_SCALAR_FIELDS):
            kinds[name] = _put(group, name, getattr(result, name))
        kinds["marginal_error_row"] = _put(group, "marginal_error_row", result.marginal_error.row)
        kinds["marginal_error_col"] = _put(group, "marginal_error_col", result.marginal_error.col)
        _put(group, "eps_stages", np.asarray(result.eps_stages, dtype=np.float64))
        _put(group, "history_iteration", np.asarray(result.history.iteration, dtype=np.int64))
        _put(group, "history_eps", np.asarray(result.history.eps, dtype=np.float64))
        _put(group, "history_error", np.asarray(result.history.error, dtype=np.float64))
        _put(group, "history_active", np.asarray(result.history.active, dtype=np.float64))
        group.attrs.update({
            "format": FORMAT, "kind": "result", "bigsink_version": __version__,
            "n_iter": int(result.n_iter), "converged": bool(result.converged),
            "batched": bool(result.batched), "kinds": kinds, "placement": result.placement,
            "relative_eps": result.relative_eps,
            "active_fraction": result.active_fraction,
            "truncation_bound": result.truncation_bound,
            "multiscale": result.multiscale, "executor": result.executor,
            "levels": [dataclasses.asdict(run) for run in result.levels],
        })
    return target


def load_result(path: Any) -> SinkhornResult:
    """Read a result written by :meth:`SinkhornResult.save` / :func:`save_result`.

    The result has no cost attached: pass the cost to ``plan(C)`` and the plan helpers.
    """
    import zarr

    where = os.fspath(path) if hasattr(path, "__fspath__") else str(path)
    if "://" not in where and not os.path.isdir(where):
        raise InputError(f"path: no saved result at {where!r} (not a directory).")
    try:
        group: Any = zarr.open_group(where, mode="r")
    except Exception as exc:
        raise InputError(f"path: {where!r} is not a Zarr group: {exc}") from exc
    attrs: dict[str, Any] = dict(group.attrs)
    if attrs.get("format") != FORMAT or attrs.get("kind") != "result":
        raise InputError(
            f"path: {where!r} is not a saved bigsink result (no format/kind attributes)."
        )
    kinds = attrs["kinds"]
    values = {name: _get(group, name, kinds[name]) for name in (*_ARRAY_FIELDS, *_SCALAR_FIELDS)}
    history = History(
        np.asarray(group["history_iteration"][...]),
        np.asarray(group["history_eps"][...]),
        np.asarray(group["history_error"][...]),
        np.asarray(group["history_active"][...]) if "history_active" in group
        else np.ones(0),                                             # older saves: all 1
    )
    return SinkhornResult(
        **values,
        marginal_error=MarginalError(
            _get(group, "marginal_error_row", kinds["marginal_error_row"]),
            _get(group, "marginal_error_col", kinds["marginal_error_col"]),
        ),
        n_iter=int(attrs["n_iter"]),
        converged=bool(attrs["converged"]),
        history=history,
        eps_stages=tuple(float(e) for e in group["eps_stages"][...]),
        placement=str(attrs.get("placement", "")),
        relative_eps=str(attrs.get("relative_eps", "")),
        active_fraction=attrs.get("active_fraction"),
        truncation_bound=attrs.get("truncation_bound"),
        multiscale=str(attrs.get("multiscale", "")),
        executor=str(attrs.get("executor", "")),
        levels=tuple(LevelRun((int(r["points"][0]), int(r["points"][1])),
                              tuple(float(e) for e in r["eps_stages"]), int(r["iterations"]),
                              float(r["seconds"])) for r in attrs.get("levels", ())),
    )
