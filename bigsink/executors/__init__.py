"""Executors: where strip kernels run.

An executor opens a :class:`Session` over one cost source; a session runs a
:class:`StripJob` over every row strip of C and returns the strips' row outputs
concatenated in row order and their partials merged in one fixed binary tree
(:func:`bigsink.kernels.tree_reduce`). The solver talks only to this interface.

``local`` runs strips on threads in this process; ``dask`` runs them as tasks on a
Dask cluster (the only module that imports Dask).
"""

from __future__ import annotations

import os
from typing import Any

from .base import Executor, Session, StripJob, strip_rows
from .local import LocalExecutor, LocalSession

__all__ = [
    "Executor", "LocalExecutor", "LocalSession", "Session", "StripJob", "make_executor",
    "strip_rows",
]


def make_executor(executor: Any = None, client: Any = None) -> Executor:
    """The executor for ``solve(executor=..., client=...)``.

    ``client`` (a ``distributed.Client``, a cluster object or a scheduler address) selects
    the Dask executor; otherwise ``executor`` may be an :class:`Executor`, ``"local"`` or
    ``None``: the Dask convention, an active default client of this process (``Client()``),
    or a scheduler the environment names (``DASK_SCHEDULER_ADDRESS``, as a dask-operator
    ``DaskJob`` sets it; it must answer); else local. ``executor="local"`` is always local.
    """
    if client is None and executor is None:
        from .dask import default_client

        client = default_client() or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if client is not None:
        from .dask import DaskExecutor

        return DaskExecutor(client)
    if executor is None or executor == "local":
        return LocalExecutor()
    if isinstance(executor, Executor):
        return executor
    from ..errors import InputError

    raise InputError(
        f"executor must be 'local', an Executor instance, or None; got {executor!r}. "
        "To run on Dask pass client=<Client or scheduler address>."
    )
