"""Plots of results (matplotlib, the ``bigsink[plot]`` extra).

Every plot function draws on an ``Axes`` (on a new figure when none is given), optionally
saves the figure to ``path`` as PNG (written to a temporary name, then renamed), and returns
the ``Figure``. A new figure is a plain ``matplotlib.figure.Figure``: it touches no pyplot
state (the backend stays as it is, so Jupyter's inline display keeps working, and no figures
pile up in pyplot's list); show it with ``display(fig)`` in a notebook, or save it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._fs import FORMAT, atomic_path
from ._xp import to_numpy
from .errors import InputError
from .result import SinkhornResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["convergence", "plan", "save_figure", "sweep"]

#: What a plot's ``path`` may be.
PathLike = str | os.PathLike[str]

#: How :func:`plan` orders rows and columns: a keyword, or sort keys ``(rows (n,), cols (m,))``.
PlanOrder = Literal["auto", "given", "points"] | tuple[Any, Any]

#: Elements of the plan handled at once when an in-memory plan is binned (a strip's copy).
_STRIP_ELEMENTS = 1 << 22


def _axes(ax: Axes | None) -> Axes:
    """``ax``, or one on a new ``Figure`` that pyplot does not know about."""
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=(6.4, 4.0), dpi=100).add_subplot()


def _finish(ax: Axes, path: PathLike | None) -> Figure:
    """The figure of ``ax``, saved to ``path`` when one is given."""
    fig = ax.get_figure(root=True)
    assert fig is not None                                           # an Axes on a Figure
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure | Axes, path: PathLike) -> Figure:
    """Save ``fig`` (a figure, or the figure of an ``Axes``) as PNG to ``path`` atomically
    (temporary name, then rename); returns the figure."""
    root = fig.get_figure(root=True)                                 # a Figure is its own
    assert root is not None
    with atomic_path(path) as tmp:
        root.savefig(tmp, format="png")
    return root


def convergence(result: SinkhornResult, ax: Axes | None = None,
                path: PathLike | None = None) -> Figure:
    """L1 marginal error per iteration (log scale), eps stages marked by vertical lines; with
    certified truncation, the share of blocks each iteration read (right axis). Returns the
    figure (saved to ``path`` when given)."""
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
    return _finish(ax, path)


# ---------------------------------------------------------------------------------------------
# the plan heatmap

#: Row strips ``(start, rows (h, m) float64)`` of a plan, in row order; callable again.
Strips = Callable[[], Iterator[tuple[int, np.ndarray]]]


def _memory_strips(P: np.ndarray) -> Strips:
    """Strips of an in-memory plan (views: nothing is copied)."""
    n, m = P.shape
    step = max(1, _STRIP_ELEMENTS // max(m, 1))

    def strips() -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, n, step):
            yield s, P[s:s + step]                                    # (step, m)
    return strips


def _zarr_strips(arr: Any, k: int) -> Strips:
    """Strips of a Zarr plan (n, m) or (n, m, K), one chunk row at a time (problem ``k``)."""
    n, step = int(arr.shape[0]), int(arr.chunks[0])

    def strips() -> Iterator[tuple[int, np.ndarray]]:
        for s in range(0, n, step):
            rows = arr[s:s + step, :, k] if arr.ndim == 3 else arr[s:s + step, :]
            yield s, np.asarray(rows, dtype=np.float64)               # (step, m)
    return strips


def _binned(strips: Strips, shape: tuple[int, int], max_side: int,
            row_rank: np.ndarray | None = None, col_order: np.ndarray | None = None
            ) -> np.ndarray:
    """The plan summed over blocks so neither side exceeds ``max_side`` (mass is preserved),
    its rows and columns first put in order: row ``i`` is shown at position ``row_rank[i]``,
    and ``col_order`` lists the columns left to right (None: as given). Memory is one strip
    and the image, whatever the plan's size."""
    n, m = shape
    fr, fc = -(-n // max_side), -(-m // max_side)                    # block sizes (ceil)
    image = np.zeros((-(-n // fr), -(-m // fc)))                     # (<= max_side, <= max_side)
    col_starts = np.arange(0, m, fc)                                 # first column of each bin
    for s, rows in strips():
        h = rows.shape[0]
        if col_order is not None:
            rows = rows[:, col_order]                                # (h, m), columns in order
        cols = np.add.reduceat(rows, col_starts, axis=1)             # (h, m / fc)
        pos = np.arange(s, s + h) if row_rank is None else row_rank[s:s + h]
        bins = pos // fr                                             # (h,) image row of each
        by_bin = np.argsort(bins, kind="stable")
        sorted_bins = bins[by_bin]
        firsts = np.flatnonzero(np.r_[True, sorted_bins[1:] != sorted_bins[:-1]])
        image[sorted_bins[firsts]] += np.add.reduceat(cols[by_bin], firsts, axis=0)
    return image


def _downsample(P: np.ndarray, max_side: int) -> np.ndarray:
    """Sum the plan over blocks so neither side exceeds ``max_side`` (mass is preserved)."""
    return _binned(_memory_strips(P), P.shape, max_side)


def _downsample_zarr(path: Any, max_side: int, k: int = 0) -> np.ndarray:
    """Block-summed plan from a Zarr array, one chunk row at a time: memory is one chunk row
    plus the (max_side, max_side) image, whatever the plan's size."""
    import zarr

    arr = zarr.open_array(os.fspath(path), mode="r")
    return _binned(_zarr_strips(arr, k), (int(arr.shape[0]), int(arr.shape[1])), max_side)


def _principal_projection(y: np.ndarray) -> np.ndarray:
    """Each point's coordinate (m,) along the first principal axis of the points ``y``
    (m, d); the axis points where its largest component is positive, so 1-D points keep
    their own order."""
    yc = y - y.mean(axis=0)                                          # (m, d)
    _, vecs = np.linalg.eigh(yc.T @ yc)                              # (d, d), ascending
    u = vecs[:, -1]                                                  # (d,) largest variance
    u = u if u[np.argmax(np.abs(u))] >= 0 else -u
    return yc @ u                                                    # (m,)


def _barycentric_keys(strips: Strips, t: np.ndarray) -> np.ndarray:
    """Each row's barycentric target on the axis ``t`` (m,): ``(P t)_i / (P 1)_i`` (n,), NaN
    for a row without mass (sorted last). One pass over the strips."""
    keys = []
    for _, rows in strips():
        with np.errstate(invalid="ignore", divide="ignore"):
            keys.append((rows @ t) / rows.sum(axis=1))               # (h,)
    return np.concatenate(keys) if keys else np.zeros(0)


def _cloud_targets(src: Any, m: int) -> np.ndarray | None:
    """The target points (m, d) of a point-cloud cost source, else None."""
    y = getattr(src, "y", None)
    if y is None:
        return None
    pts = np.asarray(to_numpy(y), dtype=np.float64)
    pts = pts[:, None] if pts.ndim == 1 else pts
    return pts if pts.ndim == 2 and pts.shape[0] == m else None


def _rank(keys: Any, size: int, name: str) -> np.ndarray:
    """Position (size,) of each index when sorted by ``keys`` (stable, NaN last)."""
    arr = np.asarray(to_numpy(keys))
    if arr.shape != (size,):
        raise InputError(f"order: {name} keys must have shape ({size},); got {arr.shape}.")
    rank = np.empty(size, dtype=np.intp)
    rank[np.argsort(arr, kind="stable")] = np.arange(size)
    return rank


def plan(
    result: SinkhornResult, cost: Any = None, ax: Axes | None = None,
    path: PathLike | None = None, max_side: int = 400, k: int = 0,
    order: PlanOrder = "auto",
) -> Figure:
    """Heatmap of the plan (problem ``k`` of a batch), block-summed to at most ``max_side``
    pixels a side; the axes count rows and columns (ranks when ordered). Returns the figure
    (saved to ``path`` when given).

    Args:
        result: the solve's result.
        cost: the cost it was solved on (needed when the result was loaded or unpickled), or
            the Zarr path of a plan written by :func:`bigsink.write_plan` (read strip by
            strip, never whole).
        ax: draw here instead of on a new figure.
        path: save the figure here (PNG).
        max_side: the image's largest side in pixels; larger plans are summed over blocks.
        k: which problem of a batched result.
        order: how rows and columns are ordered before block-summing:

            - ``"points"``: the cost is a point cloud (:class:`~bigsink.PointCloudCost`; for
              a Zarr plan, the cost ``result`` was solved on). Columns go along the first
              principal axis of the target points ``y``; rows by where their barycentric
              target ``sum_j P_ij y_j / sum_j P_ij`` lies on that axis. Point clouds come in
              no meaningful order, so their plan is noise as given; ordered, a monotone
              (or any near-deterministic) map is a diagonal and the plan's spread shows
              around it. A Zarr plan is read twice (the rows' keys, then the image), one
              chunk row at a time.
            - ``"given"``: rows and columns as they are (a dense or Zarr cost's order is
              the user's).
            - ``"auto"`` (default): ``"points"`` for a point cloud, else ``"given"``
              (also for a Zarr plan whose result no longer holds its point cloud, e.g. a
              loaded one).
            - ``(row_keys (n,), col_keys (m,))``: rows and columns sorted by these keys
              (stable; NaN last).

    Raises:
        InputError: ``order="points"`` without a point cloud, or keys of the wrong shape.
    """
    ax = _axes(ax)
    if isinstance(cost, str | os.PathLike) and _is_plan_array(cost):
        import zarr

        arr = zarr.open_array(os.fspath(cost), mode="r")
        shape = (int(arr.shape[0]), int(arr.shape[1]))
        strips = _zarr_strips(arr, k)
        points_src: Any = result.cost if getattr(result.cost, "shape", None) == shape else None
    else:
        src = result.checked_cost(cost, "plot.plan()")
        P = result.plan(src)
        P = P[:, :, k] if P.ndim == 3 else P                         # (n, m)
        shape, strips, points_src = P.shape, _memory_strips(P), src
    n, m = shape
    row_rank = col_order = None
    labels = ("target j", "source i")
    if isinstance(order, tuple):
        row_rank, col_rank = _rank(order[0], n, "row"), _rank(order[1], m, "column")
        col_order = np.argsort(col_rank)                             # (m,) columns, left first
        labels = ("target j (ordered)", "source i (ordered)")
    elif order in ("auto", "points"):
        y = _cloud_targets(points_src, m)
        if y is None and order == "points":
            raise InputError(
                "plot.plan(order='points') needs a point cloud cost (bigsink.PointCloudCost) "
                f"with {m} target points; this plan's cost is "
                f"{type(points_src).__name__}. Pass order='given' or sort keys.")
        if y is not None:
            t = _principal_projection(y)                             # (m,) target positions
            col_order = np.argsort(t, kind="stable")                 # (m,)
            row_rank = _rank(_barycentric_keys(strips, t), n, "row")
            labels = ("targets, along their first principal axis",
                      "sources, by their barycentric target")
    elif order != "given":
        raise InputError(f"order must be 'auto', 'given', 'points' or (row_keys, col_keys); "
                         f"got {order!r}.")
    image = _binned(strips, shape, max_side, row_rank, col_order)
    im = ax.imshow(image, aspect="auto", interpolation="nearest", cmap="magma_r",
                   extent=(0, m, n, 0))                              # axes count rows, columns
    fig = ax.get_figure(root=True)
    assert fig is not None                                           # an Axes on a Figure
    fig.colorbar(im, ax=ax, label="mass")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    batch = f", problem {k}" if result.batched else ""
    ax.set_title(f"transport plan, eps = {result.eps:g}{batch}")
    return _finish(ax, path)


def _is_plan_array(path: Any) -> bool:
    """Whether ``path`` holds a Zarr array that :func:`bigsink.write_plan` wrote (attributes
    ``format`` bigsink and ``kind`` plan; ``bigsink_plan`` marked one before those)."""
    import zarr

    try:
        attrs = zarr.open_array(os.fspath(path), mode="r").attrs
    except Exception:
        return False
    written = attrs.get("format") == FORMAT and attrs.get("kind") == "plan"
    return written or bool(attrs.get("bigsink_plan", False))


# ---------------------------------------------------------------------------------------------
# the sweep

_MISSING = object()

#: The most pair labels written on a sweep plot's x axis (more are thinned to every q-th).
_MAX_PAIR_LABELS = 30


def _sweep_rows(results: Any, value: str) -> list[dict[str, Any]]:
    """The ``pair`` (where present), ``eps`` and ``value`` of a sweep's rows: from ``rows``
    (SweepResults), a DataFrame, or a sequence of mappings or row objects."""
    if hasattr(results, "to_dict") and hasattr(results, "columns"):          # a DataFrame
        results = results.to_dict("records")
    rows: Sequence[Any] = getattr(results, "rows", results)
    out = []
    for r in rows:
        row = {k: r.get(k, _MISSING) if isinstance(r, Mapping) else getattr(r, k, _MISSING)
               for k in ("pair", "eps", value)}
        for k in ("eps", value):
            if row[k] is _MISSING:
                raise InputError(f"plot.sweep: a row has no {k!r}; got {r!r}.")
        out.append({k: v for k, v in row.items() if v is not _MISSING})
    return out


def _pair_key(p: Any) -> tuple[int, int, str]:
    """Sort key of a pair label: integers by value first, then other labels by text."""
    if isinstance(p, int | np.integer) and not isinstance(p, bool | np.bool_):
        return 0, int(p), ""
    return 1, 0, str(p)


def sweep(results: Any, ax: Axes | None = None, path: PathLike | None = None,
          value: str = "transport_cost") -> Figure:
    """``value`` of every (pair, eps) row against its pair, one line per eps (coarsest
    first). Returns the figure (saved to ``path`` when given).

    ``results`` is a :class:`~bigsink.SweepResults`, its ``to_pandas()`` frame, or a sequence
    of rows (mappings or objects with attributes); rows need ``eps`` and ``value`` and carry
    ``pair``, the pair's label in the sweep table. The x axis is the pair: integer pairs sit
    at their number, other labels (names) one per tick in sorted order; each point is
    placed by its own row's pair, whatever the rows' order. Rows without ``pair`` are
    numbered by their position within their eps. A failed row (``value`` None or NaN)
    leaves a gap.
    """
    ax = _axes(ax)
    rows = _sweep_rows(results, value)
    has_pair = bool(rows) and all("pair" in r for r in rows)
    if has_pair:
        pairs = sorted({r["pair"] for r in rows}, key=_pair_key)
        numeric = all(_pair_key(p)[0] == 0 for p in pairs)
        where = {p: (int(p) if numeric else i) for i, p in enumerate(pairs)}
    for eps in sorted({float(r["eps"]) for r in rows}, reverse=True):
        sel = [r for r in rows if float(r["eps"]) == eps]
        xs = [where[r["pair"]] for r in sel] if has_pair else list(range(len(sel)))
        ys = [np.nan if r[value] is None else float(r[value]) for r in sel]
        by_x = np.argsort(xs, kind="stable")
        ax.plot(np.asarray(xs)[by_x], np.asarray(ys, dtype=np.float64)[by_x], marker="o",
                ms=3, lw=1, label=f"eps = {eps:g}")
    if has_pair and not numeric:
        q = -(-len(pairs) // _MAX_PAIR_LABELS)                       # label every q-th pair
        ax.set_xticks(range(0, len(pairs), q), [str(p) for p in pairs[::q]],
                      rotation=90 if len(pairs) > 8 else 0)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("pair")
    ax.set_ylabel(value)
    ax.set_title("sweep")
    if rows:
        ax.legend(fontsize="small")
    return _finish(ax, path)
