"""What the CPU and GPU benchmarks share: the configuration, the problem, machine figures,
bigsink's runs, the report table and its JSON."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numba as nb
import numpy as np

from .._fs import atomic_path
from ..errors import InputError
from ..kernels.scaling import kernel_dtype
from ..problem import check_eps

__all__ = [
    "BenchConfig", "bound_seconds", "format_table", "machine_figures", "make_problem",
    "parse_list", "write_json",
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
        device: ``"cpu"`` or ``"gpu"`` (CuPy: :func:`bigsink.bench.gpu.run_bench_gpu`, bound
            from the measured device bandwidth; executor ``local`` or ``zarr``).
        rho: KL marginal penalty of both sides (``inf``: balanced). Unbalanced runs compare
            with POT's ``sinkhorn_unbalanced(reg_type="kl")``; see the module for what
            ``time_to_tol`` means then.
        cloud: the point-cloud benchmark instead (:mod:`bigsink.bench.cloud`): one pass of
            the fused on-the-fly kernels against the materialised path, for every size,
            dtype and dimension in ``dims``.
        dims: point dimensions of the cloud and truncation benchmarks.
        truncate: the truncation benchmark instead (:mod:`bigsink.bench.truncate`):
            truncated and dense solves of point clouds side by side (``reference=False``:
            the truncated one only).
        multiscale: the multiscale benchmark (:mod:`bigsink.bench.truncate` too):
            multiscale solves of point clouds beside the dense path, capped at
            ``DENSE_CAP`` iterations (its time per iteration, and that times the
            multiscale solve's iterations as an estimate; ``reference=False``: multiscale
            only).
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
    cloud: bool = False
    dims: tuple[int, ...] = (2, 3, 10, 64)
    truncate: bool = False
    multiscale: bool = False

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
        check_eps(self.eps)
        if not self.dims or min(self.dims) < 1:
            raise InputError(f"dims must be integers >= 1; got {self.dims!r}.")
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
    """Measured read bandwidth (bytes/s) and vectorised-exp throughput (exp/s), all cores:
    ``exp_per_s`` for the float64 costs' exp, ``exp_f32_per_s`` for the float32 costs' one."""
    from ..kernels.cpu import _exp_row, _exp_row_f32

    threads = _threads()
    rows = max(threads, nbytes // (8 * 4096))
    A = np.ones((rows, 4096))                                         # nbytes of float64
    parts = np.array_split(np.arange(rows), threads)
    _sum_rows(A[:2])
    bw_t = _parallel_time(lambda k: _sum_rows(A[parts[k][0]: parts[k][-1] + 1]), threads, repeats)
    m, reps = 8192, 512
    x = np.linspace(-30.0, 0.0, m)

    def rate(exp_row: Any) -> float:
        def exps(_: int) -> None:
            out, zero = np.empty(m), np.zeros(m)
            for _r in range(reps):
                exp_row(x, zero, 1.0, 0.0, out)

        exps(0)
        return threads * m * reps / _parallel_time(exps, threads, repeats)

    return {
        "threads": float(threads),
        "read_bytes_per_s": A.nbytes / bw_t,
        "exp_per_s": rate(_exp_row),
        "exp_f32_per_s": rate(_exp_row_f32),
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
def _bigsink_kwargs(cfg: BenchConfig, client: Any) -> dict[str, Any]:
    """Arguments of every :func:`bigsink.solve` of the run: ``rho``, and the Dask client for
    ``cfg.executor`` (``dask-zarr``: its executor in streaming mode; a Zarr store is always
    streamed in process, so ``zarr`` needs none)."""
    if client is None:
        return {"rho": cfg.rho}
    if cfg.executor == "dask-zarr":
        from ..executors.dask import DaskExecutor

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
    from ..solver import solve

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
    from ..solver import solve

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

    from ..costs import ZarrCost

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
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2, default=float))


def parse_list(text: str, kind: Callable[[str], Any]) -> tuple[Any, ...]:
    """``"1,2,3"`` -> ``(kind("1"), ...)``."""
    return tuple(kind(t) for t in text.split(",") if t.strip())

