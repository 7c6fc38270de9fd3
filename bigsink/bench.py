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
path (:mod:`bigsink.scaling`) on every executor, whose bound is one read of the resident
kernel at the measured memory read bandwidth (all cores summing a large array),
``bytes / bandwidth``, with the kernel's bytes in its storage dtype (float32 for a float64
cost at ``tol >= 1e-7``: mixed precision, :func:`bigsink.scaling.kernel_dtype`). The log
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

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from .errors import InputError
from .scaling import kernel_dtype

__all__ = [
    "BenchConfig", "bound_seconds", "format_table", "machine_figures", "make_problem",
    "parse_list", "run_bench", "write_json",
]

POT_METHODS = ("sinkhorn", "sinkhorn_log", "sinkhorn_stabilized")
#: POT's ``ot.unbalanced.sinkhorn_unbalanced`` methods (``--rho``).
POT_UNBALANCED_METHODS = ("sinkhorn", "sinkhorn_stabilized", "sinkhorn_translation_invariant")
EXECUTORS = ("local", "dask", "zarr", "dask-zarr")


@dataclass(frozen=True)
class BenchConfig:
    """What ``bigsink bench`` runs.

    Args:
        sizes: ``n = m`` values.
        eps: regularisations.
        dtypes: cost dtypes (``"float64"``, ``"float32"``).
        executor: ``"local"`` (in-process threads), ``"dask"`` (a LocalCluster with 2 worker
            processes), ``"zarr"`` (the cost written to a temporary Zarr store and streamed)
            or ``"dask-zarr"`` (that store streamed by the LocalCluster's workers).
        tol: L1 marginal tolerance.
        max_iter: iteration cap of every solver.
        pot_max_seconds: wall-time cap of each POT run (its iterations are cut to fit).
        pot: whether to run POT at all.
        reference: solve a tighter float64 reference for ``<P, C>`` (else use bigsink's result).
        seed: random seed of the point clouds.
        methods: POT methods to run; None: all of :data:`POT_METHODS` (balanced) or of
            :data:`POT_UNBALANCED_METHODS` (unbalanced).
        device: ``"cpu"`` or ``"gpu"`` (CuPy: :func:`bigsink.bench_gpu.run_bench_gpu`, bound
            from the measured device bandwidth; executor ``local`` or ``zarr``).
        rho: KL marginal penalty of both sides (``inf``: balanced). Unbalanced runs compare
            with POT's ``sinkhorn_unbalanced(reg_type="kl")``; see the module for what
            ``time_to_tol`` means then.
    """

    sizes: tuple[int, ...] = (10_000,)
    eps: tuple[float, ...] = (1e-2,)
    dtypes: tuple[str, ...] = ("float64",)
    executor: str = "local"
    tol: float = 1e-6
    max_iter: int = 10_000
    pot_max_seconds: float = 60.0
    pot: bool = True
    reference: bool = True
    seed: int = 0
    methods: tuple[str, ...] | None = None
    device: str = "cpu"
    rho: float = math.inf

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise InputError(f"executor must be one of {EXECUTORS}; got {self.executor!r}.")
        if self.device not in ("cpu", "gpu"):
            raise InputError(f"device must be 'cpu' or 'gpu'; got {self.device!r}.")
        for d in self.dtypes:
            if d not in ("float32", "float64"):
                raise InputError(f"dtype must be float32 or float64; got {d!r}.")
        if not self.sizes or min(self.sizes) < 2:
            raise InputError(f"sizes must be integers >= 2; got {self.sizes!r}.")
        if not self.eps or min(self.eps) <= 0:
            raise InputError(f"eps must be positive; got {self.eps!r}.")
        if not self.rho > 0:
            raise InputError(f"rho must be positive (inf: balanced); got {self.rho!r}.")
        if self.unbalanced and self.device == "gpu":
            raise InputError("rho: the GPU bench runs balanced problems only; drop --rho.")
        known = POT_UNBALANCED_METHODS if self.unbalanced else POT_METHODS
        for m in self.pot_methods:
            if m not in known:
                raise InputError(f"POT method must be one of {known}; got {m!r}.")

    def record(self) -> dict[str, Any]:
        """The config for the report: JSON-ready (``rho`` None when balanced, as JSON has no
        infinity)."""
        return {**asdict(self), "rho": self.rho if self.unbalanced else None}

    @property
    def on_dask(self) -> bool:
        """Whether the runs use a Dask LocalCluster."""
        return self.executor in ("dask", "dask-zarr")

    @property
    def stored(self) -> bool:
        """Whether the cost is written to a Zarr store and streamed from it."""
        return self.executor in ("zarr", "dask-zarr")

    @property
    def unbalanced(self) -> bool:
        """Whether the runs are unbalanced (finite ``rho``)."""
        return math.isfinite(self.rho)

    @property
    def pot_methods(self) -> tuple[str, ...]:
        """The POT methods to run (``methods``, or all of the problem's kind)."""
        if self.methods is not None:
            return self.methods
        return POT_UNBALANCED_METHODS if self.unbalanced else POT_METHODS


