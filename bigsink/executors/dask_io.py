"""Dask side of bigsink's I/O: run independent chunk-writing work items on a cluster.

Kept apart from :mod:`bigsink.io` so that Dask is imported only under ``bigsink/executors/``.
Each work item is one call ``fn(item)`` that writes whole chunks of a Zarr array it alone owns
and returns a small summary; a lost task is simply re-run (the write is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InputError

__all__ = ["CONNECT_TIMEOUT_S", "connect", "run_items"]

#: Seconds to wait for a scheduler given by address before reporting it unreachable.
CONNECT_TIMEOUT_S = 5


def connect(client: Any) -> tuple[Any, bool]:
    """``(Client, owned)`` from a ``distributed.Client`` or a scheduler address.

    ``owned`` is True when this call opened the connection (the caller closes it). An address
    that does not answer within :data:`CONNECT_TIMEOUT_S` seconds is an InputError.
    """
    from distributed import Client

    if isinstance(client, Client):
        return client, False
    if not isinstance(client, str):
        raise InputError(
            f"client must be a distributed.Client or a scheduler address such as "
            f"'tcp://127.0.0.1:8786'; got {client!r}."
        )
    try:
        return Client(client, timeout=CONNECT_TIMEOUT_S, set_as_default=False), True
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"client: could not reach a Dask scheduler at {client!r} within "
            f"{CONNECT_TIMEOUT_S} s ({type(exc).__name__}). Start one (cluster/local.sh, "
            "`dask scheduler`) or check the address."
        ) from None


def run_items(
    client: Any,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    on_done: Callable[[], None] | None = None,
) -> list[Any]:
    """Run ``fn(item)`` for every item as one task each; results in the items' order.

    ``client`` is a Client or an address (connected and closed here). ``on_done`` is called
    once per finished task (progress). The first failing task's exception is raised after
    the remaining tasks are cancelled.
    """
    from distributed import as_completed

    cl, owned = connect(client)
    try:
        futures = [cl.submit(fn, item, pure=False) for item in items]
        index = {f.key: k for k, f in enumerate(futures)}
        out: list[Any] = [None] * len(futures)
        try:
            for fut in as_completed(futures, loop=cl.loop):
                out[index[fut.key]] = fut.result()
                if on_done is not None:
                    on_done()
        except BaseException:
            cl.cancel(futures)
            raise
        return out
    finally:
        if owned:
            cl.close()
