"""The per-iteration hooks of a solve: progress bar, the user's callback, checkpoints.

A hook is ``hook(state, err)``, called after every iteration (and, with ``err`` NaN, when a
stage ends); :func:`chain` runs several in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .._progress import progress_bar
from ..errors import InputError
from .loop import SolverState

__all__ = ["chain", "progress", "user_hook"]


def progress(enabled: bool | None, dashboard: str = ""
             ) -> Callable[[SolverState, float], None] | None:
    """A tqdm progress callback; ``None`` shows it only on a terminal, False never. A
    Dask ``dashboard`` address is shown in its description."""
    if enabled is False:
        return None
    bar = progress_bar(f"sinkhorn (dashboard {dashboard})" if dashboard else "sinkhorn", "it",
                       enabled)

    def update(state: SolverState, err: float) -> None:
        if math.isnan(err):
            return
        bar.update(1)
        bar.set_postfix(stage=state.stage, err=f"{err:.2e}", refresh=False)

    return update


def user_hook(
    callback: Callable[[int, float], None] | None,
) -> Callable[[SolverState, float], None] | None:
    """``solve(callback=...)`` as an ``on_iteration`` hook (stage changes, which carry no
    error, are not reported)."""
    if callback is None:
        return None
    if not callable(callback):
        raise InputError(
            f"callback must be callable as callback(n_iter, err) or None; got "
            f"{type(callback).__name__}."
        )

    def call(state: SolverState, err: float) -> None:
        if not math.isnan(err):
            callback(state.n_iter, err)

    return call


def chain(
    hooks: Sequence[Callable[[SolverState, float], None] | None],
) -> Callable[[SolverState, float], None] | None:
    """One ``on_iteration`` hook calling each of ``hooks`` (Nones skipped) in order."""
    active = [h for h in hooks if h is not None]
    if not active:
        return None

    def call(state: SolverState, err: float) -> None:
        for h in active:
            h(state, err)

    return call
