"""Dask executor: strips of C as tasks on a ``distributed`` cluster.

The coordinator (this process) keeps the potentials; per job only O(n + m) numbers travel:

* every ``shared`` value of a job (``g``, ``eps``, ...) is sent **once per job** as the
  result of one small task, which every strip task depends on (a worker fetches it once).
  It is a task result, not data from ``client.scatter``, so a lost copy is recomputed from
  the graph;
* ``row_args`` are sliced per strip here and embedded in that strip's task (O(n) in all);
* each strip is **one task**: it runs the strip kernel on its rows of C (one read of C per
  strip per job: the fused kernel does the f-update and the column partials from that read),
  in chunks that bound a generic kernel's temporaries, merging the chunks' partials itself.
  Strips are sized for scheduling (one or two tasks per worker thread), chunks for memory
  (:func:`plan_strip_rows`);
* the strips' results are merged on the cluster by merge tasks arranged in exactly the tree
  of :func:`bigsink.kernels.tree_reduce` (it builds the tree here, with futures as items),
  carrying the strips' row outputs along, so the coordinator gathers one result: all row
  outputs (n, ...) and the final partial (m, ...). The floating-point result of a job depends only
  on the strips and chunks, never on the timing or the number of workers (held objects,
  below, sum per worker: their results depend on how the strips are dealt, by rounding).

Two modes:

* **resident**: each strip is loaded once per session as a task result
  (``cost.rows(start, stop)`` run on a worker) and kept there; strip tasks run next to
  their data. Strips are dealt to the workers in proportion to their threads
  (left to itself the scheduler put 4 of 6 strips on one of 2 workers, which then did
  twice the other's work every pass); a lost worker's strips are recomputed elsewhere from
  the cost source (lineage).
* **streaming**: each strip task reads its rows from the cost source and drops them, so a
  worker holds a few strips at a time however large C is.

Workers can also **hold** objects next to C's rows (:meth:`DaskSession.hold`): one Dask
actor per worker, made there from the strips dealt to it (resident), or from the cost
source, which it reads those strips from (streaming a Zarr store), and called directly (a
few ms per round, no scheduler in the way). The scaling path keeps its kernels so
(:class:`bigsink.kernels.scaling.KernelRows`: in memory next to resident strips, in a scratch file
on the worker's disk when streaming); actors are not recomputed after a worker loss (a
call then raises HeldLost, and the solver goes on in the log domain).

``mode="auto"`` takes resident when C fits in less than half of the cluster's total worker
memory limit, else streaming. An in-memory matrix (:class:`~bigsink.costs.DenseCost`) has no
store to stream from: its strips are always sent once and kept (resident); they are embedded
in their load tasks, so the scheduler can recompute them after a worker loss.

Worker deaths are survived by lineage recomputation; each death counts toward
``distributed.scheduler.allowed-failures`` (default 3) for the tasks that were running on
it. ``retries`` re-runs a task that raised (e.g. a transient store read error).
"""

from __future__ import annotations

import itertools
import math
import sys
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._net import dask_address, probe
from .._xp import like, to_numpy
from ..costs import CostSource, DenseCost, read_strip, reads_store, strip_module
from ..errors import ClusterError, InputError
from ..kernels import tree_reduce
from ..scratch import scratch_room
from .base import Held, HeldLost, StripJob, apply_kernel, strip_rows

__all__ = [
    "CONNECT_TIMEOUT_S", "MODES", "DaskExecutor", "DaskSession", "config_seconds", "connect",
    "local_cluster", "plan_strip_rows", "run_items",
]

#: Seconds to wait for a scheduler given by address (and for its first worker), unless
#: ``dask.config`` says otherwise (:func:`config_seconds`).
CONNECT_TIMEOUT_S = 5.0


#: bigsink's defaults in ``dask.config`` (the ``bigsink`` namespace), as Dask's own
#: libraries ship theirs: overridden by the user's Dask configuration and environment.
DEFAULTS = Path(__file__).resolve().parent.parent / "bigsink.yaml"


