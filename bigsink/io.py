"""Reading and writing bigsink's data: cost matrices, results, plans.

Every writer here builds its output under a temporary name in the destination's parent
directory and renames it into place only once complete, so a crash or an error never leaves
a partial array or group at the requested path. Outputs are Zarr v3 stores on the local file
system (a rename is atomic there; object stores have no such operation).

- :func:`write_cost`: a cost matrix from two point clouds, one task per chunk, in parallel on
  a thread pool or a Dask cluster.
- :func:`save_result` / :func:`load_result`: a :class:`~bigsink.result.SinkhornResult` as a
  Zarr group, readable without a cluster.
- :func:`write_plan`, :func:`plan_topk`, :func:`plan_marginals`: the plan of a result, as strip
  jobs through the executor contract (so they run on a cluster with ``client=``).
"""

from __future__ import annotations

import math
import operator
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._xp import to_numpy
from .costs import CostSource, as_cost
from .errors import InputError, NumericalError
from .executors import StripJob, make_executor
from .kernels import plan_strip, topk_strip
from .pointcloud import METRICS, PointCloudCost
from .result import History, MarginalError, SinkhornResult

__all__ = [
    "PlanMarginals",
    "TopK",
    "atomic_dir",
    "load_result",
    "plan_marginals",
    "plan_topk",
    "save_result",
    "write_cost",
    "write_plan",
]

#: Default chunk side of a written cost matrix (2048^2 float32 = 16 MiB per chunk).
COST_CHUNK = 2048
#: Format marker stored in the attributes of everything written here.
FORMAT = "bigsink"


def _version() -> str:
    """bigsink's version (imported late: this module is imported by the package)."""
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# atomic output directories


def _local_path(name: str, path: Any) -> str:
    """``path`` as a local file-system path, or an InputError for URLs."""
    where = os.fspath(path) if hasattr(path, "__fspath__") else str(path)
    if "://" in where:
        raise InputError(
            f"{name}: {where!r} is a URL; bigsink writes outputs to local directories only "
            "(a rename is atomic there). Write locally, then copy to the object store."
        )
    return os.path.abspath(where)


def _check_target(name: str, path: str, overwrite: bool) -> None:
    """InputError unless ``path`` may be written (free, or ``overwrite``) in an existing dir."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise InputError(f"{name}: the parent directory {parent!r} does not exist; create it.")
    if os.path.lexists(path) and not overwrite:
        raise InputError(
            f"{name}: {path!r} already exists. Choose another path or pass overwrite=True "
            "(--overwrite on the command line)."
        )


@contextmanager
def atomic_dir(path: str, overwrite: bool) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    On any exception the temporary directory is removed and nothing appears at ``path``. With
    ``overwrite`` an existing ``path`` is moved aside and removed only after the rename (for
    an instant between the two renames neither is at ``path``; readers never see a partial
    one). Checkpoint writers can use this too.
    """
    parent, base = os.path.split(path)
    tmp = os.path.join(parent, f".{base}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(path):
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"{path!r} appeared while it was being written; not replacing it.")
        old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex[:12]}")
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)


