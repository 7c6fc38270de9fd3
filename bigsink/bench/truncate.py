"""``bigsink bench --truncate`` and ``--multiscale``: certified block truncation, and the
multiscale solve of point clouds, against the dense log domain on the same problems.

For every size ``n = m``, dtype and dimension ``d`` (uniform points in ``[0, 1]^d``,
squared Euclidean cost divided by ``d``, the cube's squared diameter, so C lies in
``[0, 1]``), at the last ``--eps`` and ``--tol``, it solves

* **truncated**: ``solve(cost, truncate=True, multiscale=False)`` (the cloud in k-d order,
  256 x 256 blocks), or with ``--multiscale`` ``solve(cost, truncate=True,
  multiscale=True)`` (the early eps stages on clusters; the report adds what each level
  ran);
* **dense**: ``solve(cost, truncate=False, multiscale=False)``, the path over every block
  (the dense resident kernel where it fits, else the log domain; skipped with
  ``--no-reference``). With ``--multiscale`` it is capped at ``DENSE_CAP`` iterations
  (at 10^5 points one takes a minute): the report gives its median time per iteration
  after the first and that times the multiscale solve's iterations, an estimate that
  leaves out the dense path's extra iterations in the early stages,

and reports for each the time to tolerance, the iterations, ``<P, C>``, the marginal
error, and for the truncated solve the blocks used per iteration in the last eps stage
(mean and last), its time per iteration there, the certified bound, and per eps stage its
iterations, mean share of blocks and seconds (the first stage's include the start-up
scan; the final evaluation comes after the last). ``rel_diff`` is
the relative difference of the two ``<P, C>``.

With ``--executor zarr`` (or ``dask-zarr``: a 2-worker ``LocalCluster``, 4 GiB per worker)
the cost is first written by :func:`bigsink.write_cost` to a temporary store, the points
in spatial order and chunks of ``STORE_CHUNK`` a side (the user's side of truncating a store:
:func:`~bigsink.costs.pointcloud.spatial_order`), and both solves read it; the report adds
the store's size, its write time and the time of one full read of it.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..costs import CostSource, PointCloudCost, ZarrCost
from ..costs.pointcloud import spatial_order
from ..errors import ConvergenceWarning
from ..executors.dask import DaskExecutor, local_cluster
from ..io import write_cost
from ..result import SinkhornResult
from ..solver import solve
from .common import BenchConfig, machine_figures

#: Iterations of the dense path that ``--multiscale`` runs for its time per iteration.
DENSE_CAP = 4

#: Chunk side of the benchmark's stores (4 MiB float32 chunks; a small problem gets 8
#: chunks a side).
STORE_CHUNK = 1024

__all__ = ["format_truncate_table", "run_bench_truncate"]


def _cloud(n: int, d: int, dtype: str, seed: int) -> PointCloudCost:
    """The benchmark cloud: uniform points, squared Euclidean / d."""
    rng = np.random.default_rng(seed)
    return PointCloudCost(rng.random((n, d)), rng.random((n, d)), "sqeuclidean",
                          scale=float(d), dtype=dtype)


def _stored(cost: PointCloudCost, where: Path) -> tuple[ZarrCost, dict[str, float]]:
    """``cost`` written to a store at ``where`` with its points in spatial order, and the
    store's size, write time and one full read's time."""
    x, y = np.asarray(cost.x), np.asarray(cost.y)
    side = max(64, min(STORE_CHUNK, x.shape[0] // 8))
    x, y = x[spatial_order(x, side)], y[spatial_order(y, side)]
    t0 = time.perf_counter()
    store = write_cost(x, y, where, scale=cost.scale, chunks=(side, side), dtype=cost.dtype,
                       progress=False)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r0 in range(0, store.shape[0], side):
        store.rows(r0, min(store.shape[0], r0 + side))
    n, m = store.shape
    return store, {"store_gb": n * m * store.dtype.itemsize / 1e9, "write_s": written,
                   "full_read_s": time.perf_counter() - t0}


def _timed(cost: CostSource, cfg: BenchConfig, **kw: Any
           ) -> tuple[SinkhornResult, list[float]]:
    """A solve at the benchmark's eps and tol, with its start time and each iteration's
    end time."""
    stamps: list[float] = [time.perf_counter()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = solve(cost, eps=cfg.eps[-1], tol=cfg.tol, max_iter=cfg.max_iter, progress=False,
                    callback=lambda it, err: stamps.append(time.perf_counter()), **kw)
    return res, stamps


def _figures(res: SinkhornResult) -> dict[str, Any]:
    """What both solves report."""
    return {"seconds": res.seconds, "n_iter": res.n_iter, "converged": bool(res.converged),
            "transport_cost": float(res.transport_cost),
            "marginal_error": float(max(res.marginal_error.row, res.marginal_error.col))}


def _record(cost: CostSource, cfg: BenchConfig, n: int, d: int, dtype: str,
            where: dict[str, Any]) -> dict[str, Any]:
    """Both solves of one problem, as a record."""
    cut, stamps = _timed(cost, cfg, truncate=True, multiscale=cfg.multiscale, **where)
    h = cut.history
    last = h.eps == h.eps[-1]                                            # the last stage
    spent = np.diff(np.asarray(stamps))          # per iteration (the first: with the start)
    steps = spent[1:][last[1:]]
    rec: dict[str, Any] = {
        "n": n, "d": d, "dtype": dtype, "eps": cfg.eps[-1], "tol": cfg.tol,
        "executor": cfg.executor, "truncated": _figures(cut),
        "active_last": float(h.active[-1]),
        "active_last_stage_mean": float(h.active[last].mean()),
        "last_stage_iteration_s": float(np.median(steps)) if steps.size else None,
        "truncation_bound": cut.truncation_bound,
        "stages": [[float(e), int((h.eps == e).sum()), float(h.active[h.eps == e].mean()),
                    float(spent[h.eps == e].sum())] for e in dict.fromkeys(h.eps.tolist())],
        "levels": [[list(r.points), list(r.eps_stages), r.iterations, r.seconds]
                   for r in cut.levels],
        "multiscale": cut.multiscale,
    }
    if not cfg.reference:
        return rec
    capped = dataclasses.replace(cfg, max_iter=DENSE_CAP) if cfg.multiscale else cfg
    dense, dense_stamps = _timed(cost, capped, truncate=False, multiscale=False, **where)
    rec["dense"] = _figures(dense)
    rec["dense_placement"] = dense.placement
    seconds = dense.seconds
    if cfg.multiscale:                                 # per iteration, times the iterations
        rec["dense_iteration_s"] = float(np.median(np.diff(dense_stamps)[1:]))
        seconds = rec["dense_iteration_s"] * cut.n_iter
        rec["dense"] |= {"seconds": seconds, "n_iter": cut.n_iter, "estimated": True}
    rec["speedup"] = seconds / cut.seconds
    rec["rel_diff"] = (None if cfg.multiscale
                       else abs(cut.transport_cost / dense.transport_cost - 1))
    return rec


def run_bench_truncate(
    cfg: BenchConfig, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the truncation benchmark; returns a JSON-ready dict (``machine``, ``config``,
    ``truncate``: one record per size, dtype and dimension)."""
    say = log or (lambda s: None)
    machine = machine_figures()
    records = []
    tmp = Path(tempfile.mkdtemp(prefix="bigsink-truncate-"))
    client = cluster = None
    try:
        if cfg.on_dask:
            client, cluster = local_cluster(memory_limit="4GiB")
        where = {"executor": DaskExecutor(client)} if client is not None else {}
        for n in cfg.sizes:
            for dtype in cfg.dtypes:
                for d in cfg.dims:
                    cloud = _cloud(n, d, dtype, cfg.seed)
                    cost: CostSource = cloud
                    store: dict[str, float] = {}
                    if cfg.stored:
                        cost, store = _stored(cloud, tmp / f"{n}-{dtype}-{d}.zarr")
                    rec = _record(cost, cfg, n, d, dtype, where)
                    rec.update(store)
                    records.append(rec)
                    say(_line(rec))
                    shutil.rmtree(tmp / f"{n}-{dtype}-{d}.zarr", ignore_errors=True)
    finally:
        if client is not None and cluster is not None:
            client.close()
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"machine": machine, "config": cfg.record(), "truncate": records}


