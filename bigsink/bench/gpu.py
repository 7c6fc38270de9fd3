"""``bigsink bench --device gpu``: bigsink (and POT) on CuPy arrays against the GPU's bandwidth.

The problem is :func:`bigsink.bench.make_problem`'s. The **bound** of one iteration is one
read of C at the device bandwidth measured in the same run (a device-to-device copy of
``nbytes``, counted as ``2 * nbytes`` moved, read plus write):
``bound_s = n * m * itemsize / device_copy_bytes_per_s``. The CUDA strip kernels
(:mod:`bigsink.kernels.cuda`) read C twice per iteration (``reads_per_iter = 2``), so their floor
is ``2 * bound_s``; ``per_iter_over_bound`` is bigsink's steady per-iteration time over
``bound_s``.

Executors: ``local`` puts C on the GPU once (one strip: kernel launches only), ``zarr``
streams it from an uncompressed local store through :class:`~bigsink.costs.DeviceCost`
(read-ahead on a background thread, pinned buffer, async copy). POT runs ``ot.sinkhorn`` on
the same CuPy arrays (POT's CuPy backend); its plan figures are computed on the device.
The reference ``<P, C>`` is bigsink's float64 solve on the GPU at ``tol * 1e-3``.
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

from .._xp import device_namespace
from ..errors import InputError
from .common import (
    BenchConfig,
    _line,
    _run_bigsink,
    _write_zarr,
    machine_figures,
    make_problem,
)

__all__ = ["device_figures", "run_bench_gpu"]


def device_figures(xp: Any, nbytes: int = 1 << 30, repeats: int = 10) -> dict[str, Any]:
    """The current GPU's name and its device-to-device copy bandwidth (bytes moved per
    second, read + write), timed with CUDA events over ``repeats`` copies of ``nbytes``."""
    src = xp.ones(nbytes // 4, dtype=xp.float32)
    dst = xp.empty_like(src)
    dst[...] = src                                                   # warm-up
    start, end = xp.cuda.Event(), xp.cuda.Event()
    start.record()
    for _ in range(repeats):
        dst[...] = src
    end.record()
    end.synchronize()
    seconds = xp.cuda.get_elapsed_time(start, end) / 1e3 / repeats
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"]
    del src, dst
    xp.get_default_memory_pool().free_all_blocks()
    return {
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "device_copy_bytes_per_s": 2 * nbytes / seconds,
        "device_memory_bytes": float(props.get("totalGlobalMem", 0)),
    }


def _plan_figures_gpu(xp: Any, P: Any, C: Any, a: Any, b: Any) -> dict[str, Any]:
    """:func:`bigsink.bench._plan_figures` on the device (float64 sums; P is not copied)."""
    if not bool(xp.all(xp.isfinite(P))):
        return {"row_err": None, "col_err": None, "pc": None, "failure": "nan"}
    rows = xp.sum(P, axis=1, dtype=xp.float64)
    cols = xp.sum(P, axis=0, dtype=xp.float64)
    mass = float(xp.sum(rows))
    return {
        "row_err": float(xp.sum(xp.abs(rows - a))),
        "col_err": float(xp.sum(xp.abs(cols - b))),
        "pc": float(xp.sum(P * C, dtype=xp.float64)),
        "failure": "mass_loss" if mass < 0.5 else None,
    }


def _run_pot_gpu(xp: Any, method: str, C: Any, eps: float, cfg: BenchConfig) -> dict[str, Any]:
    """``ot.sinkhorn(method=...)`` on CuPy arrays, capped to ``cfg.pot_max_seconds`` as
    :func:`bigsink.bench._run_pot` does on the CPU."""
    import ot

    n, m = C.shape
    a = xp.full(n, 1.0 / n, dtype=C.dtype)
    b = xp.full(m, 1.0 / m, dtype=C.dtype)
    stop = cfg.tol / math.sqrt(m)

    def call(iters: int) -> tuple[Any, int, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xp.cuda.Device().synchronize()
            t0 = time.perf_counter()
            P, log = ot.sinkhorn(a, b, C, eps, method=method, numItermax=iters, stopThr=stop,
                                 log=True)
            xp.cuda.Device().synchronize()
            dt = time.perf_counter() - t0
        return P, max(1, int(log.get("niter", log.get("n_iter", iters)))), dt

    name = f"pot.{method}"
    try:
        _, it1, t1 = call(1)
        _, it0, t_probe = call(min(cfg.max_iter, 20))
        per_iter = max(t_probe - t1, 1e-9) / max(1, it0 - it1) if it0 > it1 else t_probe / it0
        setup = max(0.0, t1 - per_iter)
        capped = setup + per_iter * cfg.max_iter > cfg.pot_max_seconds
        iters = max(2, int((cfg.pot_max_seconds - setup) / per_iter)) if capped else cfg.max_iter
        P, it, dt = call(iters)
    except Exception as exc:  # report it, do not stop the benchmark
        return {"solver": name, "failure": f"error: {type(exc).__name__}: {exc}"}
    rec: dict[str, Any] = {"solver": name, "n_iter": it, "seconds": dt,
                           "s_per_iter": (dt - setup) / it if dt > setup else dt / it,
                           "setup_s": setup, "capped": capped}
    rec.update(_plan_figures_gpu(xp, P, C, xp.asarray(a, dtype=xp.float64),
                                 xp.asarray(b, dtype=xp.float64)))
    del P
    ok = rec["failure"] is None and max(rec["row_err"], rec["col_err"]) <= cfg.tol
    rec["time_to_tol"] = dt if ok else None
    return rec


def run_bench_gpu(
    cfg: BenchConfig, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """:func:`bigsink.bench.run_bench` for ``cfg.device == "gpu"`` (same report layout, with
    the GPU's figures under ``machine`` and ``bound_s`` from its bandwidth).

    Raises:
        InputError: CuPy or a CUDA device is missing (before any work), or
            the executor runs on Dask (``dask``, ``dask-zarr``; see ``cluster/gpu/README.md``
            for GPU clusters).
    """
    from ..costs import ZarrCost, on_device
    from ..solver import solve

    if cfg.on_dask:
        raise InputError("bench --device gpu runs in this process: use --executor local or "
                         "zarr (for Dask workers with one GPU each see cluster/gpu/README.md).")
    xp = device_namespace("gpu")
    say = log or (lambda s: None)
    machine: dict[str, Any] = {**machine_figures(), **device_figures(xp)}
    bw = machine["device_copy_bytes_per_s"]
    say(f"device: {machine['device']}, copy {bw / 1e12:.2f} TB/s")
    tmp = Path(tempfile.mkdtemp(prefix="bigsink-bench-gpu-"))
    runs: list[dict[str, Any]] = []
    try:
        for n in cfg.sizes:
            for dtype in cfg.dtypes:
                C_host = make_problem(n, dtype, cfg.seed)
                extra: dict[str, Any] = {}
                if cfg.executor == "zarr":
                    path, reads = _write_zarr(C_host, tmp)
                    extra.update(reads)
                    cost: Any = on_device(ZarrCost(path), xp)
                else:
                    cost = xp.asarray(C_host)                         # resident on the GPU
                C_dev = cost if cfg.executor == "local" else None
                for eps in cfg.eps:
                    bound = n * n * C_host.itemsize / bw             # one read of C
                    say(f"n={n} eps={eps:g} {dtype} (gpu, {cfg.executor}): bound "
                        f"{bound * 1e3:.2f} ms")
                    with warnings.catch_warnings():                  # compile the CUDA kernels
                        warnings.simplefilter("ignore")
                        solve(xp.asarray(make_problem(64, dtype)), eps=eps, max_iter=50,
                              progress=False)
                    recs = [_run_bigsink(cost, dtype, eps, cfg, None)[0]]
                    say(_line(recs[0]))
                    ref = recs[0].get("pc")
                    if cfg.reference:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            C64 = xp.asarray(make_problem(n, "float64", cfg.seed))
                            ref = float(solve(C64, eps=eps, tol=cfg.tol * 1e-3,
                                              max_iter=cfg.max_iter, progress=False)
                                        .transport_cost)
                            del C64
                    if cfg.pot:
                        C_pot = C_dev if C_dev is not None else xp.asarray(C_host)
                        for method in cfg.pot_methods:
                            recs.append(_run_pot_gpu(xp, method, C_pot, eps, cfg))
                            say(_line(recs[-1]))
                        del C_pot
                    base = recs[0].get("s_per_iter")
                    for r in recs:
                        pc, sp = r.get("pc"), r.get("s_per_iter")
                        r["pc_rel_diff"] = (abs(pc - ref) / abs(ref)
                                            if pc is not None and ref else None)
                        r["ratio_s_per_iter_vs_bigsink"] = sp / base if sp and base else None
                    recs[0]["per_iter_over_bound"] = base / bound if base else None
                    runs.append({"n": n, "eps": eps, "dtype": dtype, "executor": cfg.executor,
                                 "device": "gpu", "tol": cfg.tol, "bound_s": bound,
                                 "reads_per_iter": 2, "reference_pc": ref, **extra,
                                 "solvers": recs})
                    xp.get_default_memory_pool().free_all_blocks()
                del cost, C_dev
                if cfg.executor == "zarr":
                    shutil.rmtree(tmp / "cost.zarr", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"machine": machine, "config": cfg.record(), "runs": runs}
