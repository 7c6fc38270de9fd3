"""Use the plan of a result without forming it: write it, its top entries, its marginals.

Each is one strip job through the executor contract (so it runs on a cluster with
``client=``), computing ``P_ij = exp((f_i + g_j - C_ij)/eps)`` from the potentials strip by
strip: :func:`write_plan` (blockwise to a Zarr array, atomically), :func:`plan_topk`
(per-row largest entries), :func:`plan_marginals` (``P 1``, ``P^T 1``, ``<P, C>``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._fs import FORMAT, atomic_path, check_target, local_path
from ._version import __version__
from ._xp import to_numpy
from .costs import CostSource
from .errors import InputError
from .executors import StripJob, make_executor
from .kernels import plan_strip, topk_strip
from .result import SinkhornResult
from .solver import evaluate

__all__ = ["PlanMarginals", "TopK", "plan_marginals", "plan_topk", "write_plan"]


@contextmanager
def _session(src: CostSource, width: int, executor: Any, client: Any) -> Iterator[Any]:
    """An executor session over ``src`` (closed on exit)."""
    session = make_executor(executor, client).open(src, width)
    try:
        yield session
    finally:
        session.close()


def write_plan_strip(
    C: Any, start: int, f: Any, g: Any, eps: float, path: Any, batched: Any
) -> tuple[None, int]:
    """Strip kernel: write rows ``start:start+r`` of the plan to the Zarr array at ``path``.

    The array's chunk rows never straddle two strips (see :func:`write_plan`), so strips
    write disjoint chunks; the calls of one strip (chunks of it, see
    :func:`~bigsink.executors.base.apply_kernel`) run one after another. Returns the number
    of rows written (merged by addition).
    """
    import zarr

    P, _ = plan_strip(C, start, f, g, eps)                             # (r, m, K)
    P = np.asarray(to_numpy(P))
    if not bool(np.asarray(batched)):
        P = P[:, :, 0]                                                 # (r, m)
    zarr.open_array(str(path), mode="r+")[start:start + P.shape[0]] = P
    return None, int(P.shape[0])


def _chunk_rows(session: Any, n: int) -> int:
    """Largest chunk height whose boundaries every strip boundary respects.

    The gcd of the strips' starts (and of ``n``); 1 row when the session does not expose
    its strips (always safe).
    """
    strips = getattr(session, "strips", None)
    if not strips:
        return 1
    rows = 0
    for s0, s1 in strips:
        rows = math.gcd(rows, s0)
        rows = math.gcd(rows, s1) if s1 < n else rows
    return rows or n


def write_plan(
    result: SinkhornResult,
    cost: Any,
    path: Any,
    *,
    dtype: Any = "float64",
    col_chunk: int | None = None,
    compressors: Any = None,
    executor: Any = None,
    client: Any = None,
    overwrite: bool = False,
) -> str:
    """Write the plan ``P_ij = exp((f_i + g_j - C_ij)/eps)`` blockwise to a Zarr array.

    One strip job through the executor contract (on the cluster with ``client=``): each
    strip computes its rows of P from one read of C and writes them itself; only a row count
    returns. Output chunk rows are aligned to the strips so no two strips write one chunk.
    Shape (n, m), or (n, m, K) for a batched result. Written atomically; returns the path.

    Args:
        result: a solve's result (or a loaded one).
        cost: the cost it was solved on (array, cost source or Zarr path).
        path: local directory to create.
        dtype: stored element type.
        col_chunk: chunk width (default: the cost's block width).
        compressors: Zarr compressors (default none).
        executor, client: where the strips run, as in :func:`bigsink.solve`.
        overwrite: replace an existing array at ``path``.
    """
    import zarr

    src = result.checked_cost(cost, "the plan")
    f, g = result.potentials()
    target = local_path("path", path)
    check_target("path", target, overwrite)
    n, m = src.shape
    K = f.shape[1]
    width = int(col_chunk or src.grid.block_shape[1])
    with atomic_path(target, overwrite) as tmp, _session(src, K, executor, client) as session:
        rows = _chunk_rows(session, n)
        shape: tuple[int, ...] = (n, m, K) if result.batched else (n, m)
        chunks: tuple[int, ...] = (rows, min(width, m), K)[: len(shape)]
        arr = zarr.create_array(tmp, shape=shape, chunks=chunks, dtype=np.dtype(dtype),
                                compressors=compressors, fill_value=0)
        arr.attrs.update({"format": FORMAT, "kind": "plan", "eps": float(result.eps),
                          "bigsink_version": __version__})
        _, written = session.run(StripJob(
            write_plan_strip, operator.add, (f,), (g, float(result.eps), tmp, result.batched)
        ))
        if written != n:
            raise RuntimeError(f"write_plan: {written} of {n} rows were written.")
    return target


@dataclass(frozen=True)
class TopK:
    """The ``k`` largest plan entries of each row: a sparse export of the plan.

    Attributes:
        indices: column indices (n, k) (or (n, k, K) batched), largest entry first.
        values: the plan entries ``P_ij`` at those indices, same shape.
        shape: ``(n, m)`` of the full plan.
    """

    indices: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    def to_sparse(self, problem: int = 0) -> Any:
        """The top-k entries as a ``scipy.sparse.csr_array`` (n, m) (needs SciPy).

        ``problem`` picks one problem of a batched result.
        """
        try:
            from scipy import sparse
        except ImportError as exc:  # pragma: no cover - scipy is a test dependency
            raise ImportError("TopK.to_sparse needs SciPy: pip install scipy") from exc
        idx, val = self.indices, self.values
        if idx.ndim == 3:
            idx, val = idx[:, :, problem], val[:, :, problem]
        n, k = idx.shape
        rows = np.repeat(np.arange(n), k)
        return sparse.csr_array((val.ravel(), (rows, idx.ravel())), shape=self.shape)


def plan_topk(
    result: SinkhornResult, cost: Any, k: int, *, executor: Any = None, client: Any = None
) -> TopK:
    """Per-row top-``k`` entries of the plan (one strip job; O(n k) numbers return).

    Ties are broken by the lower column index.
    """
    src = result.checked_cost(cost, "the plan")
    f, g = result.potentials()
    n, m = src.shape
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= m:
        raise InputError(f"k must be an integer in [1, m={m}]; got {k!r}.")
    with _session(src, f.shape[1], executor, client) as session:
        packed, _ = session.run(StripJob(topk_strip, _no_partial, (f,), (g, float(result.eps),
                                                                         int(k))))
    packed = np.asarray(packed)                                        # (n, k, K, 2)
    idx = packed[..., 0].astype(np.int64)
    val = packed[..., 1]
    if not result.batched:
        idx, val = idx[:, :, 0], val[:, :, 0]
    return TopK(idx, val, (n, m))


def _no_partial(p: Any, q: Any) -> None:
    """Merge of strip jobs whose kernels return no partial."""
    return None


class PlanMarginals(NamedTuple):
    """Marginals of the plan of given potentials: ``P 1`` (n,) and ``P^T 1`` (m,) (or (·, K))
    and ``<P, C>``."""

    rows: Any
    cols: Any
    transport_cost: Any


def plan_marginals(
    result: SinkhornResult, cost: Any, *, executor: Any = None, client: Any = None
) -> PlanMarginals:
    """Row and column sums of the returned plan and ``<P, C>`` (one pass over C).

    Uses the solver's own evaluation job (:func:`bigsink.kernels.evaluate_strip`).
    """
    src = result.checked_cost(cost, "the plan")
    f, g = result.potentials()
    with _session(src, f.shape[1], executor, client) as session:
        ev = evaluate(session, f, g, float(result.eps))
    if result.batched:
        return PlanMarginals(ev.rows, ev.cols, ev.transport_cost)
    return PlanMarginals(ev.rows[:, 0], ev.cols[:, 0], float(ev.transport_cost[0]))

