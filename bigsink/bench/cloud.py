"""``bigsink bench --cloud``: the fused on-the-fly point-cloud kernels against the
materialised path, beside the machine's measured exp throughput.

For every size ``n = m``, dtype and dimension ``d`` (uniform points in ``[0, 1]^d``,
squared Euclidean cost divided by ``d``), it reports

* ``pass_s`` / ``ns_per_element`` / ``elements_per_s``: one steady log-domain iteration
  (:class:`~bigsink.solver.steps.LogStep`, one fused pass: f-update and column partials,
  the row shifts already right as they are near convergence) with the costs computed in
  registers (:mod:`bigsink.kernels.cloud`), best of ``repeats``;
* ``materialised_ns_per_element``: the same pass on materialised strips (today's path for a
  cost that is read: every strip formed by ``PointCloudCost.rows``, then the fused strip
  kernel), measured on the first ``MATERIALISED_ELEMENTS / m`` rows and quoted per
  element; ``speedup`` is its ratio to the fused pass;
* ``exp_ns_per_element``: the machine's vectorised exp alone (the cost's dtype's exp, all
  cores), the floor of any one-exp-per-element pass;
* ``solve_iteration_s`` and ``placement``: the second iteration of a real
  :func:`bigsink.solve` (``max_iter=2``, its first eps stage) and where its placement
  policy put the kernel, and why.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..costs import MappedCost, PointCloudCost
from ..errors import ConvergenceWarning
from ..executors import LocalExecutor
from ..problem import make_problem
from ..solver import solve
from ..solver.steps import LogStep
from .common import BenchConfig, machine_figures

__all__ = ["MATERIALISED_ELEMENTS", "format_cloud_table", "run_bench_cloud"]

#: Elements of the materialised path's timed pass (a strip of rows; it costs ~5 ns each).
MATERIALISED_ELEMENTS = 200_000_000


class Materialised(MappedCost):
    """A cloud read as a matrix: every strip materialised by ``rows`` (no ``strip``)."""

    def apply(self, x: Any) -> Any:
        """The strip as it is."""
        return x


def _cloud(n: int, d: int, dtype: str, seed: int, rows: int | None = None) -> PointCloudCost:
    """The benchmark cloud (its first ``rows`` source points when given)."""
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, d)), rng.random((n, d))
    return PointCloudCost(x[:rows], y, "sqeuclidean", scale=float(d), dtype=dtype)


def pass_seconds(cost: Any, eps: float, repeats: int) -> float:
    """Best time of one steady log-domain pass over ``cost`` (uniform weights): ``f``
    consistent with ``g``, so each row's shift is right and the pass is one exp per
    element, as near convergence."""
    problem = make_problem(cost.shape, None, None, eps)
    session = LocalExecutor().open(cost, 1)
    try:
        step = LogStep(session, problem, eps)
        g = np.zeros(problem.b.shape)
        f, _ = step.step(np.zeros(problem.a.shape), g)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            step.step(f, g)
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        session.close()


def _solve_iteration(cost: PointCloudCost, eps: float) -> tuple[float, str]:
    """The second iteration's time of a real solve (``max_iter=2``) and its placement."""
    stamps: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = solve(cost, eps=eps, max_iter=2, progress=False,
                    callback=lambda it, err: stamps.append(time.perf_counter()))
    return stamps[1] - stamps[0], res.placement


def run_bench_cloud(
    cfg: BenchConfig, log: Callable[[str], None] | None = None, repeats: int = 3
) -> dict[str, Any]:
    """Run the point-cloud benchmark; returns a JSON-ready dict (``machine``, ``config``,
    ``cloud``: one record per size, dtype and dimension)."""
    say = log or (lambda s: None)
    machine = machine_figures()
    say(f"machine: {machine['threads']:.0f} threads, exp {machine['exp_per_s'] / 1e9:.2f} G/s "
        f"(float64 costs), {machine['exp_f32_per_s'] / 1e9:.2f} G/s (float32 costs)")
    eps = cfg.eps[-1]
    records = []
    for n in cfg.sizes:
        for dtype in cfg.dtypes:
            exp_rate = machine["exp_f32_per_s" if dtype == "float32" else "exp_per_s"]
            for d in cfg.dims:
                fused = pass_seconds(_cloud(n, d, dtype, cfg.seed), eps, repeats)
                rows = max(1, min(n, MATERIALISED_ELEMENTS // n))
                slow = pass_seconds(Materialised(_cloud(n, d, dtype, cfg.seed, rows)), eps,
                                    1 if rows < n else repeats)
                iteration, place = _solve_iteration(_cloud(n, d, dtype, cfg.seed), eps)
                rec: dict[str, Any] = {
                    "n": n, "d": d, "dtype": dtype, "eps": eps, "pass_s": fused,
                    "ns_per_element": fused / (n * n) * 1e9,
                    "elements_per_s": n * n / fused,
                    "materialised_ns_per_element": slow / (rows * n) * 1e9,
                    "materialised_rows": rows,
                    "exp_ns_per_element": 1e9 / exp_rate,
                    "solve_iteration_s": iteration, "placement": place,
                }
                rec["speedup"] = rec["materialised_ns_per_element"] / rec["ns_per_element"]
                records.append(rec)
                say(_line(rec))
    return {"machine": machine, "config": cfg.record(), "cloud": records}


def _line(r: dict[str, Any]) -> str:
    """One record as a table row."""
    return (f"{r['n']:>7} {r['d']:>3} {r['dtype']:>7} {r['pass_s']:>9.3f} "
            f"{r['ns_per_element']:>8.2f} {r['elements_per_s'] / 1e9:>8.2f} "
            f"{r['materialised_ns_per_element']:>9.2f} {r['speedup']:>7.1f} "
            f"{r['exp_ns_per_element']:>7.2f} {r['solve_iteration_s']:>9.3f}  "
            f"{r['placement'].split(':')[0]}")


def format_cloud_table(report: dict[str, Any]) -> str:
    """The records of a :func:`run_bench_cloud` report as a fixed-width table, with the
    placements' reasons below it."""
    head = (f"{'n':>7} {'d':>3} {'dtype':>7} {'pass s':>9} {'ns/elt':>8} {'Gelt/s':>8} "
            f"{'mat ns':>9} {'x mat':>7} {'exp ns':>7} {'solve it':>9}  placement")
    lines = [head, "-" * len(head)]
    lines += [_line(r) for r in report["cloud"]]
    lines.append("")
    lines += [f"{r['n']} d={r['d']} {r['dtype']}: {r['placement']}" for r in report["cloud"]]
    return "\n".join(lines)
