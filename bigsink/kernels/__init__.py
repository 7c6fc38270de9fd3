"""Pure per-strip Sinkhorn maths, and the one dispatcher that picks an implementation.

Three implementations of the same strip kernels (signatures and conventions in
:mod:`bigsink.kernels.reference`):

* :mod:`~bigsink.kernels.reference`: array-API code for any namespace (NumPy, CuPy,
  array-api-strict) and dtype;
* :mod:`~bigsink.kernels.cpu`: fused numba kernels for NumPy float32/float64 strips (one
  read of C, one ``exp`` per element);
* :mod:`~bigsink.kernels.cuda`: their CUDA twins for CuPy float32/float64 strips;
* :mod:`~bigsink.kernels.cloud`: the numba kernels again, over a point cloud's strip
  (:class:`~bigsink.costs.pointcloud.CloudStrip`), its costs computed in registers.

:func:`sinkhorn_strip`, :func:`evaluate_strip` and :func:`merge_pairs` here send each strip
to the fastest implementation that fits it, so executors and the solver call these names
only. :mod:`~bigsink.kernels.scaling` holds the resident-kernel passes of the scaling path.
Nothing in this wing imports Dask, Zarr, Ray, the executors or the solver.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .._xp import is_cupy_array, to_numpy
from ..costs.pointcloud import CloudStrip
from ..errors import PrecisionWarning
from . import cloud, cpu, cuda, reference
from .cloud import as_matrix
from .reference import (
    Pair,
    add_partials,
    lse_pair,
    merge_scan,
    pair_to_lse,
    potential_update,
    tree_reduce,
)

__all__ = [
    "FLOAT32_TOL", "Pair", "add_partials", "apply_strip", "as_matrix", "check_tolerance",
    "column_pair", "cost_grad_strip", "evaluate_strip", "fused_available", "lse_pair",
    "merge_pairs", "merge_scan", "moments_strip", "pair_to_lse", "plan_strip", "potential_update",
    "rounding_floor", "runs_whole", "scan_strip", "sinkhorn_strip", "strip_kernels", "topk_strip",
    "tree_reduce",
]

#: Below this L1 tolerance a float32 cost cannot tell the answer apart (float32 epsilon
#: ~1.2e-7, accumulated over the rounding of C against eps): :func:`check_tolerance` warns.
FLOAT32_TOL = 1e-7


def _implementation(C: Any, *others: Any) -> tuple[ModuleType, Any]:
    """The module whose kernels run on the strip ``C`` with arguments ``others``, and the
    strip as that module takes it: the cloud kernels for a NumPy point cloud's strip;
    CUDA for CuPy float32/float64 strips, numba for NumPy ones, else the reference kernels
    (another cloud strip is materialised first)."""
    if cloud.fits(C, *others):
        return cloud, C
    C = as_matrix(C)
    if is_cupy_array(C) and cuda.fits(C):
        return cuda, C
    if cpu.fits(C, *others):
        return cpu, C
    return reference, C


def sinkhorn_strip(
    C: Any, start: int, log_a: Any, f_prev: Any, g: Any, eps: float, tau: float,
    omega: float = 1.0,
) -> tuple[Any, Pair]:
    """One fused Sinkhorn pass over a strip, new ``f`` rows and column partials
    (:func:`bigsink.kernels.reference.sinkhorn_strip`), by the implementation that fits."""
    impl, C = _implementation(C, log_a, f_prev, g)
    return impl.sinkhorn_strip(C, start, log_a, f_prev, g, eps, tau, omega)


def evaluate_strip(C: Any, start: int, f: Any, g: Any, eps: float) -> tuple[Any, Any]:
    """Plan marginals and ``<P, C>`` of a strip
    (:func:`bigsink.kernels.reference.evaluate_strip`), by the implementation that fits."""
    impl, C = _implementation(C, f, g)
    return impl.evaluate_strip(C, start, f, g, eps)


def apply_strip(
    C: Any, start: int, f: Any, U: Any, g: Any, eps: float, V: Any
) -> tuple[Any, tuple[Any]]:
    """The plan as an operator on a strip, ``P V`` rows and ``P^T U`` partial
    (:func:`bigsink.kernels.reference.apply_strip`), by the implementation that fits
    (CUDA strips: the reference kernel)."""
    impl, C = _implementation(C, f, U, g, V)
    if impl is cuda:
        impl = reference
    return impl.apply_strip(C, start, f, U, g, eps, V)


def cost_grad_strip(C: Any, start: int, f: Any, g: Any, eps: float) -> tuple[Any, Any]:
    """The plan-weighted gradients of a point cloud's cost by its points
    (:func:`bigsink.kernels.cloud.cost_grad_strip`); a strip of another source has none."""
    if not isinstance(C, CloudStrip):
        raise TypeError("cost_grad_strip needs a point cloud's strip (CloudStrip)")
    return cloud.cost_grad_strip(C, start, to_numpy(f), to_numpy(g), eps)


def scan_strip(C: Any, start: int) -> tuple[None, tuple[float, float, int, int]]:
    """Finite range and first non-finite entry of a strip
    (:func:`bigsink.kernels.reference.scan_strip`); a NumPy cloud's by its fused kernel."""
    if cloud.fits(C):
        return cloud.scan_strip(C, start)
    return reference.scan_strip(as_matrix(C), start)