def _register_defaults() -> None:
    """Add :data:`DEFAULTS` to ``dask.config``'s defaults (once per process)."""
    import dask.config
    import yaml

    with open(DEFAULTS) as fh:
        dask.config.update_defaults(yaml.safe_load(fh))


_register_defaults()


def config_seconds(name: str, default: float) -> float:
    """Seconds from ``dask.config``'s ``bigsink.<name>`` (a number, or a Dask duration such
    as ``"30s"``; e.g. ``DASK_BIGSINK__WORKER_WAIT=2m`` in the environment), else
    ``default`` (also where the setting is null). Keys (``bigsink.yaml``):
    ``connect-timeout`` (reaching a scheduler), ``worker-wait`` (its first worker; null:
    the connect timeout)."""
    import dask
    from dask.utils import parse_timedelta

    value = dask.config.get(f"bigsink.{name}", None)
    value = default if value is None else value
    try:
        seconds = parse_timedelta(value, default="s")
    except (TypeError, ValueError, KeyError):
        seconds = None
    if seconds is None or not seconds > 0:
        raise InputError(f"dask.config bigsink.{name}: expected a positive duration such as "
                         f"'10s'; got {value!r}.")
    return float(seconds)

#: What ``mode=`` accepts.
MODES = ("auto", "resident", "streaming")


def config_share(name: str) -> float:
    """A share in (0, 1] from ``dask.config``'s ``bigsink.<name>`` (``bigsink.yaml``:
    ``resident-share``, ``worker-share``), or an InputError naming the setting."""
    import dask

    value = dask.config.get(f"bigsink.{name}")
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = math.nan
    if not 0 < share <= 1:
        raise InputError(f"dask.config bigsink.{name}: expected a share in (0, 1]; got "
                         f"{value!r}.")
    return share

#: A strip task should touch at least this many elements, so that the ~2 ms a task costs
#: the scheduler stays small against its compute (a few ns per element).
MIN_TASK_ELEMENTS = 1 << 21
#: Bounds of the automatic memory budget of one strip task (strip + temporaries).
MIN_TASK_BYTES = 4 << 20
MAX_TASK_BYTES = 512 << 20


# ---------------------------------------------------------------------------- tasks
# Module-level functions: they run on the workers.


def _identity(x: Any) -> Any:
    """Task body that returns its (embedded) argument: data held as a recomputable result."""
    return x


def _to_gpu(x: Any) -> Any:
    """Task body of a resident strip of a GPU matrix: the embedded NumPy strip on this
    worker's GPU (CuPy)."""
    from .._xp import import_cupy

    return import_cupy().asarray(x)


def _load_strip(cost: CostSource, start: int, stop: int) -> Any:
    """Task body of a resident strip: rows ``[start, stop)`` read from the cost source."""
    return read_strip(cost, start, stop)


def _strip_task(
    source: Any, start: int, stop: int, stream: bool, kernel: Any, merge: Any,
    chunk_rows: int | None, row_args: tuple[Any, ...], shared: tuple[Any, ...],
    blocks: Any = None,
) -> tuple[Any, Any]:
    """Task body of one strip of a job: ``kernel`` over rows ``[start, stop)`` of C in
    chunks of ``chunk_rows`` rows, partials merged by ``merge``
    (:func:`~bigsink.executors.base.apply_kernel`).

    ``source`` is the strip itself (resident) or the cost source to read it from
    (``stream=True``; the strip is dropped when the task ends; only the column blocks
    ``blocks`` ((nJ,) bool, None: all) are read). Inputs are moved to the strip's
    namespace/device first; results come back as NumPy.
    """
    C = read_strip(source, start, stop, blocks) if stream else source
    row_in = [like(x, C) for x in row_args]
    shared_in = [like(x, C) for x in shared]
    row_out, partial = apply_kernel(StripJob(kernel, merge), C, start, row_in, shared_in,
                                    chunk_rows)
    return to_numpy(row_out), to_numpy(partial)


def _close(obj: Any) -> None:
    """A held object's ``close`` (what :meth:`DaskSession.release` calls on each actor)."""
    obj.close()


