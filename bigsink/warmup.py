"""Compile bigsink's numba kernels ahead of the first real solve (``bigsink warmup``).

The kernels are compiled on first use and cached on disk (numba's ``cache=True``): by
default in ``__pycache__`` next to bigsink's sources, or, where those are not writable (a
package installed by root), in ``NUMBA_CACHE_DIR`` or the user's cache directory. A cold
cache costs the first solve of a process on a fresh machine, container or worker about ten
seconds (more for point clouds); a warm one, nothing. :func:`warmup` runs one tiny solve
down each path, so that an image build, a node's start-up script or a CI job pays that once.

The cache is specific to the CPU it was compiled on (numba recompiles for another), and to
the installed sources (a reinstall invalidates it).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["PATHS", "cache_dir", "warmup"]


def _cloud(n: int, d: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two uniform clouds of ``n`` points in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    return rng.random((n, d)).astype(dtype), rng.random((n, d)).astype(dtype)


def _dense(dtype: str, **kw: Any) -> None:
    """A dense solve of a 48 x 40 cost in ``dtype`` (``kw`` picks the path)."""
    from . import solve

    rng = np.random.default_rng(1)
    solve(rng.random((48, 40)).astype(dtype), eps=0.05, max_iter=30, progress=False, **kw)


def _clouds(dtype: str, **kw: Any) -> None:
    """Point-cloud solves of every metric in ``dtype``, and their plan operators."""
    from . import PointCloudCost, solve

    x, y = _cloud(64, 3, dtype)
    for metric, p in (("sqeuclidean", 2.0), ("euclidean", 2.0), ("minkowski", 3.0)):
        cost = PointCloudCost(x, y, metric, p=p)
        r = solve(cost, eps=0.05, max_iter=30, progress=False, **kw)
        r.apply(np.ones(64))
        r.grad_x()


def _blocks(multiscale: bool) -> None:
    """A truncated (block-sparse) solve of a 2-D cloud in spatial order, or a multiscale
    one; both float32 and float64 kernels."""
    from . import PointCloudCost, solve

    for dtype in ("float32", "float64"):
        x, y = _cloud(4096, 2, dtype, seed=2)
        cost = PointCloudCost(x, y, scale=2.0)
        solve(cost, eps=1e-3, tol=1e-5, max_iter=300, truncate=True, multiscale=multiscale,
              progress=False)


#: Each path a first solve may take: ``(name, run)``.
PATHS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("dense float64, log domain", lambda: _dense("float64", resident_kernel=False)),
    ("dense float32, log domain", lambda: _dense("float32", resident_kernel=False)),
    ("dense float64, scaling path", lambda: _dense("float64", resident_kernel=True,
                                                   mixed_precision=False)),
    ("dense, float32 kernel", lambda: _dense("float64", resident_kernel=True,
                                             mixed_precision=True)),
    ("dense, 2 problems at once", lambda: _dense(
        "float64", a=np.full((48, 2), 1 / 48), b=np.full((40, 2), 1 / 40))),
    ("dense, unbalanced", lambda: _dense("float64", rho=1.0)),
    ("point clouds float64, 3 metrics", lambda: _clouds("float64")),
    ("point clouds float32, 3 metrics", lambda: _clouds("float32")),
    ("truncated blocks", lambda: _blocks(False)),
    ("multiscale", lambda: _blocks(True)),
)


def cache_dir() -> str:
    """Where numba caches the kernels: ``NUMBA_CACHE_DIR`` if set, else next to
    bigsink's sources (or, if those are not writable, the user's cache directory)."""
    import numba

    from . import kernels

    configured = getattr(numba.config, "CACHE_DIR", "")       # NUMBA_CACHE_DIR
    return str(configured or f"__pycache__ next to {kernels.__path__[0]}")


def warmup(report: Callable[[str, float], None] | None = None) -> dict[str, float]:
    """Run one tiny solve down each of :data:`PATHS`, compiling (or loading from the
    cache) every kernel it needs; returns the seconds each took (seconds on a cold cache,
    milliseconds on a warm one). ``report(name, seconds)`` is called after each."""
    took: dict[str, float] = {}
    for name, run in PATHS:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")             # tiny budgets: not converged
            run()
        took[name] = time.perf_counter() - t0
        if report is not None:
            report(name, took[name])
    return took
