"""Plots of results (matplotlib, the ``bigsink[plot]`` extra).

Every function draws on an ``Axes`` (a new figure when none is given), optionally saves the
figure to ``path`` (written to a temporary name, then renamed), and returns the ``Axes``.
A new figure is a plain ``matplotlib.figure.Figure``: it touches no pyplot state (the
backend stays as it is, so Jupyter's inline display keeps working, and no figures pile up
in pyplot's list); show it with ``display(ax.figure)`` in a notebook, or save it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._fs import atomic_path
from .result import SinkhornResult

__all__ = ["convergence", "plan", "save_figure", "sweep"]


def _axes(ax: Any) -> Any:
    """``ax``, or one on a new ``Figure`` that pyplot does not know about."""
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=(6.4, 4.0), dpi=100).add_subplot()


def save_figure(ax: Any, path: str | os.PathLike[str]) -> None:
    """Save the figure of ``ax`` as PNG to ``path`` atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        ax.figure.savefig(tmp, format="png")


def convergence(result: SinkhornResult, ax: Any = None, path: Any = None) -> Any:
    """L1 marginal error per iteration (log scale), eps stages marked by vertical lines; with
    certified truncation, the share of blocks each iteration read (right axis)."""
    ax = _axes(ax)
    h = result.history
    err = np.where(np.isfinite(h.error), h.error, np.nan)
    ax.semilogy(h.iteration, err, lw=1.2, label="L1 row error")
    if h.active is not None and len(h.active) and h.active.min() < 1.0:
        right = ax.twinx()
        right.plot(h.iteration, h.active, color="tab:green", lw=1.0, alpha=0.8)
        right.set_ylim(0.0, 1.05)
        right.set_ylabel("blocks read (share)", color="tab:green")
        ax.plot([], [], color="tab:green", lw=1.0, label="blocks read")
    ax.axhline(result.tol, color="k", ls=":", lw=1, label=f"tol {result.tol:g}")
    starts = np.flatnonzero(np.diff(h.eps) != 0) + 1                 # first iteration of a stage
    for k in starts:
        ax.axvline(h.iteration[k] - 0.5, color="0.7", lw=0.8)
    if len(starts):
        ax.plot([], [], color="0.7", lw=0.8, label=f"{len(starts) + 1} eps stages")
    ax.set_xlabel("iteration")
    ax.set_ylabel("marginal error (L1)")
    ax.set_title(f"Sinkhorn convergence, eps = {result.eps:g}")
    ax.legend(loc="upper right", fontsize="small")
    if path is not None:
        save_figure(ax, path)
    return ax


def _downsample(P: np.ndarray, max_side: int) -> np.ndarray:
    """Sum the plan over blocks so neither side exceeds ``max_side`` (mass is preserved)."""
    n, m = P.shape
    fr, fc = -(-n // max_side), -(-m // max_side)                    # block sizes (ceil)
    Pp = np.zeros((-(-n // fr) * fr, -(-m // fc) * fc))
    Pp[:n, :m] = P
    return Pp.reshape(Pp.shape[0] // fr, fr, Pp.shape[1] // fc, fc).sum(axis=(1, 3))


def plan(
    result: SinkhornResult, cost: Any = None, ax: Any = None, path: Any = None,
    max_side: int = 400, k: int = 0,
) -> Any:
    """Heatmap of the plan (problem ``k`` of a batch), block-summed to at most ``max_side``
    pixels a side. ``cost`` is needed when the result was loaded or unpickled; it may also be
    a Zarr path of a written plan (read strip by strip and downsampled)."""
    ax = _axes(ax)
    if isinstance(cost, str | os.PathLike) and _is_plan_array(cost):
        P = _downsample_zarr(cost, max_side)
    else:
        P = result.plan(cost)
        P = _downsample(P[:, :, k] if P.ndim == 3 else P, max_side)
    im = ax.imshow(P, aspect="auto", interpolation="nearest", cmap="magma_r")
    ax.figure.colorbar(im, ax=ax, label="mass")
    ax.set_xlabel("target j")
    ax.set_ylabel("source i")
    ax.set_title(f"transport plan, eps = {result.eps:g}")
    if path is not None:
        save_figure(ax, path)
    return ax


def _is_plan_array(path: Any) -> bool:
    """Whether ``path`` holds a Zarr array attributed as a written plan."""
    import zarr

    try:
        return bool(zarr.open_array(os.fspath(path), mode="r").attrs.get("bigsink_plan", False))
    except Exception:
        return False


def _downsample_zarr(path: Any, max_side: int) -> np.ndarray:
    """Block-summed plan from a Zarr array, one chunk row at a time: memory is one chunk row
    plus the (max_side, max_side) image, whatever the plan's size."""
    import zarr

    arr = zarr.open_array(os.fspath(path), mode="r")
    n, m = arr.shape
    fr, fc = -(-n // max_side), -(-m // max_side)                    # block sizes (ceil)
    image = np.zeros((-(-n // fr), -(-m // fc)))
    step = int(arr.chunks[0])
    for s in range(0, n, step):
        rows = np.asarray(arr[s:s + step, :], dtype=np.float64)      # (step, m)
        pad = np.zeros((rows.shape[0], image.shape[1] * fc))
        pad[:, :m] = rows
        cols = pad.reshape(rows.shape[0], image.shape[1], fc).sum(axis=2)  # (step, m / fc)
        np.add.at(image, np.arange(s, s + rows.shape[0]) // fr, cols)
    return image


def sweep(results: Any, ax: Any = None, path: Any = None, value: str = "transport_cost") -> Any:
    """One line per eps of ``value`` against the pair index, from a sweep's rows.

    ``results`` is anything with ``rows`` (a sequence of mappings) or such a sequence; rows
    need ``eps`` and ``value`` and may carry ``pair``.
    """
    ax = _axes(ax)
    rows: Sequence[Any] = getattr(results, "rows", results)
    get = (lambda r, k: r[k]) if rows and isinstance(rows[0], dict) else getattr
    for eps in sorted({float(get(r, "eps")) for r in rows}, reverse=True):
        sel = [r for r in rows if float(get(r, "eps")) == eps]
        ys = [float(get(r, value)) if get(r, value) is not None else np.nan for r in sel]
        ax.plot(np.arange(len(sel)), ys, marker="o", ms=3, lw=1, label=f"eps = {eps:g}")
    ax.set_xlabel("pair")
    ax.set_ylabel(value)
    ax.set_title("sweep")
    ax.legend(fontsize="small")
    if path is not None:
        save_figure(ax, path)
    return ax