def _progress_bar(total: int, desc: str, unit: str, progress: bool | None) -> Any:
    """A tqdm bar; ``None`` shows it on a terminal only, False never."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False,
                disable=None if progress is None else not progress)


# ---------------------------------------------------------------------------------------------
# cost matrices


@dataclass(frozen=True)
class CostChunk:
    """One chunk of a cost matrix to compute and (when ``path`` is set) write.

    ``source`` is a :class:`PointCloudCost` over just the chunk's points, so a task carries
    O((r + c) d) numbers, never the whole clouds.
    """

    path: str | None
    rows: tuple[int, int]
    cols: tuple[int, int]
    source: PointCloudCost


def compute_chunk(item: CostChunk) -> tuple[float, float]:
    """Compute one chunk, write it when ``item.path`` is set; its ``(min, max)``.

    Raises NumericalError naming the chunk when a value is not finite (e.g. float32
    overflow of a large squared distance), so a bad chunk fails the whole write.
    """
    r0, r1 = item.rows
    c0, c1 = item.cols
    with np.errstate(over="ignore"):
        block = np.asarray(to_numpy(item.source.rows(0, r1 - r0)))        # (r, c)
    if not np.all(np.isfinite(block)):
        bad = np.argwhere(~np.isfinite(block))[0]
        raise NumericalError(
            f"cost chunk rows {r0}:{r1}, cols {c0}:{c1} has a non-finite value at "
            f"C[{r0 + bad[0]}, {c0 + bad[1]}] = {block[tuple(bad)]} in {block.dtype}. Rescale "
            "the points, pass scale=..., or use dtype='float64'."
        )
    if item.path is not None:
        import zarr

        zarr.open_array(item.path, mode="r+")[r0:r1, c0:c1] = block
    return float(block.min()), float(block.max())


def _run_items(
    fn: Callable[[Any], Any], items: Sequence[Any], client: Any, threads: int | None,
    bar: Any,
) -> list[Any]:
    """``[fn(item) for item in items]`` on Dask (``client``) or on a local thread pool."""
    if client is not None:
        from .executors.dask_io import run_items

        return run_items(client, fn, items, on_done=lambda: bar.update(1))

    def one(item: Any) -> Any:
        out = fn(item)
        bar.update(1)
        return out

    workers = max(1, min(len(items), threads or os.cpu_count() or 1))
    if workers == 1:
        return [one(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(one, items))
    finally:  # on failure: drop queued items, wait for running ones (no late writes)
        pool.shutdown(wait=True, cancel_futures=True)


def _parse_chunks(chunks: Any, shape: tuple[int, int]) -> tuple[int, int]:
    """Validate ``chunks=(r, c)``; default square chunks of :data:`COST_CHUNK`."""
    if chunks is None:
        return min(shape[0], COST_CHUNK), min(shape[1], COST_CHUNK)
    try:
        r, c = (int(v) for v in chunks)
    except (TypeError, ValueError):
        raise InputError(
            f"chunks must be a pair (rows, cols) of positive ints; got {chunks!r}."
        ) from None
    if r < 1 or c < 1:
        raise InputError(f"chunks must be positive; got {chunks!r}.")
    return min(r, shape[0]), min(c, shape[1])


def write_cost(
    x: Any,
    y: Any,
    path: Any,
    metric: str = "sqeuclidean",
    *,
    p: float = 2.0,
    scale: float | str | None = None,
    chunks: tuple[int, int] | None = None,
    dtype: Any = "float32",
    compressors: Any = None,
    client: Any = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Any:
    """Write the cost matrix ``C_ij = metric(x_i, y_j) / scale`` to a Zarr v3 array.

    Each chunk is computed (by :class:`PointCloudCost`) and written by exactly one task, on a
    Dask cluster when ``client`` is given, else on a local thread pool. The array is built
    under a temporary name next to ``path`` and renamed when complete: a failure leaves
    nothing at ``path``.

    Args:
        x: source points (n, d) or (n,).
        y: target points (m, d) or (m,).
        path: local directory to create.
        metric: "sqeuclidean", "euclidean" or "minkowski" (with ``p``).
        p: Minkowski exponent.
        scale: divide C by this: None (1), a positive float, or "max" (C's maximum, so C lies
            in [0, 1]; costs one extra compute-only pass).
        chunks: chunk shape (rows, cols); default up to 2048 x 2048.
        dtype: stored element type (default float32).
        compressors: Zarr compressors; default none (a distance matrix barely compresses and
            compression halves the read speed, DESIGN.md §3).
        client: a ``distributed.Client`` or scheduler address: compute and write on Dask.
        threads: local thread-pool size (default: all cores); ignored with ``client``.
        overwrite: replace an existing array at ``path``.
        progress: progress bar of chunks written; None shows it on a terminal only.

    Returns:
        The :class:`~bigsink.zarr_cost.ZarrCost` over the new array. Its attributes record
        the metric, p, scale, value range and shapes.
    """
    import zarr

    from .zarr_cost import ZarrCost

    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}; got {metric!r}.")
    np_dtype = np.dtype(dtype)
    if np_dtype.kind != "f":
        raise InputError(f"dtype must be a floating type such as 'float32'; got {dtype!r}.")
    if isinstance(scale, str) and scale != "max":
        raise InputError(f"scale must be None, a positive number or 'max'; got {scale!r}.")
    fixed_scale = 1.0 if scale is None or isinstance(scale, str) else float(scale)
    cloud = PointCloudCost(x, y, metric, p=p, scale=fixed_scale, dtype=np_dtype)  # validates
    target = _local_path("path", path)
    _check_target("path", target, overwrite)
    n, m = cloud.shape
    rc = _parse_chunks(chunks, (n, m))

    def items(where: str | None, s: float, kind: Any) -> list[CostChunk]:
        out = []
        for r0 in range(0, n, rc[0]):
            for c0 in range(0, m, rc[1]):
                r1, c1 = min(r0 + rc[0], n), min(c0 + rc[1], m)
                src = PointCloudCost(cloud.x[r0:r1], cloud.y[c0:c1], metric, p=p, scale=s,
                                     dtype=kind, block_shape=(r1 - r0, c1 - c0))
                out.append(CostChunk(where, (r0, r1), (c0, c1), src))
        return out

    n_chunks = math.ceil(n / rc[0]) * math.ceil(m / rc[1])
    if scale == "max":  # compute-only pass for the maximum (in float64: no overflow)
        with _progress_bar(n_chunks, "cost max", "chunk", progress) as bar:
            ranges = _run_items(compute_chunk, items(None, 1.0, np.float64), client, threads, bar)
        top = max(hi for _, hi in ranges)
        fixed_scale = top if top > 0 else 1.0
    with atomic_dir(target, overwrite) as tmp:
        arr = zarr.create_array(tmp, shape=(n, m), chunks=rc, dtype=np_dtype,
                                compressors=compressors, fill_value=0)
        with _progress_bar(n_chunks, "write_cost", "chunk", progress) as bar:
            ranges = _run_items(compute_chunk, items(tmp, fixed_scale, np_dtype), client,
                                threads, bar)
        arr.attrs.update({
            "format": FORMAT, "kind": "cost", "bigsink_version": _version(),
            "metric": metric, "p": float(p), "scale": float(fixed_scale),
            "scale_rule": scale if isinstance(scale, str) else "fixed",
            "min": min(lo for lo, _ in ranges), "max": max(hi for _, hi in ranges),
            "shape": [n, m], "x_shape": list(cloud.x.shape), "y_shape": list(cloud.y.shape),
        })
    return ZarrCost(target)


# ---------------------------------------------------------------------------------------------
# results

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

    target = _local_path("path", path)
    _check_target("path", target, overwrite)
    kinds: dict[str, str] = {}
    with atomic_dir(target, overwrite) as tmp:
        group = zarr.open_group(tmp, mode="w")
        for name in (*_ARRAY_FIELDS, *_SCALAR_FIELDS):
            kinds[name] = _put(group, name, getattr(result, name))
        kinds["marginal_error_row"] = _put(group, "marginal_error_row", result.marginal_error.row)
        kinds["marginal_error_col"] = _put(group, "marginal_error_col", result.marginal_error.col)
        _put(group, "eps_stages", np.asarray(result.eps_stages, dtype=np.float64))
        _put(group, "history_iteration", np.asarray(result.history.iteration, dtype=np.int64))
        _put(group, "history_eps", np.asarray(result.history.eps, dtype=np.float64))
        _put(group, "history_error", np.asarray(result.history.error, dtype=np.float64))
        group.attrs.update({
            "format": FORMAT, "kind": "result", "bigsink_version": _version(),
            "n_iter": int(result.n_iter), "converged": bool(result.converged),
            "batched": bool(result.batched), "kinds": kinds,
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
    )


# ---------------------------------------------------------------------------------------------
# plans


def _potentials(result: SinkhornResult, src: CostSource) -> tuple[np.ndarray, np.ndarray]:
    """``f`` (n, K) and ``g`` (m, K) float64, checked against the cost's shape."""
    n, m = src.shape
    shape = (np.shape(result.f)[0], np.shape(result.g)[0])
    if (n, m) != shape:
        raise InputError(
            f"cost has shape {(n, m)} but the result's potentials are for {shape}; pass the "
            "cost the result was solved on."
        )
    f = np.asarray(to_numpy(result.f), dtype=np.float64).reshape(n, -1)
    g = np.asarray(to_numpy(result.g), dtype=np.float64).reshape(m, -1)
    return f, g


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

    src = as_cost(cost)
    f, g = _potentials(result, src)
    target = _local_path("path", path)
    _check_target("path", target, overwrite)
    n, m = src.shape
    K = f.shape[1]
    width = int(col_chunk or src.grid.block_shape[1])
    with atomic_dir(target, overwrite) as tmp, _session(src, K, executor, client) as session:
        rows = _chunk_rows(session, n)
        shape: tuple[int, ...] = (n, m, K) if result.batched else (n, m)
        chunks: tuple[int, ...] = (rows, min(width, m), K)[: len(shape)]
        arr = zarr.create_array(tmp, shape=shape, chunks=chunks, dtype=np.dtype(dtype),
                                compressors=compressors, fill_value=0)
        arr.attrs.update({"format": FORMAT, "kind": "plan", "eps": float(result.eps),
                          "bigsink_version": _version()})
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
    src = as_cost(cost)
    f, g = _potentials(result, src)
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
    from .solver import evaluate

    src = as_cost(cost)
    f, g = _potentials(result, src)
    with _session(src, f.shape[1], executor, client) as session:
        ev = evaluate(session, f, g, float(result.eps))
    if result.batched:
        return PlanMarginals(ev.rows, ev.cols, ev.transport_cost)
    return PlanMarginals(ev.rows[:, 0], ev.cols[:, 0], float(ev.transport_cost[0]))