def make_problem(n: int, dtype: str = "float64", seed: int = 0) -> np.ndarray:
    """The benchmark cost (n, n): 2-D uniform points, squared Euclidean / max, in ``dtype``."""
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 2)), rng.random((n, 2))
    C = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)  # (n, n)
    np.maximum(C, 0.0, out=C)
    C /= C.max()
    return C.astype(dtype, copy=False)


@nb.njit(nogil=True, cache=True, fastmath=True)
def _sum_rows(C: np.ndarray) -> float:  # pragma: no cover - jit
    """Sum of a 2-D float array: a vectorised read of every element."""
    s = 0.0
    for i in range(C.shape[0]):
        for j in range(C.shape[1]):
            s += C[i, j]
    return s


def _threads() -> int:
    """Threads the local executor uses."""
    return os.cpu_count() or 1


def _parallel_time(fn: Callable[[int], Any], threads: int, repeats: int) -> float:
    """Best wall time of ``fn(k)`` for k in range(threads), run on ``threads`` threads."""
    best = math.inf
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(fn, range(threads)))
            best = min(best, time.perf_counter() - t0)
    return best


def machine_figures(nbytes: int = 256 << 20, repeats: int = 3) -> dict[str, float]:
    """Measured read bandwidth (bytes/s) and vectorised-exp throughput (exp/s), all cores."""
    from .fused import _exp_row

    threads = _threads()
    rows = max(threads, nbytes // (8 * 4096))
    A = np.ones((rows, 4096))                                         # nbytes of float64
    parts = np.array_split(np.arange(rows), threads)
    _sum_rows(A[:2])
    bw_t = _parallel_time(lambda k: _sum_rows(A[parts[k][0]: parts[k][-1] + 1]), threads, repeats)
    m, reps = 8192, 512
    x = np.linspace(-30.0, 0.0, m)

    def exps(_: int) -> None:
        out, zero = np.empty(m), np.zeros(m)
        for _r in range(reps):
            _exp_row(x, zero, 1.0, 0.0, out)

    exps(0)
    exp_t = _parallel_time(exps, threads, repeats)
    return {
        "threads": float(threads),
        "read_bytes_per_s": A.nbytes / bw_t,
        "exp_per_s": threads * m * reps / exp_t,
    }


def bound_seconds(n: int, m: int, itemsize: int, machine: dict[str, float]) -> float:
    """One pass over C at the measured bandwidth vs one exp per element: the larger."""
    return max(n * m * itemsize / machine["read_bytes_per_s"], n * m / machine["exp_per_s"])


def _path_bound(n: int, kernel_itemsize: int, machine: dict[str, float]) -> float:
    """The bound of the path bigsink takes on the balanced n x n problem, the scaling path
    on every executor: one read of the resident kernel (``kernel_itemsize`` bytes per
    element) at the measured bandwidth."""
    return n * n * kernel_itemsize / machine["read_bytes_per_s"]


def _quick_machine() -> dict[str, float]:
    """:func:`machine_figures` on less data (64 MB, best of 2): taken beside every steady
    run, so that a run's bound comes from the same phase of the machine."""
    return machine_figures(nbytes=64 << 20, repeats=2)


def _plan_figures(P: np.ndarray, C: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Marginal errors, ``<P, C>`` and failure of a dense plan (float64 sums)."""
    P = np.asarray(P, dtype=np.float64)
    if not np.all(np.isfinite(P)):
        return {"row_err": None, "col_err": None, "pc": None, "failure": "nan"}
    mass = float(P.sum())
    return {
        "row_err": float(np.abs(P.sum(1) - a).sum()),
        "col_err": float(np.abs(P.sum(0) - b).sum()),
        "pc": float((P * C).sum(dtype=np.float64)),
        "failure": "mass_loss" if mass < 0.5 else None,
    }


#: POT's time per iteration, which caps its timed run, is measured over at least this many
#: seconds of iterations (a 3-iteration difference drowned in the noise of its setup).
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


def _bigsink_kwargs(cfg: BenchConfig, client: Any) -> dict[str, Any]:
    """Arguments of every :func:`bigsink.solve` of the run: ``rho``, and the Dask client for
    ``cfg.executor`` (``dask-zarr``: its executor in streaming mode; a Zarr store is always
    streamed in process, so ``zarr`` needs none)."""
    if client is None:
        return {"rho": cfg.rho}
    if cfg.executor == "dask-zarr":
        from .executors.dask import DaskExecutor

        return {"rho": cfg.rho, "executor": DaskExecutor(client, mode="streaming")}
    return {"rho": cfg.rho, "client": client}


def _run_bigsink(
    cost: Any, dtype: str, eps: float, cfg: BenchConfig, client: Any,
    in_process: np.ndarray | None = None, steady: bool = True,
) -> tuple[dict[str, Any], Any]:
    """One bigsink solve: its record and result (None if it failed); marginal errors and
    ``<P, C>`` from its own exact final pass.

    ``in_process``: the cost in memory, to time the same iterations in this process as
    well (what a cluster or a store costs over them). ``steady``: measure
    ``s_per_iter`` now (else the caller does, see :func:`_steady_per_iters`)."""
    from .solver import solve

    with warnings.catch_warnings():                                   # compile outside timing:
        warnings.simplefilter("ignore")                               # a small solve of the
        solve(make_problem(64, dtype), eps=eps, max_iter=50,          # same dtype and path
              progress=False, **_bigsink_kwargs(cfg, client))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = solve(cost, eps=eps, tol=cfg.tol, max_iter=cfg.max_iter, progress=False,
                        **_bigsink_kwargs(cfg, client))
        except Exception as exc:  # report it, do not stop the benchmark
            return {"solver": "bigsink", "failure": f"error: {exc}"}, None
    err = max(float(np.max(res.marginal_error.row)), float(np.max(res.marginal_error.col)))
    local = None if in_process is None else _steady_per_iter(in_process, eps, res, cfg.tol)
    return {
        "solver": "bigsink", "n_iter": res.n_iter, "seconds": res.seconds,
        "in_process_s_per_iter": local,
        "log_s_per_iter": (None if in_process is None else
                           _steady_per_iter(cost, eps, res, cfg.tol, resident_kernel=False,
                                            **_bigsink_kwargs(cfg, client))),
        "s_per_iter_all_in": res.seconds / max(1, res.n_iter), "capped": False,
        "s_per_iter": (_steady_per_iter(cost, eps, res, cfg.tol, **_bigsink_kwargs(cfg, client))
                       if steady else None),
        "row_err": float(np.max(res.marginal_error.row)),
        "col_err": float(np.max(res.marginal_error.col)),
        "pc": float(np.max(res.transport_cost)),
        "failure": None if float(np.min(res.mass)) >= 0.5 else "mass_loss",
        "time_to_tol": res.seconds if err <= cfg.tol else None,
        "stopped": bool(res.converged),
        "eps_stages": len(res.eps_stages),
    }, res


def _steady_per_iter(cost: Any, eps: float, res: Any, tol: float, **options: Any) -> float | None:
    """Seconds per iteration of one solve alone (:func:`_steady_per_iters` of one case)."""
    return _steady_per_iters([(cost, eps, res)], tol, **options)[0][0]


def _steady_per_iters(cases: list[tuple[Any, float, Any]], tol: float, k: int = 20,
                      min_span_s: float = 0.5, repeats: int = 9,
                      phase: Callable[[], Any] | None = None,
                      **options: Any) -> list[tuple[float | None, Any]]:
    """Seconds per iteration alone of each ``(cost, eps, result)`` case, and what ``phase()``
    returned right before its best run (None without ``phase``).

    A warm-started run at ``eps`` of ``k`` iterations is timed iteration by iteration
    (``solve(callback=...)``): the mean interval between the first and the last
    iteration's end is the time per iteration, and excludes every one-off cost (opening
    the executor, loading strips to a cluster, the scan, the kernel build, the final
    pass), whose noise can be seconds. The runs never stop early, and keep the kernel
    precision that the timed solve at ``tol`` chose.

    Each case's figure is the best of ``repeats`` runs, taken round-robin over the cases:
    the machine's memory bandwidth drifts in phases of seconds, and interleaving lets
    every case meet the same phases (what a comparison across sizes needs); ``phase``
    (e.g. a quick bandwidth measurement) records the phase each run met. ``k`` doubles
    (first round) until the timed iterations span at least ``min_span_s``, so timer noise
    cannot swamp small problems. None when fewer than two iterations were timed.
    ``options`` go to :func:`bigsink.solve`.
    """
    from .solver import solve

    mixed = kernel_dtype(np.float64, tol, 1) == np.float32

    def run(case: tuple[Any, float, Any], iters: int) -> tuple[float, float | None, Any]:
        """(span of the timed iterations, seconds per iteration, phase) of one run."""
        cost, eps, res = case
        there = phase() if phase is not None else None
        ends: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solve(cost, eps=eps, tol=1e-300, max_iter=iters, init=(res.f, res.g),
                  eps_scaling=False, progress=False, mixed_precision=mixed,
                  callback=lambda *_: ends.append(time.perf_counter()), **options)
        if len(ends) < 2:
            return 0.0, None, there
        span = ends[-1] - ends[0]
        return span, span / (len(ends) - 1), there

    ks: list[int] = []
    best: list[tuple[float | None, Any]] = []
    for case in cases:                              # first round: find each case's k
        kc = k
        span, per, there = run(case, kc)
        while per is not None and span < min_span_s and 2 * kc <= 1 << 14:
            kc *= 2
            span, per, there = run(case, kc)
        ks.append(kc)
        best.append((per, there))
    for _ in range(repeats - 1):
        for c, case in enumerate(cases):
            _, per, there = run(case, ks[c])
            prev = best[c][0]
            if per is not None and (prev is None or per < prev):
                best[c] = (per, there)
    return best


def _write_zarr(C: np.ndarray, where: Path, repeats: int = 3) -> tuple[str, dict[str, float]]:
    """C as an uncompressed Zarr v3 array under ``where``; returns its path and the best of
    ``repeats`` times to read it once, in row blocks as the solver streams it: as bigsink
    reads it (``store_read_once_s``: :class:`~bigsink.ZarrCost`, straight from the chunk
    files) and as zarr does (``zarr_read_once_s``: ``arr[rows]``)."""
    import zarr

    from .zarr_cost import ZarrCost

    where.mkdir(parents=True, exist_ok=True)
    path = str(where / "cost.zarr")
    rows = max(1, (16 << 20) // (C.shape[1] * C.itemsize))
    arr = zarr.create_array(path, shape=C.shape, dtype=C.dtype, chunks=(rows, C.shape[1]),
                            compressors=None, overwrite=True)
    arr[:] = C
    readers = {"store_read_once_s": ZarrCost(path).rows,
               "zarr_read_once_s": lambda s, e: np.asarray(arr[s:e])}
    best = dict.fromkeys(readers, math.inf)
    for _ in range(repeats):
        for name, read in readers.items():
            t0 = time.perf_counter()
            for s in range(0, C.shape[0], rows):
                read(s, min(C.shape[0], s + rows))
            best[name] = min(best[name], time.perf_counter() - t0)
    return path, best


def _dask_client() -> tuple[Any, Any]:
    """A LocalCluster with 2 worker processes (one thread each) and its client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    return Client(cluster), cluster


def _dask_available() -> bool:
    """Whether the Dask executor (``bigsink.executors.dask``) is installed in this build."""
    import importlib.util

    return importlib.util.find_spec("bigsink.executors.dask") is not None


def run_bench(
    cfg: BenchConfig, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the benchmark; returns a JSON-ready dict (``machine``, ``config``, ``runs``)."""
    if cfg.device == "gpu":
        from .bench_gpu import run_bench_gpu

        return run_bench_gpu(cfg, log)
    say = log or (lambda s: None)
    machine = machine_figures()
    say(f"machine: {machine['threads']:.0f} threads, read "
        f"{machine['read_bytes_per_s'] / 1e9:.1f} GB/s, exp {machine['exp_per_s'] / 1e9:.2f} G/s")
    client = cluster = None
    tmp = Path(tempfile.mkdtemp(prefix="bigsink-bench-"))
    runs: list[dict[str, Any]] = []
    try:
        if cfg.on_dask:
            if not _dask_available():
                raise InputError(f"executor {cfg.executor!r}: bigsink.executors.dask is not "
                                 "available in this build; use --executor local or zarr.")
            client, cluster = _dask_client()
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
                        from .solver import solve

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


def _finish(run: dict[str, Any]) -> None:
    """A run's figures relative to bigsink's time per iteration: ratios, bound, store read."""
    recs = run["solvers"]
    ref = run["reference_pc"] if run["reference_pc"] is not None else recs[0].get("pc")
    run["reference_pc"] = ref
    base = recs[0].get("s_per_iter")
    for r in recs:
        pc = r.get("pc")
        r["pc_rel_diff"] = abs(pc - ref) / abs(ref) if pc is not None and ref else None
        if run.get("rho") is not None:   # no marginal constraint: its stop, and <P, C> right
            good = r.get("stopped") and (r["pc_rel_diff"] or 0.0) <= run["tol"]
            r["time_to_tol"] = r.get("seconds") if good else None
        sp = r.get("s_per_iter")
        r["ratio_s_per_iter_vs_bigsink"] = sp / base if sp and base else None
    recs[0]["per_iter_over_bound"] = base / run["bound_s"] if base else None
    if "store_read_once_s" in run and base:
        run["per_iter_over_read_once"] = base / run["store_read_once_s"]
        run["per_iter_over_zarr_read"] = base / run["zarr_read_once_s"]
        log = recs[0].get("log_s_per_iter")
        if log:
            run["log_per_iter_over_read_once"] = log / run["store_read_once_s"]
    local = recs[0].get("in_process_s_per_iter")
    if base and local:
        run["per_iter_over_in_process"] = base / local


def _fmt(x: Any, spec: str) -> str:
    """``format(x, spec)``, or ``-`` (as wide as the spec asks) for None."""
    if x is None:
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return "-".rjust(int(width) if width else 1)
    return format(x, spec)


def _line(r: dict[str, Any]) -> str:
    """One solver's record as a short progress line."""
    return (f"  {r['solver']:<24} it {_fmt(r.get('n_iter'), 'd')}  "
            f"{_fmt(r.get('s_per_iter'), '.4f')} s/it  total {_fmt(r.get('seconds'), '.2f')} s"
            f"{'  (capped)' if r.get('capped') else ''}  {r.get('failure') or ''}")


def format_table(report: dict[str, Any]) -> str:
    """The runs of a :func:`run_bench` report as a fixed-width text table."""
    head = (f"{'n':>6} {'eps':>7} {'dtype':>7} {'solver':<34} {'iter':>6} {'ms/iter':>9} "
            f"{'to tol s':>9} {'L1 err':>9} {'<P,C> rel':>9} {'x bigsink':>9} {'/bound':>7} "
            "failure")
    lines = [head, "-" * len(head)]
    for run in report["runs"]:
        for r in run["solvers"]:
            err = (max(r["row_err"], r["col_err"]) if r.get("row_err") is not None else None)
            sp = r.get("s_per_iter")
            name = r["solver"] + (" (capped)" if r.get("capped") else "")
            lines.append(
                f"{run['n']:>6} {run['eps']:>7.0e} {run['dtype']:>7} {name:<34} "
                f"{_fmt(r.get('n_iter'), '>6d')} {_fmt(sp * 1e3 if sp else None, '>9.2f')} "
                f"{_fmt(r.get('time_to_tol'), '>9.2f')} {_fmt(err, '>9.1e')} "
                f"{_fmt(r.get('pc_rel_diff'), '>9.1e')} "
                f"{_fmt(r.get('ratio_s_per_iter_vs_bigsink'), '>9.2f')} "
                f"{_fmt(r.get('per_iter_over_bound'), '>7.2f')} {r.get('failure') or ''}"
            )
        there = run.get("machine_at_best")
        phase = ([f"bound at read {there['read_bytes_per_s'] / 1e9:.1f} GB/s, exp "
                  f"{there['exp_per_s'] / 1e9:.2f} G/s (measured beside the best run)"]
                 if there else [])
        if run.get("rho") is not None:
            phase = [f"unbalanced, rho {run['rho']:g} (to tol: the solver's own stop, with "
                     "<P,C> within tol of the reference; L1 err: the plan's deviation from "
                     "a, b)", *phase]
        notes = phase + [f"{label} {run[key]:.2f}x" for key, label in (
            ("per_iter_over_in_process", "bigsink per iter / same iterations in process:"),
            ("per_iter_over_read_once", "bigsink per iter / reading the store once:"),
            ("per_iter_over_zarr_read", "/ reading it with zarr:"),
            ("log_per_iter_over_read_once", "log domain streaming C / reading it once:"),
        ) if run.get(key) is not None]
        log = run["solvers"][0].get("log_s_per_iter")
        if log is not None and run.get("log_bound_s"):
            notes.append(f"log domain on this executor: {log * 1e3:.1f} ms/iter, "
                         f"{log / run['log_bound_s']:.2f}x its bound")
        if notes:
            lines.append(f"{'':>6} {run['executor']}: " + "; ".join(notes))
    lines.extend(_flatness(report["runs"]))
    m = report["machine"]
    lines.append(f"machine: {m['threads']:.0f} threads, read {m['read_bytes_per_s'] / 1e9:.1f} "
                 f"GB/s, exp {m['exp_per_s'] / 1e9:.2f} G/s (measured in this run; noisy)")
    if "device_copy_bytes_per_s" in m:
        lines.append(f"device: {m['device']}, copy {m['device_copy_bytes_per_s'] / 1e12:.2f} TB/s"
                     " (/bound: one read of C at this bandwidth; the GPU kernels read C twice)")
    return "\n".join(lines)


def _flatness(runs: list[dict[str, Any]]) -> list[str]:
    """One line per (eps, dtype, executor) measured at several sizes: bigsink's time per
    iteration per element, ``s_per_iter / (n * n)`` in ns, and its spread (max / min)."""
    groups: dict[tuple[float, str, str], list[tuple[int, float]]] = {}
    for run in runs:
        sp = run["solvers"][0].get("s_per_iter")
        if sp:
            key = (run["eps"], run["dtype"], run["executor"])
            groups.setdefault(key, []).append((run["n"], sp * 1e9 / run["n"] ** 2))
    lines = []
    for (eps, dtype, executor), per in groups.items():
        if len(per) > 1:
            values = [v for _, v in per]
            sizes = ", ".join(f"{n}: {v:.3f}" for n, v in sorted(per))
            lines.append(f"bigsink ns per element and iteration (eps {eps:g}, {dtype}, "
                         f"{executor}): {sizes}; max/min {max(values) / min(values):.2f}x")
    return lines


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``report`` as JSON to ``path`` (a temporary name, renamed when complete)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    tmp.replace(target)


def parse_list(text: str, kind: Callable[[str], Any]) -> tuple[Any, ...]:
    """``"1,2,3"`` -> ``(kind("1"), ...)``."""
    return tuple(kind(t) for t in text.split(",") if t.strip())