def _line(r: dict[str, Any]) -> str:
    """One record as a table row."""
    t, dense = r["truncated"], r.get("dense")
    it = r["last_stage_iteration_s"]
    diff = "-" if dense is None or r["rel_diff"] is None else f"{r['rel_diff']:.2g}"
    est = "~" if dense is not None and dense.get("estimated") else ""
    return (f"{r['n']:>7} {r['d']:>3} {r['dtype']:>7} {t['seconds']:>9.1f} {t['n_iter']:>6} "
            f"{r['active_last']:>8.2%} {r['active_last_stage_mean']:>8.2%} "
            f"{'-' if it is None else f'{it:.3f}':>8} "
            f"{r['truncation_bound']:>9.2g} {t['marginal_error']:>9.2g} "
            + (f"{est + format(dense['seconds'], '.1f'):>9} {dense['n_iter']:>6} "
               f"{r['speedup']:>6.1f} {diff:>9}" if dense
               else f"{'-':>9} {'-':>6} {'-':>6} {'-':>9}"))


def format_truncate_table(report: dict[str, Any]) -> str:
    """The records of a :func:`run_bench_truncate` report as a fixed-width table, with
    each solve's eps stages (iterations, mean share of blocks read) below it."""
    head = (f"{'n':>7} {'d':>3} {'dtype':>7} {'trunc s':>9} {'iters':>6} {'last':>8} "
            f"{'stage':>8} {'s/iter':>8} {'bound':>9} {'error':>9} {'dense s':>9} "
            f"{'iters':>6} {'x':>6} {'rel diff':>9}")
    lines = [head, "-" * len(head)]
    lines += [_line(r) for r in report["truncate"]]
    lines.append("")
    for r in report["truncate"]:
        stages = ", ".join(f"{e:.3g}: {k} it at {a:.1%} in {t:.1f} s"
                           for e, k, a, t in r["stages"])
        lines.append(f"{r['n']} d={r['d']} {r['dtype']} ({r['executor']}): {stages}")
        if "store_gb" in r:
            lines.append(f"  store {r['store_gb']:.1f} GB, written in {r['write_s']:.0f} s, "
                         f"one full read {r['full_read_s']:.1f} s")
        for points, stages, its, secs in r.get("levels", ()):
            lines.append(f"  {points[0]} x {points[1]} clusters: eps "
                         f"{', '.join(f'{e:.3g}' for e in stages)}, {its} it in {secs:.2f} s")
        if r.get("multiscale"):
            lines.append(f"  multiscale: {r['multiscale']}")
        if "dense_placement" in r:
            capped = (f"; {r['dense_iteration_s']:.2f} s per iteration over {DENSE_CAP} "
                      "iterations (~: that times the iterations above)"
                      if "dense_iteration_s" in r else "")
            lines.append(f"  dense: {r['dense_placement']}{capped}")
    return "\n".join(lines)
