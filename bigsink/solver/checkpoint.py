"""Checkpoints of a solve: the coordinator's state in a Zarr group, written atomically.

A checkpoint at ``PATH`` is a Zarr v3 group holding ``f`` (n, K), ``g`` (m, K), ``history``
(N, 3: iteration, eps, error) and ``schedule`` (the eps stages) as float64 arrays, and as
attributes the eps stage index, the iteration count and a fingerprint of the problem (shape,
batch, eps, penalties, a hash of the weights, the cost's finite range). ``f`` is absent when
no iteration has run.

Writes are atomic: a new checkpoint is written completely under a temporary name next to
``PATH``, then the old one is renamed away, the new one renamed to ``PATH`` and the old one
deleted. A crash at any point leaves either ``PATH`` or ``PATH.old-*`` complete, and
:func:`load_checkpoint` reads whichever exists. Local paths only.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._fs import atomic_path, old_copies
from ..errors import InputError
from ..problem import Problem

__all__ = ["Checkpoint", "Checkpointer", "fingerprint", "load_checkpoint", "save_checkpoint"]

FORMAT = "bigsink-checkpoint"
VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the solver state fields, the eps schedule and the fingerprint."""

    stage: int
    f: np.ndarray | None
    g: np.ndarray
    n_iter: int
    history: tuple[tuple[int, float, float, float], ...]
    schedule: tuple[float, ...]
    fingerprint: dict[str, Any]


def fingerprint(
    shape: tuple[int, int], a: np.ndarray, b: np.ndarray, eps: float, rho_a: float, rho_b: float,
) -> dict[str, Any]:
    """What identifies a problem: a checkpoint is only resumed for an equal fingerprint."""
    h = hashlib.sha256()
    for w in (a, b):
        h.update(np.ascontiguousarray(w, dtype=np.float64).tobytes())
    return {
        "shape": [int(shape[0]), int(shape[1])],
        "K": int(a.shape[1]),
        "eps": repr(float(eps)),
        "rho_a": repr(float(rho_a)),
        "rho_b": repr(float(rho_b)),
        "weights_sha256": h.hexdigest(),
    }


def check_path(path: Any) -> str:
    """A local checkpoint path as a string, or an InputError."""
    if not isinstance(path, str) and not hasattr(path, "__fspath__"):
        raise InputError(f"checkpoint must be a local directory path; got {path!r}.")
    where = os.fspath(path)
    if "://" in where:
        raise InputError(f"checkpoint must be a local directory path, not a URL; got {where!r}.")
    return where


def _complete_copy(path: str) -> str | None:
    """``path`` if it exists (and is not an empty directory), else a complete older copy
    left by an interrupted rename."""
    if os.path.exists(path) and not (os.path.isdir(path) and not os.listdir(path)):
        return path
    old = old_copies(path)
    return old[-1] if old else None


def _is_checkpoint(path: str) -> bool:
    """Whether ``path`` holds a checkpoint bigsink wrote (its format marker)."""
    import zarr

    try:
        return bool(zarr.open_group(path, mode="r").attrs.get("format") == FORMAT)
    except Exception:                       # a file, another kind of directory, a Zarr array
        return False


def exists(path: Any) -> bool:
    """Whether a checkpoint (or its surviving older copy) is at ``path``."""
    return _complete_copy(check_path(path)) is not None


def save_checkpoint(
    path: Any, stage: int, f: np.ndarray | None, g: np.ndarray, n_iter: int,
    history: Any, schedule: Any, fp: dict[str, Any], cost_range: tuple[float, float],
) -> None:
    """Write a checkpoint to ``path`` atomically (see the module docstring)."""
    import zarr

    with atomic_path(check_path(path)) as tmp:
        group = zarr.open_group(tmp, mode="w")
        hist = np.asarray(history, dtype=np.float64).reshape(-1, 4)     # (N, 4)
        arrays = {"g": g, "history": hist, "schedule": np.asarray(schedule, np.float64)}
        if f is not None:
            arrays["f"] = f
        for name, x in arrays.items():
            x = np.ascontiguousarray(x, dtype=np.float64)
            group.create_array(name, data=x, chunks=tuple(max(1, s) for s in x.shape),
                               compressors=None)
        group.attrs.update({
            "format": FORMAT, "version": VERSION, "stage": int(stage), "n_iter": int(n_iter),
            "fingerprint": fp, "cost_range": [repr(float(c)) for c in cost_range],
        })


def _read(group: Any, name: str) -> np.ndarray:
    """Array ``name`` of a Zarr group, as NumPy."""
    return np.asarray(group[name][...])


