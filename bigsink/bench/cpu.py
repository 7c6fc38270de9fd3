"""``bigsink bench``: bigsink against POT on the same problems, in one process.

The problem (issue 4's acceptance problem): ``n = m`` 2-D points drawn uniformly in the unit
square, squared Euclidean cost divided by its maximum, uniform weights, L1 tolerance ``tol``.
For every size, eps and dtype, each solver runs once and reports

* ``n_iter``, ``seconds`` (wall time of the whole call), ``s_per_iter`` (for bigsink the
  steady per-iteration time: a warm-started run timed iteration by iteration, see
  ``_steady_per_iters``, and
  ``s_per_iter_all_in`` = seconds / n_iter);
* ``time_to_tol`` (``seconds`` when it reached ``tol`` in the L1 marginal error, else None);
* ``row_err``, ``col_err`` (L1 marginal errors of the returned plan, measured here in float64);
* ``pc`` and ``pc_rel_diff``: ``<P, C>`` and its relative difference to the reference;
* ``failure``: ``"nan"`` (non-finite plan), ``"mass_loss"`` (plan total below 0.5),
  ``"error: ..."`` (it raised), or None;
* POT's ``stopThr`` is an L2 norm of one marginal's error; it gets ``tol / sqrt(m)`` so
  that its stop implies an L1 error below ``tol`` (the errors reported are measured here);
* ``capped``: POT runs are cut to ``--pot-max-seconds`` (their per-iteration time is measured on
  a short run first), so POT's slow ``sinkhorn_log`` gives a per-iteration figure, not a time to
  tolerance; a POT run's ``s_per_iter`` leaves out its setup (``setup_s``: building the kernel,
  measured with a one-iteration run);
* ``ratio_s_per_iter_vs_bigsink``: the solver's per-iteration time over bigsink's;
* executors ``dask`` and ``zarr``: ``per_iter_over_in_process``, bigsink's per-iteration time
  over the same iterations in this process on the cost in memory (the scaling path: on Dask
  its kernels are held by the workers, for Zarr in a scratch file, in process in memory);
  ``log_s_per_iter``, the log domain's time per iteration on the same executor (what a cost
  gets without room for the kernel: Dask streaming C, or a store without scratch room),
  beside its bound ``log_bound_s``;
  ``zarr`` also the best-of-3 times to read the store once, as bigsink streams it
  (``store_read_once_s``, straight from the chunk files) and through zarr
  (``zarr_read_once_s``), the per-iteration time over each (``per_iter_over_read_once``,
  ``per_iter_over_zarr_read``), and ``log_per_iter_over_read_once``.

The **machine bound** is measured in the same run, beside each of bigsink's steady runs (the
bound reported is the one measured in the phase of its best run, as this machine's
bandwidth wanders by tens of percent within a minute). Problems take the scaling
path (:mod:`bigsink.kernels.scaling`) on every executor, whose bound is one read of the resident
kernel at the measured memory read bandwidth (all cores summing a large array),
``bytes / bandwidth``, with the kernel's bytes in its storage dtype (float32 for a float64
cost at ``tol >= 1e-7``: mixed precision, :func:`bigsink.kernels.scaling.kernel_dtype`). The log
domain's bound (:func:`bound_seconds`) is one pass over C and one exp per element at the
measured throughput of the fused kernels' vectorised exp: ``max(bytes / bandwidth,
elements / exp_rate)``. bigsink's per-iteration time is reported over the bound of the path
it took.

The reference ``<P, C>`` is bigsink's float64 in-process solve at ``tol * 1e-3`` (or the
bigsink result itself with ``reference=False``).

**Unbalanced** runs (``rho``: both marginals penalised by ``rho KL``) solve the same cost
with POT's ``ot.unbalanced.sinkhorn_unbalanced(reg_type="kl")``, ``stopThr = tol`` (its
criterion is the relative change of its scalings; bigsink's is the L1 change of the row
scaling). There is no marginal constraint to meet, so ``time_to_tol`` is the time to the
solver's own stop (``stopped``: not cut by a cap), provided its ``<P, C>`` is within ``tol``
(relative) of the reference; ``row_err``/``col_err`` are the plan's deviations from
``a``/``b``. POT logs no iteration count there: it is the number of errors it logged
(``sinkhorn_stabilized`` logs every 10th iteration: its count is rounded up to 10).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..executors.dask import local_cluster
from ..kernels.scaling import kernel_dtype
from ..solver import solve
from .common import (
    BenchConfig,
    _bigsink_kwargs,
    _finish,
    _fmt,
    _line,
    _path_bound,
    _plan_figures,
    _quick_machine,
    _run_bigsink,
    _steady_per_iters,
    _write_zarr,
    bound_seconds,
    machine_figures,
    make_problem,
)

__all__ = ["run_bench_cpu"]


PROBE_S = 2.0


def _run_pot(
    method: str, C: np.ndarray, eps: float, cfg: BenchConfig
) -> dict[str, Any]:
    """One POT ``ot.sinkhorn`` run, capped to ``cfg.pot_max_seconds``."""
    import ot

    n, m = C.shape
    a = np.full(n, 1.0 / n, dtype=C.dtype)
    b = np.full(m, 1.0 / m, dtype=C.dtype)
    stop = cfg.tol / math.sqrt(m)   # POT stops on an L2 norm: this one implies L1 <= tol

    def call(iters: int) -> tuple[np.ndarray, int, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            if cfg.unbalanced:           # stops on the relative change of its scalings
                P, log = ot.unbalanced.sinkhorn_unbalanced(
                    a, b, C, eps, cfg.rho, method=method, reg_type="kl", numItermax=iters,
                    stopThr=cfg.tol, log=True)
            else:
                P, log = ot.sinkhorn(a, b, C, eps, method=method, numItermax=iters,
                                     stopThr=stop, log=True)
            dt = time.perf_counter() - t0
        done = log.get("niter")          # POT logs the index of its last iteration
        if done is None and cfg.unbalanced:       # one error per check: every iteration,
            stride = 10 if method == "sinkhorn_stabilized" else 1      # or every 10th
            done = min(iters, stride * len(log["err"])) - 1
        return np.asarray(P), iters if done is None else int(done) + 1, dt

    call(1)                                                           # warm-up
    # Noise here is one-sided (page-fault storms, slow phases), so minima are robust: the
    # setup (building K: seconds) is the faster of two 1-iteration runs, and k doubles until
    # a k-iteration run lasts PROBE_S beyond it, confirmed by a second run.
    setup = min(call(1)[2], call(1)[2])
    k = 2
    while call(k)[2] - setup < PROBE_S and 2 * k <= cfg.max_iter:
        k *= 2
    per_iter = max(min(call(k)[2], call(k)[2]) - setup, 1e-9) / (k - 1)
    setup = max(0.0, setup - per_iter)
    iters = cfg.max_iter
    capped = setup + per_iter * cfg.max_iter > cfg.pot_max_seconds
    if capped:
        iters = max(2, int((cfg.pot_max_seconds - setup) / per_iter))
    try:
        P, it, dt = call(iters)
    except Exception as exc:  # report it, do not stop the benchmark
        return {"solver": f"pot.{method}", "failure": f"error: {exc}", "capped": capped}
    capped = capped and it >= iters                                   # it stopped at the cap
    # per iteration: the time beyond the setup (K = exp(-C/eps) etc.) that the probe measured
    s_per_iter = (dt - setup) / it if dt > setup else dt / it
    rec: dict[str, Any] = {"solver": f"pot.{method}", "n_iter": it, "seconds": dt,
                           "s_per_iter": s_per_iter, "setup_s": setup, "capped": capped}
    rec.update(_plan_figures(P, C.astype(np.float64), a.astype(np.float64),
                             b.astype(np.float64)))
    ok = rec["failure"] is None and max(rec["row_err"], rec["col_err"]) <= cfg.tol
    rec["time_to_tol"] = dt if ok else None
    rec["stopped"] = rec["failure"] is None and it < iters        # by its own criterion
    return rec


def run_bench_cpu(
    cfg: BenchConfig, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the benchmark on the CPU (any executor); returns a JSON-ready dict
    (``machine``, ``config``, ``runs``)."""
    say = log or (lambda s: None)
    machine = machine_figures()
    say(f"machine: {machine['threads']:.0f} threads, read "
        f"{machine['read_bytes_per_s'] / 1e9:.1f} GB/s, exp {machine['exp_per_s'] / 1e9:.2f} G/s")
    client = cluster = None
    tmp = Path(tempfile.mkdtemp(prefix="bigsink-bench-"))
    runs: list[dict[str, Any]] = []
    try:
        if cfg.on_dask:
            client, cluster = local_cluster()
        pending: list[tuple[dict[str, Any], Any, Any]] = []          # (run, cost, result)
        for n in cfg.sizes:
            for dtype in cfg.dtypes:
                C64 = make_problem(n, "float64", cfg.seed)
                C = C64.astype(dtype, copy=False)
                cost: Any = C
                extra: dict[str, Any] = {}
                if cfg.stored:
                    cost, reads = _write_zarr(C, tmp / f"{n}-{dtype}")
                    extra.update(reads)
                for eps in cfg.eps:
                    # balanced problems run the scaling path: one read of the resident
                    # kernel (in its storage dtype) per iteration, no exp
                    stored = kernel_dtype(C.dtype, cfg.tol, 1)
                    bound = _path_bound(n, stored.itemsize, machine)
                    extra["kernel_dtype"] = str(stored)
                    if cfg.executor != "local":     # beside the log domain's time
                        extra["log_bound_s"] = bound_seconds(n, n, C.itemsize, machine)
                    say(f"n={n} eps={eps:g} {dtype} ({cfg.executor}): bound {bound * 1e3:.1f} ms")
                    big, res = _run_bigsink(cost, dtype, eps, cfg, client,
                                            None if cfg.executor == "local" else C, steady=False)
                    recs = [big]
                    say(_line(big))
                    ref = None
                    if cfg.reference:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            ref = float(solve(C64, eps=eps, tol=cfg.tol * 1e-3,
                                              max_iter=cfg.max_iter, progress=False,
                                              rho=cfg.rho).transport_cost)
                    if cfg.pot:
                        for method in cfg.pot_methods:
                            recs.append(_run_pot(method, C, eps, cfg))
                            say(_line(recs[-1]))
                    run = {"n": n, "eps": eps, "dtype": dtype, "executor": cfg.executor,
                           "rho": cfg.rho if cfg.unbalanced else None,
                           "tol": cfg.tol, "bound_s": bound, "reference_pc": ref, **extra,
                           "kernel_itemsize": stored.itemsize, "solvers": recs}
                    runs.append(run)
                    if res is not None:
                        pending.append((run, cost, res))
        # bigsink's steady time per iteration, round-robin over the sizes of each (dtype, eps)
        for key in {(r["dtype"], r["eps"]) for r, _, _ in pending}:
            group = [(r, c, res) for r, c, res in pending if (r["dtype"], r["eps"]) == key]
            say(f"steady time per iteration ({key[0]}, eps {key[1]:g}): "
                f"{len(group)} size(s) round-robin")
            per = _steady_per_iters([(c, r["eps"], res) for r, c, res in group], cfg.tol,
                                    phase=_quick_machine, **_bigsink_kwargs(cfg, client))
            for (r, _, _), (sp, there) in zip(group, per, strict=True):
                r["solvers"][0]["s_per_iter"] = sp
                if there is not None:       # the bound in the phase of the best run
                    r["machine_at_best"] = there
                    r["bound_s"] = _path_bound(r["n"], r["kernel_itemsize"], there)
                say(f"  n={r['n']}: {_fmt(sp, '.4f')} s/it, bound then "
                    f"{r['bound_s'] * 1e3:.1f} ms")
        for run in runs:
            _finish(run)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"machine": machine, "config": cfg.record(), "runs": runs}
