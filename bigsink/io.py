"""Write a cost matrix to a Zarr store: :func:`write_cost`, from two point clouds, one task
per chunk, on a thread pool or a Dask cluster, atomically (:mod:`bigsink._fs`).

Results save and load themselves (:mod:`bigsink.result`); plans are written by
:mod:`bigsink.plans`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._fs import FORMAT, atomic_path, check_replace, check_target, local_path
from ._progress import progress_bar
from ._version import __version__
from ._xp import to_numpy
from .costs import METRICS, PointCloudCost, ZarrCost
from .errors import InputError, NumericalError

__all__ = ["write_cost"]

#: Default chunk side of a written cost matrix (2048^2 float32 = 16 MiB per chunk).
COST_CHUNK = 2048

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
    storage_options: dict[str, Any] | None = None


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

        zarr.open_array(item.path, mode="r+",
                        storage_options=item.storage_options)[r0:r1, c0:c1] = block
    return float(block.min()), float(block.max())


def _run_items(
    fn: Callable[[Any], Any], items: Sequence[Any], client: Any, threads: int | None,
    bar: Any,
) -> list[Any]:
    """``[fn(item) for item in items]`` on Dask (``client``) or on a local thread pool."""
    if client is not None:
        from .executors.dask import run_items

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
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """Write the cost matrix ``C_ij = metric(x_i, y_j) / scale`` to a Zarr v3 array.

    Each chunk is computed (by :class:`PointCloudCost`) and written by exactly one task, on a
    Dask cluster when ``client`` is given, else on a local thread pool. A local array is
    built under a temporary name next to ``path`` and renamed when complete: a failure
    leaves nothing at ``path``. An object store (``s3://...`` and other fsspec URLs) has no
    rename: the array is written in place with the attribute ``complete`` False, set True
    last, and :class:`~bigsink.costs.ZarrCost` refuses an incomplete one.

    Args:
        x: source points (n, d) or (n,).
        y: target points (m, d) or (m,).
        path: local directory to create, or an fsspec URL (``s3://bucket/C.zarr``).
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
        storage_options: for a URL ``path``: fsspec's options (credentials,
            ``client_kwargs={"endpoint_url": ...}``), used by every task, and kept by the
            returned cost for the solve's reads.

    Returns:
        The :class:`~bigsink.costs.ZarrCost` over the new array. Its attributes record
        the metric, p, scale, value range, shapes and each chunk's least and greatest cost
        (``block_min``, ``block_max``: the static bounds of certified truncation).
    """
    import zarr

    if metric not in METRICS:
        raise InputError(f"metric must be one of {METRICS}; got {metric!r}.")
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype must be a floating type such as 'float32'; got {dtype!r}."
                         ) from None
    if np_dtype.kind != "f":
        raise InputError(f"dtype must be a floating type such as 'float32'; got {dtype!r}.")
    if isinstance(scale, str) and scale != "max":
        raise InputError(f"scale must be None, a positive number or 'max'; got {scale!r}.")
    fixed_scale = 1.0 if scale is None or isinstance(scale, str) else float(scale)
    cloud = PointCloudCost(x, y, metric, p=p, scale=fixed_scale, dtype=np_dtype)  # validates
    remote = "://" in (os.fspath(path) if hasattr(path, "__fspath__") else str(path))
    if remote:
        target = str(path)
        _clear_remote(target, storage_options, overwrite)
    else:
        target = local_path("path", path)
        check_target("path", target, overwrite)
    n, m = cloud.shape
    rc = _parse_chunks(chunks, (n, m))

    def items(where: str | None, s: float, kind: Any) -> list[CostChunk]:
        out = []
        for r0 in range(0, n, rc[0]):
            for c0 in range(0, m, rc[1]):
                r1, c1 = min(r0 + rc[0], n), min(c0 + rc[1], m)
                src = PointCloudCost(cloud.x[r0:r1], cloud.y[c0:c1], metric, p=p, scale=s,
                                     dtype=kind, block_shape=(r1 - r0, c1 - c0))
                out.append(CostChunk(where, (r0, r1), (c0, c1), src, storage_options))
        return out

    grid = (math.ceil(n / rc[0]), math.ceil(m / rc[1]))
    n_chunks = grid[0] * grid[1]
    if scale == "max":  # compute-only pass for the maximum (in float64: no overflow)
        with progress_bar("cost max", "chunk", progress, n_chunks) as bar:
            ranges = _run_items(compute_chunk, items(None, 1.0, np.float64), client, threads, bar)
        top = max(hi for _, hi in ranges)
        fixed_scale = top if top > 0 else 1.0
    place = contextlib.nullcontext(target) if remote else atomic_path(target, overwrite)
    with place as tmp:
        arr = zarr.create_array(tmp, shape=(n, m), chunks=rc, dtype=np_dtype,
                                compressors=compressors, storage_options=storage_options,
                                fill_value=np.nan,  # a lost chunk reads as NaN: refused
                                attributes={"format": FORMAT, "kind": "cost",
                                            "complete": False})
        with progress_bar("write_cost", "chunk", progress, n_chunks) as bar:
            ranges = _run_items(compute_chunk, items(tmp, fixed_scale, np_dtype), client,
                                threads, bar)
        arr.attrs.update({
            "format": FORMAT, "kind": "cost", "bigsink_version": __version__,
            "metric": metric, "p": float(p), "scale": float(fixed_scale),
            "scale_rule": scale if isinstance(scale, str) else "fixed",
            "min": min(lo for lo, _ in ranges), "max": max(hi for _, hi in ranges),
            # each chunk's least and greatest cost (nI, nJ): certified truncation's static
            # bounds (ZarrCost.block_min), at no extra pass
            "block_min": np.reshape([lo for lo, _ in ranges], grid).tolist(),
            "block_max": np.reshape([hi for _, hi in ranges], grid).tolist(),
            "shape": [n, m], "x_shape": list(cloud.x.shape), "y_shape": list(cloud.y.shape),
            "complete": True,                                 # last: the store is whole
        })
    return ZarrCost(target, storage_options)


def _clear_remote(url: str, storage_options: dict[str, Any] | None, overwrite: bool) -> None:
    """Make way for a cost array at ``url`` in an object store: nothing there, or (with
    ``overwrite``) an array bigsink wrote, which is removed; else an InputError."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        bucket = root.strip("/").split("/")[0]
        if not fs.exists(bucket):
            raise InputError(f"path: the bucket {bucket!r} of {url!r} does not exist (or "
                             "these credentials cannot see it); create it first.")
        there = fs.exists(f"{root}/zarr.json")
        attrs = json.loads(fs.cat_file(f"{root}/zarr.json")).get("attributes", {}) if there \
            else {}
    except (OSError, ValueError, ImportError) as exc:
        raise InputError(f"path: cannot reach {url!r} ({type(exc).__name__}: {exc}); check "
                         "the URL and storage_options (credentials, endpoint).") from None
    if not there:
        return
    check_replace("path", url, overwrite, lambda: attrs.get("format") == FORMAT)
    fs.rm(root, recursive=True)