def _merge_task(left: tuple[Any, Any], right: tuple[Any, Any], merge: Any) -> tuple[Any, Any]:
    """Task body of one node of the merge tree: rows concatenated in order, partials merged."""
    rows = None if left[0] is None else np.concatenate([left[0], right[0]], axis=0)
    return rows, merge(left[1], right[1])


# ---------------------------------------------------------------------------- planning


def _workers(client: Any) -> dict[str, dict[str, Any]]:
    """The scheduler's view of every worker (address -> info)."""
    info = client.scheduler_info(n_workers=-1)
    return dict(info.get("workers", {}))


def _host_memory() -> int:
    """This machine's memory, standing in for a worker started without a memory limit."""
    import psutil

    return int(psutil.virtual_memory().total)


def plan_strip_rows(
    shape: tuple[int, int], itemsize: int, width: int, workers: dict[str, dict[str, Any]],
    resident: bool, block_rows: int = 1,
) -> tuple[int, int]:
    """``(rows per strip task, rows per kernel chunk)`` from the cluster's memory and threads.

    A task's budget is the smallest, over workers, of ``(worker-share * memory_limit -
    current memory - resident share) / threads``. Within it a task runs its kernel on
    chunks of its strip, each with about three ``(rows, m, width)`` float64 temporaries (a
    generic kernel's; the fused ones need O(m)), and, streaming, holds the strip it read:
    each gets half of the budget. Strips are made as large as one task per thread when
    resident (each strip is placed on a worker thread: balanced without more tasks; each
    costs the scheduler ~2 ms and a partial to merge), rounded up to whole block rows of
    ``block_rows``; streaming, two tasks per thread (the scheduler balances them as they
    come); and no smaller than ``MIN_TASK_ELEMENTS`` elements.
    """
    n, m = shape
    total_bytes = n * m * itemsize
    threads = sum(int(w.get("nthreads", 1)) for w in workers.values()) or 1
    budget = MAX_TASK_BYTES
    for w in workers.values():
        limit = int(w.get("memory_limit") or 0) or _host_memory()
        used = int((w.get("metrics") or {}).get("memory") or 0)
        share = total_bytes / max(1, len(workers)) if resident else 0
        budget = min(budget, int((config_share("worker-share") * limit - used - share)
                                 / max(1, w["nthreads"])))
    budget = max(MIN_TASK_BYTES, budget)
    chunk = max(1, budget // 2 // (m * 3 * 8 * max(1, width)))     # kernel temporaries
    rows = max(math.ceil(n / ((1 if resident else 2) * threads)),
               math.ceil(MIN_TASK_ELEMENTS / m))
    if resident:
        rows = math.ceil(rows / block_rows) * block_rows              # one strip per thread
    else:                                                           # the strip read
        rows = min(rows, max(1, budget // 2 // (m * itemsize)))
    return int(max(1, min(n, rows))), int(min(chunk, n))


def _cluster_memory(workers: dict[str, dict[str, Any]]) -> int:
    """Sum of the workers' memory limits (host memory for a worker without one)."""
    return sum(int(w.get("memory_limit") or 0) or _host_memory() for w in workers.values())


# ---------------------------------------------------------------------------- session


class DaskSession:
    """One cost source on a Dask cluster for the length of a solve.

    Holds the futures of the cost source (or, resident, of its strips) so that the cluster
    keeps them, and can recompute them, until :meth:`close`.
    """

    def __init__(
        self, client: Any, cost: CostSource, strips: list[tuple[int, int]], mode: str,
        retries: int, owns_client: bool, chunk_rows: int | None = None,
        slots: list[str] | None = None, workers: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.client = client
        self._address = str(client.scheduler.address)
        self.cost = cost
        self.strips = strips
        self.chunk_rows = chunk_rows
        self.mode = mode
        self.slots = slots or []
        self.workers = workers or {}
        self.retries = retries
        self._owns_client = owns_client
        self.dashboard = dashboard_link(client)
        origin = "" if owns_client else ", through your client"
        self.where = (f"dask: scheduler {self._address}, {len(self.workers)} worker"
                      f"{'s' if len(self.workers) != 1 else ''} ({mode}){origin}"
                      + (f"; dashboard {self.dashboard}" if self.dashboard else ""))
        self._token = uuid.uuid4().hex[:12]
        self._jobs = itertools.count()
        self._source: Any = None
        self._data: list[Any] = []

        def place(k: int) -> dict[str, Any]:
            """Where resident strip ``k`` is loaded: the strips dealt to the worker threads
            in consecutive runs, so that neighbours (merged first) share a worker (a
            preference: a lost worker's strips are recomputed elsewhere)."""
            if not slots:
                return {}
            return {"workers": [self._slot(k)], "allow_other_workers": True}

        if isinstance(cost, DenseCost):
            # No store to read from: each strip travels once, embedded in its load task
            # (as NumPy; a matrix given on the GPU is put on each worker's GPU there).
            load = _to_gpu if strip_module(cost) == "cupy" else _identity
            self._data = [
                client.submit(load, to_numpy(cost.rows(s0, s1)), pure=False,
                              key=(f"bigsink-strip-{self._token}", k), **place(k))
                for k, (s0, s1) in enumerate(strips)
            ]
            return
        self._source = client.submit(_identity, cost, pure=False,
                                     key=f"bigsink-cost-{self._token}")
        if mode == "resident":
            self._data = [
                client.submit(_load_strip, self._source, s0, s1, pure=False, retries=retries,
                              key=(f"bigsink-strip-{self._token}", k), **place(k))
                for k, (s0, s1) in enumerate(strips)
            ]

    def _slot(self, k: int) -> str:
        """The worker thread strip ``k`` is dealt to (consecutive runs of strips each)."""
        return self.slots[k * len(self.slots) // len(self.strips)]

    def _holds(self) -> bool:
        """Whether the workers can hold objects next to C's rows (what :meth:`hold` needs):
        NumPy strips that they keep resident, or that they stream from a Zarr store (the
        objects then read their rows from it)."""
        if not self.slots or strip_module(self.cost) != "numpy":
            return False
        return bool(self._data) or (self._source is not None and reads_store(self.cost))

    def hold_room(self) -> tuple[int, str]:
        """Bytes that held objects may take on the workers, and where (for messages): next
        to resident strips, ``bigsink.worker-share`` of their memory limits less C's
        strips; streaming a store, the scratch room of their temporary directories
        (:func:`~bigsink.scratch.scratch_room`, counted once per host); none otherwise."""
        if not self._holds():
            return 0, (f"the workers' memory, which holds no strips of C here (mode "
                       f"{self.mode!r}, {strip_module(self.cost)} strips): the scaling path "
                       "needs resident NumPy strips, or a Zarr store to stream")
        if not self._data:
            try:
                rooms = self.client.run(scratch_room)          # address -> (bytes, where)
            except Exception as exc:        # (no usable TMPDIR there, a worker going away)
                return 0, f"the workers' scratch room, which they could not report ({exc!r})"
            hosts: dict[str, int] = {}
            for address, (room, _) in rooms.items():  # a host's workers share its disk
                host = str(self.workers.get(address, {}).get("host", address))
                hosts[host] = min(room, hosts.get(host, room))
            total = sum(hosts.values())
            address, (_, where) = min(rooms.items())
            return total, (f"the workers' scratch room ({total / 2**30:.1f} GiB on "
                           f"{len(hosts)} host(s); on {address}: {where})")
        n, m = self.cost.shape
        worker_share = config_share("worker-share")
        share = sum(worker_share * (int(w.get("memory_limit") or 0) or _host_memory())
                    for w in self.workers.values())
        room = max(0, int(share - n * m * np.dtype(self.cost.dtype).itemsize))
        return room, (f"{worker_share:.0%} of the workers' memory less C's strips "
                      f"({room / 2**30:.1f} GiB)")

    def hold(self, factory: Callable[..., Any]) -> list[Held]:
        """One object per worker, made there (a Dask actor) from the strips dealt to it
        (:meth:`_slot`: its resident strips, or the cost source when streaming), with as
        many threads as the worker has; see :class:`~bigsink.executors.base.Session`.

        Actors are not recomputed after a worker dies: a call then raises HeldLost, and the
        strips themselves are recomputed by lineage for the jobs that follow."""
        if not self._holds():
            raise HeldLost(self.hold_room()[1])
        groups: dict[str, list[int]] = {}
        for k in range(len(self.strips)):
            groups.setdefault(self._slot(k), []).append(k)
        made = []
        for address, ks in groups.items():
            threads = int(self.workers.get(address, {}).get("nthreads", 1))
            source = [self._data[k] for k in ks] if self._data else self._source
            made.append((ks, self.client.submit(
                factory, source, [self.strips[k] for k in ks],
                threads=threads, actor=True, workers=[address], allow_other_workers=True,
                pure=False, key=f"bigsink-held-{self._token}-{next(self._jobs)}")))
        try:        # handles bind to the current client: ours, not the process default
            with self.client.as_current():
                return [Held(self.strips[ks[0]][0], self.strips[ks[-1]][1], fut.result(), fut)
                        for ks, fut in sorted(made, key=lambda kf: kf[0][0])]
        except Exception as exc:        # (distributed raises several types for a lost worker)
            raise HeldLost(f"a held object could not be made: {exc!r}") from exc

    def call(
        self, held: list[Held], method: Callable[..., Any], args: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Call the actors at once (``method`` by its name on each actor handle) and wait
        for all; see :class:`~bigsink.executors.base.Session`."""
        name = method.__name__
        try:
            futures = [getattr(h.obj, name)(*a) for h, a in zip(held, args, strict=True)]
            return [f.result() for f in futures]
        except Exception as exc:        # "Worker holding Actor was lost" is a RuntimeError
            raise HeldLost(f"{name}: a held object was lost ({exc!r})") from exc

    def release(self, held: list[Held]) -> None:
        """Close the actors (their memory is freed on the workers now, not when this
        process's garbage collector gets to the handles) and release their futures."""
        try:
            self.call(held, _close, [()] * len(held))
        except HeldLost:                        # gone already
            pass
        for h in held:             # ours, and the handle's own (handles sit in reference
            for future in (h.keep, getattr(h.obj, "_future", None)):   # cycles: freed late)
                if future is not None:
                    future.release()

    def run(self, job: StripJob) -> tuple[Any, Any]:
        """Run ``job`` on every strip; see :class:`~bigsink.executors.base.Session`.

        Submits one task for the shared values, one per strip, and the merge tree; waits for
        and gathers only the tree's root.
        """
        client = self.client
        name = getattr(job.kernel, "__name__", "strip")
        prefix = f"bigsink-{name}-{self._token}-{next(self._jobs)}"
        shared = client.submit(_identity, tuple(job.shared), pure=False, key=f"{prefix}-shared")
        stream = not self._data
        parts = []
        for k, (s0, s1) in enumerate(self.strips):
            source = self._source if stream else self._data[k]
            row_args = tuple(x[s0:s1] for x in job.row_args)       # (r, ...) slices: O(n) total
            blocks = job.strip_blocks(self.cost.grid.block_shape[0], s0, s1) if stream else None
            parts.append(client.submit(
                _strip_task, source, s0, s1, stream, job.kernel, job.merge, self.chunk_rows,
                row_args, shared, blocks,
                pure=False, retries=self.retries, key=(f"{prefix}-strip", k),
            ))
        counter = itertools.count()

        def merge(p: Any, q: Any) -> Any:
            return client.submit(_merge_task, p, q, job.merge, pure=False,
                                 retries=self.retries, key=(f"{prefix}-merge", next(counter)))

        root = tree_reduce(parts, merge)
        try:
            rows, partial = root.result()
        except Exception as exc:
            if client.status != "running":          # the scheduler is gone, not a task
                raise ClusterError(
                    f"lost the Dask scheduler at {self._address} mid-solve "
                    f"({type(exc).__name__}). Start it (and its workers) again and rerun "
                    "with the same checkpoint and resume=True (CLI: --checkpoint PATH "
                    "--resume) to go on from the last checkpoint.") from exc
            raise
        return rows, partial

    def close(self) -> None:
        """Release the strips and the cost source on the cluster (and an owned client)."""
        self._data = []
        self._source = None
        if self._owns_client:
            self.client.close()


# ---------------------------------------------------------------------------- executor


class DaskExecutor:
    """Run strips as tasks on a Dask cluster.

    Args:
        client: a ``distributed.Client``, a cluster object (``LocalCluster``, ...), or a
            scheduler address (``"tcp://host:8786"``) to connect to for the length of each
            solve (checked first, see :func:`connect`).
        mode: "auto" (resident when C takes less than half of the workers' total memory
            limit, else streaming), "resident" or "streaming"; see the module docstring.
        strip_bytes: memory of one strip task's kernel temporaries, which sets the rows per
            strip, one kernel call each (as for the local executor); default: one strip
            per worker thread when resident (two streaming), their kernels run in chunks
            planned from the workers' memory limits (:func:`plan_strip_rows`). Strips are
            aligned to C's blocks.
        connect_timeout: seconds to wait for the scheduler; None: ``dask.config``'s
            ``bigsink.connect-timeout`` (default 5 s). The wait for its first worker is
            ``bigsink.worker-wait`` (default: the connect timeout); see
            :func:`config_seconds`.
        retries: re-runs of a task that raised (transient read errors); worker deaths are
            handled by the scheduler's lineage recomputation instead.
    """

    def __init__(
        self, client: Any, mode: str = "auto", strip_bytes: int | None = None,
        connect_timeout: float | None = None, retries: int = 2,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}; got {mode!r}.")
        if strip_bytes is not None and (not isinstance(strip_bytes, int) or strip_bytes < 1):
            raise InputError(
                f"strip_bytes must be a positive number of bytes or None; got {strip_bytes!r}."
            )
        if not isinstance(client, str | bytes) and not (
                hasattr(client, "submit") or hasattr(client, "scheduler_address")):
            raise InputError(
                f"client must be a distributed.Client, a cluster (e.g. LocalCluster) or a "
                f"scheduler address string; got {type(client).__name__}."
            )
        self.client = client.decode() if isinstance(client, bytes) else client
        self.mode = mode
        self.strip_bytes = strip_bytes
        self.connect_timeout = (config_seconds("connect-timeout", CONNECT_TIMEOUT_S)
                                if connect_timeout is None else float(connect_timeout))
        self.retries = int(retries)

    def _connect(self) -> tuple[Any, bool]:
        """The client to use, and whether this executor opened it (and must close it)."""
        return connect(self.client, self.connect_timeout)

    def open(self, cost: CostSource, width: int) -> DaskSession:
        """Bind to ``cost``: choose the mode and the strips, load resident strips."""
        client, owns = self._connect()
        try:
            wait = config_seconds("worker-wait", self.connect_timeout)
            try:
                client.wait_for_workers(1, timeout=wait)
            except (OSError, TimeoutError) as exc:
                raise InputError(
                    f"client: the Dask scheduler at {client.scheduler.address!r} has no "
                    f"workers (waited {wait:g} s; dask.config bigsink.worker-wait sets the "
                    "wait). Start some with `dask worker <address>`."
                ) from exc
            workers = _workers(client)
            n, m = cost.shape
            itemsize = np.dtype(cost.dtype).itemsize
            mode = self.mode
            if isinstance(cost, DenseCost):
                mode = "resident"
            elif mode == "auto":
                fits = n * m * itemsize < config_share("resident-share") * _cluster_memory(workers)
                mode = "resident" if fits else "streaming"
            block_rows = cost.grid.block_shape[0]
            if self.strip_bytes is not None:
                rows = chunk = strip_rows(m, width, self.strip_bytes)
            else:
                rows, chunk = plan_strip_rows(cost.shape, itemsize, width, workers,
                                              mode == "resident", block_rows)
            if mode == "streaming" and rows < block_rows:
                warnings.warn(
                    f"a block row of C ({block_rows} rows x {m} columns) is larger than one "
                    f"strip task may hold ({rows} rows), so streaming reads each block "
                    f"{math.ceil(block_rows / rows)} times per pass. Store C with fewer rows "
                    "per chunk, or give the workers more memory.",
                    stacklevel=3,
                )
            slots = [address for address, w in sorted(workers.items())   # one per thread
                     for _ in range(int(w.get("nthreads", 1)))]
            # an explicit strip size is kept; a planned one evens out over the threads
            strips = cost.grid.row_strips(rows, 1 if self.strip_bytes else len(slots))
            return DaskSession(client, cost, strips, mode, self.retries, owns, chunk, slots,
                               workers)
        except BaseException:
            if owns:
                client.close()
            raise


# ---------------------------------------------------------------------------- other work


def dashboard_link(client: Any) -> str:
    """The dashboard address of ``client``'s scheduler, or "" when it serves none (no
    bokeh there, or started without one)."""
    try:
        info = client.scheduler_info()
        services = info.get("services", {}) if isinstance(info, dict) else {}
        if "dashboard" not in services:
            return ""
        return str(client.dashboard_link)
    except Exception:                          # a dashboard is a convenience, never an error
        return ""


def default_client() -> Any:
    """The active default ``distributed.Client`` of this process (``Client()`` made one,
    or ``set_as_default``), or None; distributed is not imported for this."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client as current

    try:
        client = current()
    except ValueError:                          # none
        return None
    return client if getattr(client, "status", "") == "running" else None


def connect(client: Any, timeout: float = CONNECT_TIMEOUT_S) -> tuple[Any, bool]:
    """``(Client, owned)`` from a ``distributed.Client``, a cluster object (anything with a
    ``scheduler_address``: ``LocalCluster``, a dask-jobqueue or dask-kubernetes cluster) or
    a scheduler address.

    ``owned`` is True when this call opened the connection (the caller closes it). An
    address is checked first (:mod:`bigsink._net`: malformed, nothing listening, or a web
    server such as the dashboard: an InputError in seconds, where a ``Client`` would wait
    forever); one that then does not answer within ``timeout`` seconds is an InputError.
    """
    from distributed import Client

    if isinstance(client, Client):
        return client, False
    if hasattr(client, "scheduler_address"):                     # a cluster object
        return Client(client, timeout=timeout, set_as_default=False), True
    if not isinstance(client, str):
        raise InputError(
            f"client must be a distributed.Client, a cluster (e.g. LocalCluster) or a "
            f"scheduler address such as 'tcp://127.0.0.1:8786'; got {client!r}."
        )
    address = dask_address("client", client)
    if address.scheme == "tls":
        from distributed.security import Security

        if Security().get_connection_args("client").get("ssl_context") is None:
            raise InputError(
                f"client: {client!r} is a TLS scheduler, but dask.config holds no TLS "
                "certificates for this client: set distributed.comm.tls.ca-file, "
                "distributed.comm.tls.client.cert and distributed.comm.tls.client.key (in "
                "the environment: DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT, "
                "..._CLIENT__KEY). See docs/security.md.")
    if address.scheme == "tcp":
        probe("client", address, "a Dask scheduler", "dask scheduler",
              "the dashboard (usually :8787)? The scheduler usually listens on :8786",
              timeout=timeout)
    try:
        return Client(str(address), timeout=timeout, set_as_default=False), True
    except (OSError, TimeoutError) as exc:
        raise InputError(
            f"client: could not reach a Dask scheduler at {client!r} within {timeout:g} s "
            f"({type(exc).__name__}: {exc}). Check the address and that `dask scheduler` is "
            "running there (cluster/local.sh starts one)."
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

    cl, owned = connect(client, config_seconds("connect-timeout", CONNECT_TIMEOUT_S))
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


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1,
                  memory_limit: str | None = None) -> tuple[Any, Any]:
    """A ``LocalCluster`` of worker processes on 127.0.0.1 (no dashboard) and a client of
    it, for benchmarks and examples: ``(client, cluster)``; close both when done.
    ``memory_limit`` per worker (None: Dask's default share of the machine)."""
    from distributed import Client, LocalCluster

    extra = {} if memory_limit is None else {"memory_limit": memory_limit}
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                           processes=True, host="127.0.0.1", dashboard_address=None,
                           **extra)
    return Client(cluster), cluster
