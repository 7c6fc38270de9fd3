"""``bigsink bench --truncate``: certified block truncation against the dense log domain,
side by side on the same problems.

For every size ``n = m``, dtype and dimension ``d`` (uniform points in ``[0, 1]^d``,
squared Euclidean cost divided by ``d``, the cube's squared diameter, so C lies in
``[0, 1]``), at the last ``--eps`` and ``--tol``, it solves

* **truncated**: ``solve(cost, truncate=True)`` (the cloud in k-d order, 256 x 256 blocks);
* **dense**: ``solve(cost, truncate=False, resident_kernel=False)``, the same iterations
  over every block (skipped with ``--no-reference``, e.g. where it would take hours),

and reports for each the time to tolerance, the iterations, ``<P, C>``, the marginal
error, and for the truncated solve the blocks read per iteration in the last eps stage
(mean and last), the elements computed per iteration there against ``n * m``, its
time per iteration there, and the certified bound. ``rel_diff`` is the relative difference
of the two ``<P, C>``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..costs import PointCloudCost
from ..errors import ConvergenceWarning
from ..result import SinkhornResult
from ..solver import solve
from .common import BenchConfig, machine_figures

__all__ = ["format_truncate_table", "run_bench_truncate"]


def _cloud(n: int, d: int, dtype: str, seed: int) -> PointCloudCost:
    """The benchmark cloud: uniform points, squared Euclidean / d."""
    rng = np.random.default_rng(seed)
    return PointCloudCost(rng.random((n, d)), rng.random((n, d)), "sqeuclidean",
                          scale=float(d), dtype=dtype)


def _timed(cost: PointCloudCost, cfg: BenchConfig, **kw: Any
           ) -> tuple[SinkhornResult, list[float]]:
    """A solve at the benchmark's eps and tol, with each iteration's end time."""
    stamps: list[float] = []
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


def run_bench_truncate(
    cfg: BenchConfig, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the truncation benchmark; returns a JSON-ready dict (``machine``, ``config``,
    ``truncate``: one record per size, dtype and dimension)."""
    say = log or (lambda s: None)
    machine = machine_figures()
    records = []
    for n in cfg.sizes:
        for dtype in cfg.dtypes:
            for d in cfg.dims:
                cost = _cloud(n, d, dtype, cfg.seed)
                cut, stamps = _timed(cost, cfg, truncate=True)
                h = cut.history
                last = h.eps == h.eps[-1]                                # the last stage
                steps = np.diff(np.asarray(stamps))[last[1:]]
                rec: dict[str, Any] = {
                    "n": n, "d": d, "dtype": dtype, "eps": cfg.eps[-1], "tol": cfg.tol,
                    "truncated": _figures(cut),
                    "active_last": float(h.active[-1]),
                    "active_last_stage_mean": float(h.active[last].mean()),
                    "elements_per_iteration": float(h.active[last].mean()) * n * n,
                    "last_stage_iteration_s": float(np.median(steps)) if steps.size else None,
                    "truncation_bound": cut.truncation_bound,
                    "stages": [[float(e), int((h.eps == e).sum()),
                                float(h.active[h.eps == e].mean())]
                               for e in dict.fromkeys(h.eps.tolist())],
                }
                if cfg.reference:
                    dense, _ = _timed(cost, cfg, truncate=False, resident_kernel=False)
                    rec["dense"] = _figures(dense)
                    rec["speedup"] = dense.seconds / cut.seconds
                    rec["rel_diff"] = abs(cut.transport_cost / dense.transport_cost - 1)
                records.append(rec)
                say(_line(rec))
    return {"machine": machine, "config": cfg.record(), "truncate": records}


def _line(r: dict[str, Any]) -> str:
    """One record as a table row."""
    t, dense = r["truncated"], r.get("dense")
    it = r["last_stage_iteration_s"]
    return (f"{r['n']:>7} {r['d']:>3} {r['dtype']:>7} {t['seconds']:>9.1f} {t['n_iter']:>6} "
            f"{r['active_last']:>8.2%} {r['active_last_stage_mean']:>8.2%} "
            f"{'-' if it is None else f'{it:.3f}':>8} "
            f"{r['truncation_bound']:>9.2g} {t['marginal_error']:>9.2g} "
            + (f"{dense['seconds']:>9.1f} {dense['n_iter']:>6} {r['speedup']:>6.1f} "
               f"{r['rel_diff']:>9.2g}" if dense else f"{'-':>9} {'-':>6} {'-':>6} {'-':>9}"))


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
        stages = ", ".join(f"{e:.3g}: {k} it at {a:.1%}" for e, k, a in r["stages"])
        lines.append(f"{r['n']} d={r['d']} {r['dtype']}: {stages}")
    return "\n".join(lines)