def moments_strip(C: Any, start: int, shift: float) -> tuple[None, tuple[float, float]]:
    """Shifted sum and sum of squares of a strip's entries
    (:func:`bigsink.kernels.reference.moments_strip`)."""
    return reference.moments_strip(as_matrix(C), start, shift)


def column_pair(C: Any, start: int, f: Any, eps: float) -> tuple[None, Pair]:
    """Exact column partials of a strip (:func:`bigsink.kernels.reference.column_pair`)."""
    return reference.column_pair(as_matrix(C), start, f, eps)


def plan_strip(C: Any, start: int, f: Any, g: Any, eps: float) -> tuple[Any, None]:
    """The strip's rows of the plan (:func:`bigsink.kernels.reference.plan_strip`)."""
    return reference.plan_strip(as_matrix(C), start, f, g, eps)


def topk_strip(C: Any, start: int, f: Any, g: Any, eps: float, k: int) -> tuple[Any, None]:
    """Per-row top-``k`` plan entries (:func:`bigsink.kernels.reference.topk_strip`)."""
    return reference.topk_strip(as_matrix(C), start, f, g, eps, k)


def merge_pairs(p: Pair, q: Pair) -> Pair:
    """The stable pair merge (DESIGN.md §2; :func:`bigsink.kernels.reference.merge_pairs`):
    one vectorised numba pass for NumPy float64 pairs (:func:`bigsink.kernels.cpu.merge_pairs`),
    the reference merge otherwise."""
    return cpu.merge_pairs(p, q)


def runs_whole(kernel: Any, C: Any) -> bool:
    """Whether ``kernel`` on the strip ``C`` is a fused kernel that needs only O(r + m)
    temporaries (numba or CUDA), so that an executor need not cut the strip into chunks."""
    kernel = getattr(kernel, "runs_as", kernel)       # a per-block wrapper of a strip kernel
    if kernel is scan_strip:
        return cloud.fits(C)
    impl = _implementation(C)[0]
    if kernel is apply_strip:                                  # (no CUDA twin of its own)
        return impl in (cpu, cloud)
    return kernel in (sinkhorn_strip, evaluate_strip) and impl is not reference


def fused_available(dtype: Any, namespace: Any = np) -> bool:
    """Whether strips of ``dtype`` in ``namespace`` get fused kernels (numba for NumPy,
    CUDA for CuPy)."""
    return (
        (namespace is np or getattr(namespace, "__name__", "") == "cupy")
        and np.dtype(dtype) in (np.float32, np.float64)
    )


def strip_kernels(
    dtype: Any, namespace: Any = np
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``(sinkhorn, evaluate, column)`` strip kernels for costs of ``dtype`` in ``namespace``.

    NumPy and CuPy float32/float64 get the fused kernels (the column fallback, rare, stays
    generic); other namespaces (array-api-strict) and dtypes get the reference kernels.
    """
    if fused_available(dtype, namespace):
        return sinkhorn_strip, evaluate_strip, column_pair
    return reference.sinkhorn_strip, reference.evaluate_strip, reference.column_pair


def rounding_floor(shape: tuple[int, int]) -> float:
    """The relative marginal error float64 sums of an (n, m) plan can be expected to reach:
    ``sqrt(max(n, m))`` roundings of 2**-53 (random-walk accumulation)."""
    return math.sqrt(max(shape)) * 2.0**-53


def check_tolerance(dtype: Any, tol: float, shape: tuple[int, int], top: float, eps: float,
                    stacklevel: int = 2) -> None:
    """Warn (:class:`~bigsink.errors.PrecisionWarning`) before the iterations when ``tol``
    asks for more than the data or the arithmetic carry, and say what to expect.

    A float32 cost rounds each entry by up to ``top * 2**-24`` (``top = max |C|``), which
    moves each plan entry by up to that over ``eps``, relatively, and ``<P, C>`` by about
    that much: the iterations (float64) still take the marginals to ``tol`` for the stored
    cost, but ``<P, C>`` and the potentials are no more exact. A ``tol`` below
    :func:`rounding_floor` cannot be met in float64: the solve stops when its error stops
    improving (a PrecisionWarning then, instead of running to ``max_iter``)."""
    if np.dtype(dtype) == np.float32 and tol < FLOAT32_TOL:
        delta = top * 2.0**-24
        warnings.warn(
            PrecisionWarning(
                f"tol={tol:g} is below the precision of a float32 cost: its entries (up to "
                f"{top:.3g}) are rounded by up to {delta:.2g}, which moves each plan entry by "
                f"up to {math.expm1(delta / eps):.2g} relatively and <P, C> by about "
                f"{delta:.2g}. The marginals converge to tol for the stored cost (the "
                "iteration runs in float64), but <P, C> and the potentials carry no more "
                "than that accuracy. Use a float64 cost, or tol >= 1e-7."
            ),
            stacklevel=stacklevel + 1,
        )
    floor = rounding_floor(shape)
    if tol < floor:
        warnings.warn(
            PrecisionWarning(
                f"tol={tol:g} is below the rounding level of float64 sums over a "
                f"{shape[0]} x {shape[1]} plan (about {floor:.1g} relative to the mass): "
                "the solve stops, not converged, when its error stops improving. Use "
                f"tol >= {10 * floor:.0e}."
            ),
            stacklevel=stacklevel + 1,
        )