def load_checkpoint(path: Any, fp: dict[str, Any]) -> Checkpoint:
    """Read the checkpoint at ``path``; InputError if it is missing or for another problem."""
    import zarr

    where = check_path(path)
    found = _complete_copy(where)
    if found is None:
        raise InputError(f"checkpoint: nothing at {where!r} to resume from.")
    try:
        group = zarr.open_group(found, mode="r")
        attrs: dict[str, Any] = dict(group.attrs)
    except Exception as exc:
        raise InputError(
            f"checkpoint: {found!r} is not a readable Zarr group ({type(exc).__name__}: {exc})."
        ) from exc
    if attrs.get("format") != FORMAT:
        raise InputError(f"checkpoint: {found!r} is not a bigsink checkpoint.")
    saved = attrs["fingerprint"]
    for key, what in (("shape", "cost shape"), ("K", "batch size"), ("eps", "eps"),
                      ("rho_a", "rho_a"), ("rho_b", "rho_b"), ("weights_sha256", "weights a, b")):
        if saved.get(key) != fp[key]:
            mine = fp[key] if key != "weights_sha256" else "different weights"
            raise InputError(
                f"checkpoint: {found!r} was written for another problem ({what} "
                f"{saved.get(key)!r}, this solve has {mine!r}). Use another checkpoint path, "
                "or resume=False to start over."
            )
    f = _read(group, "f") if "f" in group else None
    g, schedule = _read(group, "g"), _read(group, "schedule")
    (n, m), K = saved["shape"], saved["K"]
    for name, x, size in (("f", f, n), ("g", g, m)):
        if x is None:
            continue
        if x.shape != (size, K) or np.isnan(x).any() or np.isposinf(x).any():
            raise InputError(
                f"checkpoint: {found!r} is damaged: its {name} has shape {x.shape} (expected "
                f"({size}, {K})) or holds NaN or +inf. Remove it, or resume=False to start "
                "over.")
    if not 0 <= int(attrs["stage"]) < len(schedule):
        raise InputError(
            f"checkpoint: {found!r} is damaged: stage {attrs['stage']} is outside its "
            f"{len(schedule)} eps stages. Remove it, or resume=False to start over.")
    hist = _read(group, "history")
    hist = hist.reshape(-1, 4) if hist.ndim == 2 and hist.shape[1] == 4 else np.column_stack(
        [hist.reshape(-1, 3), np.ones(hist.size // 3)])              # (N, 4); older: (N, 3)
    return Checkpoint(
        stage=int(attrs["stage"]), f=f, g=g,
        n_iter=int(attrs["n_iter"]),
        history=tuple((int(h[0]), float(h[1]), float(h[2]), float(h[3])) for h in hist),
        schedule=tuple(float(e) for e in schedule),
        fingerprint={**saved, "cost_range": [float(c) for c in attrs["cost_range"]]},
    )


def check_cost_range(ck: Checkpoint, cost_range: tuple[float, float], path: Any) -> None:
    """InputError when the checkpoint was written for a cost with another finite range."""
    saved = ck.fingerprint["cost_range"]
    if any(not math.isclose(s, c, rel_tol=0, abs_tol=0) for s, c in zip(saved, cost_range,
                                                                       strict=True)):
        raise InputError(
            f"checkpoint: {os.fspath(path)!r} was written for another cost matrix (its values "
            f"ranged over {saved}, this cost over {list(cost_range)}). Use another checkpoint "
            "path, or resume=False to start over."
        )


class Checkpointer:
    """An ``on_iteration`` hook that saves every ``every`` iterations and at each eps stage.

    The solver calls it with ``err = nan`` when a new eps stage starts.
    """

    def __init__(self, path: Any, every: int, schedule: Any, fp: dict[str, Any],
                 cost_range: tuple[float, float]) -> None:
        self.path = check_path(path)
        self.every = every
        self.schedule = tuple(schedule)
        self.fp = fp
        self.cost_range = cost_range

    def __call__(self, state: Any, err: float) -> None:
        """Save ``state`` when it is due (a multiple of ``every``, or a stage start)."""
        if math.isnan(err) or state.n_iter % self.every == 0:
            save_checkpoint(self.path, state.stage, state.f, state.g, state.n_iter,
                            state.history, self.schedule, self.fp, self.cost_range)


def check_arguments(
    path: Any, every: Any, resume: bool, problem: Problem
) -> tuple[Checkpoint | None, dict[str, Any]]:
    """Validate the checkpoint arguments; the checkpoint to resume from (if any) and the
    problem's fingerprint."""
    fp = fingerprint(problem.shape, problem.a, problem.b, problem.eps,
                          problem.rho_a, problem.rho_b)
    if path is None:
        if resume:
            raise InputError("resume=True needs checkpoint=<the directory to resume from>.")
        return None, fp
    where = check_path(path)
    if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
        raise InputError(f"checkpoint_every must be a positive integer; got {every!r}.")
    found = _complete_copy(where)
    if found is not None and not _is_checkpoint(found):
        raise InputError(
            f"checkpoint: {where!r} exists and is not a bigsink checkpoint. A solve replaces "
            "its checkpoint as it goes, so it will not write over something it did not "
            "write: choose a path that does not exist yet (it is created), or an empty "
            "directory.")
    if resume and exists(path):
        return load_checkpoint(path, fp), fp
    return None, fp
