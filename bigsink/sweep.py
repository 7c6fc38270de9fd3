"""Ray sweeps: many ``(a, b)`` pairs and eps values against one shared cost.

The only module that imports Ray, and only inside the functions that need it, so
``import bigsink`` works without the ``bigsink[ray]`` extra.

How a sweep runs:

1. Every pair is validated on the driver first (:func:`bigsink.problem.make_problem`); a pair
   with bad weights gets error rows and never reaches a batch, so it cannot spoil the others.
2. The cost is shared once: ``ray.put`` of the cost source. A :class:`DenseCost` array travels
   as an out-of-band buffer that tasks on a node read zero-copy; a :class:`ZarrCost` pickles as
   its path (workers reopen the store); a :class:`PointCloudCost` pickles its coordinates.
3. Valid pairs are cut into batches of ``batch_size``: one task solves K pairs together
   (``a`` (n, K), ``b`` (m, K): K columns per pass over C) along the eps chain, coarsest
   first, each eps warm-started from the previous one's potentials (``solve(init=(f, g))``).
4. Results stream back with ``ray.wait`` as tasks finish. Tasks whose worker dies are retried
   (``max_retries``); a batch that still fails gets error rows naming the reason.
5. With ``out``, the table is rewritten (to a temporary name, then renamed) as each batch
   completes, and the potentials of its rows are in ``save_potentials`` before that: a sweep
   that stops keeps every finished row, and ``resume=True`` solves only the rows missing
   from the table (or failed there). The Ray head is watched while the sweep waits: losing
   it is a :class:`~bigsink.errors.ClusterError` in the caller within
   ``HEAD_LOST_S`` seconds, naming the head and the rows kept.

A local Ray instance that the sweep starts listens on 127.0.0.1 only, with no dashboard
(:func:`_loopback_only`; ``docs/security.md``).

Each pair's answer is the converged solution at its eps; with a tight ``tol`` it does not
depend on the warm-start path or on which pairs share a batch (a batch stops when its worst
pair reaches ``tol``, so its other pairs are only ever more converged).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import astuple, dataclass, fields
from typing import Any

import numpy as np

from ._fs import FORMAT, atomic_path, check_target, local_path
from ._net import ray_address
from ._progress import progress_bar
from ._xp import import_cupy, to_numpy
from .costs import CostSource, DenseCost, as_cost
from .errors import ClusterError, ConvergenceWarning, InputError, NumericalError
from .executors import LocalExecutor
from .problem import check_eps, check_max_iter, check_positive, make_problem
from .solver import solve

__all__ = ["Pairs", "SweepResults", "SweepRow", "sweep"]

#: Default cap on the pairs solved together by one task.
MAX_BATCH = 64
#: Seconds between checks that the Ray head still answers while the sweep waits.
HEAD_CHECK_S = 1.0
#: Seconds without an answer from the Ray head after which the sweep gives up (Ray's own
#: driver ends the process after 60 s without its head).
HEAD_LOST_S = 6.0
#: Ray's switch (meant for laptops) under which a node takes the loopback address: every
#: server of a local instance then listens on 127.0.0.1 only (checked with Ray 2.60).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class Pairs:
    """An index of histogram pairs: pair ``p`` is ``(sources[index[p, 0]], targets[index[p, 1]])``.

    Rows of results carry the source and target ids ``index[p]``. Histograms are kept as given
    (validated per pair when the sweep starts), so one bad histogram only fails its own pairs.

    Attributes:
        sources: source histograms, each (n,).
        targets: target histograms, each (m,).
        index: (P, 2) integer array of (source id, target id).
    """

    sources: tuple[Any, ...]
    targets: tuple[Any, ...]
    index: np.ndarray

    def __post_init__(self) -> None:
        idx = np.asarray(self.index)
        if idx.ndim != 2 or idx.shape[1] != 2 or not np.issubdtype(idx.dtype, np.integer):
            raise InputError(
                f"pairs index must be an integer array of shape (P, 2); got shape {idx.shape} "
                f"and dtype {idx.dtype}."
            )
        for col, name, hist in ((0, "source", self.sources), (1, "target", self.targets)):
            bad = (idx[:, col] < 0) | (idx[:, col] >= len(hist))
            if bad.any():
                p = int(np.argmax(bad))
                raise InputError(
                    f"pairs index row {p} names {name} {int(idx[p, col])} but there are only "
                    f"{len(hist)} {name}s; ids must be in [0, {len(hist)})."
                )
        object.__setattr__(self, "index", idx.astype(np.int64))

    @classmethod
    def one_vs_many(cls, source: Any, targets: Any) -> Pairs:
        """One source against every target: pairs ``(0, t)`` for t = 0 .. T-1."""
        tg = tuple(targets)
        return cls((source,), tg, np.stack([np.zeros(len(tg), int), np.arange(len(tg))], 1))

    @classmethod
    def all_pairs(cls, histograms: Any, *, include_self: bool = False) -> Pairs:
        """Every unordered pair ``(i, j)``, ``i < j`` (``i <= j`` with ``include_self``), of
        one collection of histograms on a square cost."""
        h = tuple(histograms)
        iu = np.triu_indices(len(h), k=0 if include_self else 1)
        return cls(h, h, np.stack(iu, axis=1).astype(np.int64).reshape(-1, 2))

    @classmethod
    def from_sequence(cls, pairs: Iterable[tuple[Any, Any]]) -> Pairs:
        """Pairs ``(a_k, b_k)``; pair k has source id and target id k."""
        items = list(pairs)
        for k, item in enumerate(items):
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise InputError(f"pairs[{k}] must be an (a, b) pair; got {type(item).__name__}.")
        ids = np.arange(len(items))
        return cls(tuple(p[0] for p in items), tuple(p[1] for p in items),
                   np.stack([ids, ids], axis=1).reshape(-1, 2))

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def pair(self, p: int) -> tuple[Any, Any]:
        """The weights ``(a, b)`` of pair ``p``."""
        s, t = self.index[p]
        return self.sources[s], self.targets[t]


def as_pairs(pairs: Any) -> Pairs:
    """A :class:`Pairs` from a Pairs or a sequence of ``(a, b)``."""
    if isinstance(pairs, Pairs):
        return pairs
    if isinstance(pairs, str | bytes | np.ndarray) or not isinstance(pairs, Iterable):
        raise InputError(
            f"pairs must be a sequence of (a, b) or a bigsink.Pairs; got {type(pairs).__name__}. "
            "For weight matrices use Pairs.from_sequence(zip(A, B))."
        )
    return Pairs.from_sequence(pairs)


@dataclass(frozen=True)
class SweepRow:
    """One (pair, eps) result. Numbers are NaN (and ``error`` a message) for a failed row.

    ``n_iter`` and ``seconds`` belong to the batched solve that produced the row: ``n_iter`` is
    its iteration count (shared by its K pairs), ``seconds`` its wall time divided by K.
    """

    pair: int
    source: int
    target: int
    eps: float
    transport_cost: float
    reg_cost: float
    n_iter: int
    converged: bool
    row_error: float
    col_error: float
    seconds: float
    error: str | None = None


_COLUMNS = tuple(f.name for f in fields(SweepRow))


#: The suffixes a sweep table is written as (anything else is refused, not written as CSV).
TABLE_SUFFIXES = (".csv", ".parquet")


def _check_table_path(name: str, path: str) -> None:
    """InputError unless ``path`` names a table format bigsink writes."""
    if not path.endswith(TABLE_SUFFIXES):
        raise InputError(f"{name}: {path!r}: a sweep table is written as .csv or .parquet "
                         "(needs pyarrow); choose one of those suffixes.")


def _is_table(path: str) -> bool:
    """Whether ``path`` holds a sweep table bigsink wrote (its columns, in order)."""
    try:
        SweepResults.load(path)
    except Exception:
        return False
    return True


def _failed(pair: int, ids: tuple[int, int], eps: float, reason: str) -> SweepRow:
    """An error row."""
    nan = math.nan
    return SweepRow(pair, ids[0], ids[1], eps, nan, nan, 0, False, nan, nan, 0.0, reason)


@dataclass(frozen=True)
class SweepResults:
    """All rows of a sweep, ordered by pair then eps (coarsest first).

    Attributes:
        rows: one :class:`SweepRow` per (pair, eps).
        eps: the eps values, coarsest first.
        tol: the tolerance every solve ran to.
        cluster: the Ray cluster the sweep ran on (its GCS address, CPUs and GPUs, who
            started it) and the keys of its ``runtime_env``; "" when nothing was left to
            solve, or loaded from a table.
    """

    rows: tuple[SweepRow, ...]
    eps: tuple[float, ...] = ()
    tol: float = math.nan
    cluster: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def errors(self) -> tuple[SweepRow, ...]:
        """Rows that failed."""
        return tuple(r for r in self.rows if r.error is not None)

    def column(self, name: str) -> np.ndarray:
        """One column as an array."""
        if name not in _COLUMNS:
            raise InputError(f"no column {name!r}; columns are {_COLUMNS}.")
        return np.array([getattr(r, name) for r in self.rows])

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame([astuple(r) for r in self.rows], columns=list(_COLUMNS))

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the table: ``.parquet`` (needs pyarrow) or CSV (any other suffix).

        Written to a temporary name and renamed when complete. An existing ``path`` is an
        InputError unless ``overwrite``.
        """
        path = local_path("path", path)
        _check_table_path("path", path)
        check_target("path", path, overwrite, _is_table)
        self._write(path)

    def _write(self, path: str) -> None:
        """Write the table to ``path`` atomically (a temporary name, then a rename)."""
        with atomic_path(path) as tmp:
            if path.endswith(".parquet"):
                try:
                    import pyarrow as pa
                    import pyarrow.parquet as pq
                except ImportError:
                    raise InputError(
                        f"saving {path!r} as Parquet needs pyarrow (pip install pyarrow); "
                        "or save to a .csv path."
                    ) from None
                table = pa.table({c: [getattr(r, c) for r in self.rows] for c in _COLUMNS})
                pq.write_table(table, tmp)
            else:
                with open(tmp, "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(_COLUMNS)
                    for r in self.rows:
                        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v
                                    for v in astuple(r)])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepResults:
        """Read a table written by :meth:`save` (CSV, or Parquet with pyarrow); an
        InputError for a file that is not a sweep table."""
        where = os.fspath(path)
        if where.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(where).to_pylist()
            if table and tuple(table[0]) != _COLUMNS:
                raise InputError(f"{where!r} is not a bigsink sweep table (columns "
                                 f"{tuple(table[0])}).")
            rows = [SweepRow(**rec) for rec in table]
            return cls(tuple(rows), tuple(dict.fromkeys(r.eps for r in rows)))
        conv = {f.name: f.type for f in fields(SweepRow)}
        rows = []
        with open(where, newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != _COLUMNS:
                raise InputError(f"{where!r} is not a bigsink sweep table: its header is "
                                 f"{reader.fieldnames}, expected {list(_COLUMNS)}.")
            for rec in reader:
                vals: dict[str, Any] = {}
                for name, text in rec.items():
                    t = conv[name]
                    if t == "int":
                        vals[name] = int(text)
                    elif t == "float":
                        vals[name] = float(text)
                    elif t == "bool":
                        vals[name] = text == "True"
                    else:
                        vals[name] = text or None
                rows.append(SweepRow(**vals))
        eps = tuple(dict.fromkeys(r.eps for r in rows))
        return cls(tuple(rows), eps)


# --------------------------------------------------------------------------------- the tasks


def solve_chain(
    cost: CostSource, A: np.ndarray, B: np.ndarray, eps: Sequence[float], tol: float,
    max_iter: int, keep: bool,
) -> list[tuple[int, float, float, float, int, bool, float, float, float, str | None,
                np.ndarray | None, np.ndarray | None]]:
    """Solve K pairs (A (n, K), B (m, K)) along the eps chain ``eps`` (coarsest first).

    Each eps starts from the previous one's potentials. Returns one record per (pair k, eps):
    ``(k, eps, transport, reg, n_iter, converged, row_err, col_err, seconds, error, f, g)``.
    A batch that fails numerically is re-solved pair by pair so the failure stays with its pair.
    """
    K = A.shape[1]
    executor = LocalExecutor(threads=1)
    out: list[Any] = []
    init: tuple[np.ndarray, np.ndarray] | None = None
    for e in eps:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = solve(cost, A, B, eps=e, tol=tol, max_iter=max_iter, init=init,
                            executor=executor, progress=False)
        except NumericalError as exc:
            if K == 1:
                out.append((0, e, *([math.nan] * 2), 0, False, math.nan, math.nan, 0.0,
                            str(exc), None, None))
                init = None
                continue
            # isolate the failing pair(s): solve each pair alone along the whole chain
            out = []
            for k in range(K):
                for r in solve_chain(cost, A[:, k:k + 1], B[:, k:k + 1], eps, tol, max_iter,
                                     keep):
                    out.append((k, *r[1:]))
            return out
        init = (res.f, res.g)
        row, col = res.marginal_error
        for k in range(K):
            ok = bool(max(row[k], col[k]) <= tol)
            out.append((k, e, float(res.transport_cost[k]), float(res.reg_cost[k]), res.n_iter,
                        ok, float(row[k]), float(col[k]), res.seconds / K, None,
                        res.f[:, k].copy() if keep else None,
                        res.g[:, k].copy() if keep else None))
    return out


class _DeviceSolver:
    """A long-lived solver holding the cost on its GPU (one such actor per GPU).

    A :class:`DenseCost` is copied to the device once; other cost sources are used as they
    are (their strips are computed or read per pass).
    """

    def __init__(self, cost: CostSource) -> None:
        if isinstance(cost, DenseCost):
            cost = cost.to_namespace(import_cupy())
        self.cost = cost

    def solve(self, A: np.ndarray, B: np.ndarray, eps: Sequence[float], tol: float,
              max_iter: int, keep: bool) -> list[Any]:
        """:func:`solve_chain` on this actor's cost."""
        return solve_chain(self.cost, A, B, eps, tol, max_iter, keep)


# --------------------------------------------------------------------------------- the driver


def _reason(exc: BaseException) -> str:
    """A one-line reason for a failed task: the exception type and its last message line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def _check_eps(eps: Any) -> tuple[float, ...]:
    """eps values as floats (:func:`~bigsink.problem.check_eps`), coarsest first, without
    duplicates."""
    return tuple(sorted(set(check_eps(eps)), reverse=True))


def _check_pair(shape: tuple[int, int], a: Any, b: Any, eps: float) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """One pair's weights as float64 (n,), (m,) or an InputError naming what is wrong."""
    for name, w in (("a", a), ("b", b)):
        if w is not None and np.ndim(w) != 1:
            raise InputError(f"{name}: each pair needs a vector of weights; got shape "
                             f"{np.shape(w)}.")
    problem = make_problem(shape, a, b, eps)
    return problem.a[:, 0], problem.b[:, 0]


class _PotentialStore:
    """Potentials ``f`` (P, E, n) and ``g`` (P, E, m) in a Zarr group at ``path``, written as
    results come in: at the temporary name of :func:`~bigsink._fs.atomic_path`, or, for a
    sweep that keeps its rows as it goes, in place with the attribute ``complete`` False
    until the sweep ends. ``reopen``: continue the store a resumed sweep left there."""

    def __init__(self, path: str, P: int, eps: Sequence[float], shape: tuple[int, int],
                 reopen: bool = False) -> None:
        import zarr

        E, (n, m) = len(eps), shape
        if reopen:
            group = zarr.open_group(path, mode="r+")
            self.f, self.g = zarr.open_array(f"{path}/f"), zarr.open_array(f"{path}/g")
            if (group.attrs.get("eps") != list(eps) or self.f.shape != (P, E, n)
                    or self.g.shape != (P, E, m)):
                raise InputError(
                    f"save_potentials: {path!r} holds potentials of another sweep (eps "
                    f"{group.attrs.get('eps')}, f {self.f.shape}); resume with the same "
                    "pairs and eps, or choose another path.")
        else:
            group = zarr.open_group(path, mode="w")
            group.attrs.update({"format": FORMAT, "kind": "potentials", "eps": list(eps)})
            self.f = group.create_array("f", shape=(P, E, n), chunks=(1, E, n),
                                        dtype="float64", fill_value=math.nan)
            self.g = group.create_array("g", shape=(P, E, m), chunks=(1, E, m),
                                        dtype="float64", fill_value=math.nan)
        group.attrs["complete"] = False
        self.group = group
        self.eps_index = {e: i for i, e in enumerate(eps)}

    def finish(self) -> None:
        """Mark the store complete."""
        self.group.attrs["complete"] = True

    def write(self, p: int, eps: float, f: np.ndarray, g: np.ndarray) -> None:
        """Store one pair's potentials at one eps."""
        i = self.eps_index[eps]
        self.f[p, i, :] = f
        self.g[p, i, :] = g



def _loopback_only() -> None:
    """Make a Ray instance this process starts listen on 127.0.0.1 only: Ray otherwise
    gives a node its network address and binds its core servers to every interface (with
    only Ray's token to guard them). An explicit ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``
    in the environment is respected."""
    os.environ.setdefault(LOOPBACK_ENV, "0")
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ[LOOPBACK_ENV] == "0":
        constants.ENABLE_RAY_CLUSTER = False     # what the variable sets when Ray is imported


def _start_ray(address: str | None, num_cpus: int | None,
               runtime_env: dict[str, Any] | None = None) -> bool:
    """Join the Ray cluster at ``address`` (checked first, :func:`~bigsink._net.ray_address`),
    or start a local instance on 127.0.0.1 without a dashboard, with ``runtime_env`` as the
    job's, unless Ray is initialised in this process already; True when this call started
    or joined it."""
    address = ray_address("address", address)   # refused or probed before Ray dials
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.WARNING,
                                  runtime_env=runtime_env)
    if address is not None:
        ray.init(address=address, **common)
    else:
        _loopback_only()
        ray.init(num_cpus=num_cpus, include_dashboard=False, **common)
    return True


class _HeadWatch:
    """Whether the Ray head (its GCS port) still accepts connections, checked while the
    sweep waits; :meth:`check` raises :class:`ClusterError` once it has not for
    ``HEAD_LOST_S`` seconds."""

    def __init__(self, gcs_address: str, kept: Any) -> None:
        host, _, port = gcs_address.rpartition(":")
        self.address, self.head = gcs_address, (host, int(port))
        self.kept = kept                # () -> the message on what was kept
        self.since: float | None = None

    def answers(self) -> bool:
        """One connection attempt to the head."""
        try:
            socket.create_connection(self.head, timeout=HEAD_CHECK_S).close()
        except OSError:
            return False
        return True

    def check(self, now: bool = False) -> None:
        """Raise ClusterError when the head has been silent ``HEAD_LOST_S`` seconds (at
        once with ``now``, after a task failed)."""
        if self.answers():
            self.since = None
            return
        self.since = self.since or time.monotonic()
        if now or time.monotonic() - self.since >= HEAD_LOST_S:
            raise ClusterError(f"lost the Ray head at {self.address} (no answer for "
                               f"{time.monotonic() - self.since:.0f} s); {self.kept()}")


def _resumed_rows(out: str, index: Pairs, eps: Sequence[float]
                  ) -> dict[tuple[int, float], SweepRow]:
    """The finished rows of the table at ``out`` (a resumed sweep skips them); an
    InputError when it is not this sweep's table."""
    done: dict[tuple[int, float], SweepRow] = {}
    for r in SweepResults.load(out).rows:
        if (r.pair >= len(index) or r.eps not in eps
                or (r.source, r.target) != tuple(int(x) for x in index.index[r.pair])):
            raise InputError(
                f"out: {out!r} holds rows of another sweep (pair {r.pair}, source {r.source}, "
                f"target {r.target}, eps {r.eps:g}); resume with the same pairs and eps, or "
                "choose another path.")
        if r.error is None:
            done[r.pair, r.eps] = r
    return done


def sweep(
    cost: Any,
    pairs: Any,
    eps: Any,
    *,
    tol: float = 1e-9,
    max_iter: int = 10_000,
    batch_size: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int = 0,
    max_retries: int = 3,
    progress: bool | None = None,
    save_potentials: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    runtime_env: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> SweepResults:
    """Solve every pair at every eps on a Ray cluster; one result row per (pair, eps).

    Args:
        cost: the shared (n, m) cost: anything :func:`bigsink.solve` takes (an array, a
            cost source, a Zarr or ``.npy`` path, ...; :func:`bigsink.costs.as_cost`).
            Shared once with ``ray.put``.
        pairs: a sequence of ``(a, b)`` weight vectors, or a :class:`Pairs` index
            (:meth:`Pairs.one_vs_many`, :meth:`Pairs.all_pairs`).
        eps: one or more regularisations; each pair is solved along them coarsest first,
            warm-starting each eps from the previous one's potentials.
        tol: L1 marginal tolerance of every solve (tight by default, so that answers do not
            depend on batching or warm starts).
        max_iter: iteration budget per solve.
        batch_size: pairs solved together per task (K columns per pass over C); default
            enough batches to keep every CPU busy twice over, at most 64 pairs each.
        address: join this Ray cluster (``"host:port"``, ``"auto"`` or ``"ray://host:port"``,
            as ``ray.init`` takes it; default ``RAY_ADDRESS`` if set) when Ray is not yet
            initialised in this process (an initialised session is always used as it is);
            without either a new local instance starts, listening on 127.0.0.1 only and
            without a dashboard. A ``host:port`` is checked first (malformed, nothing
            listening, or a dashboard's web port: an InputError in seconds, where Ray would
            retry for minutes). Whatever the sweep started or joined it shuts down
            (disconnects) at the end; a cluster it joined keeps running. A head lost
            mid-sweep is a :class:`~bigsink.errors.ClusterError` within ``HEAD_LOST_S``
            seconds.
        num_cpus: CPUs of a new local Ray instance (default: all).
        num_gpus: run on this many GPUs through one long-lived actor per GPU, each holding the
            cost on its device. Needs CuPy on the workers.
        max_retries: retries of a task whose worker process died.
        progress: tqdm progress bar over pairs; None shows it on a terminal only.
        save_potentials: write potentials to a Zarr group here: arrays ``f`` (P, E, n) and
            ``g`` (P, E, m), NaN for failed rows, eps in the group's attributes, and
            ``complete`` (False while a sweep with ``out`` writes it in place). Something
            already there is an InputError (before any work) unless ``overwrite`` (or a
            ``resume`` of the sweep that wrote it).
        overwrite: replace what is at ``out`` and ``save_potentials``.
        out: keep the table here as the sweep goes: ``.parquet`` (needs pyarrow) or CSV,
            rewritten atomically as each batch completes, so a sweep that stops (a lost
            head, a killed driver) keeps every finished row. Something already there is an
            InputError unless ``overwrite`` or ``resume``.
        resume: continue the sweep whose table is at ``out`` (and potentials at
            ``save_potentials``): its finished rows are kept, and only missing or failed
            rows are solved (whole pairs). Without a table there yet, start afresh.
        runtime_env: Ray's ``runtime_env`` for the sweep, e.g.
            ``{"py_modules": ["dist/bigsink-0.1.0-py3-none-any.whl"]}`` to ship bigsink
            (``make dist``) to a running cluster whose nodes lack it, or ``env_vars``: the
            job's where the sweep starts or joins Ray; in a Ray session this process already
            holds, its tasks' (where Ray takes URIs and ``env_vars``, not local files: pass
            those to your ``ray.init``). The result's ``cluster`` names its keys.
        storage_options: fsspec options (credentials, endpoint) for a URL ``cost``.

    Returns:
        :class:`SweepResults`; a pair with bad weights or a batch whose task failed beyond its
        retries gets rows with ``error`` set, and the rest of the sweep goes on.

    Raises:
        InputError: for a bad cost, eps, tol, max_iter, batch_size, num_gpus, or an output
            path (before any work).
        ClusterError: the Ray head was lost mid-sweep (the rows finished by then are in
            ``out``).
        ImportError: when Ray is not installed.
    """
    src = as_cost(cost, storage_options)
    materialize = getattr(src, "materialize", None)
    if materialize is not None:         # a lazy array: computed once, not in every task
        src = materialize()
    if isinstance(src, DenseCost) and not isinstance(src.array, np.ndarray):
        src = DenseCost(to_numpy(src.array), src.grid.block_shape)
    eps_list = _check_eps(eps)
    tol = check_positive("tol", tol)
    max_iter = check_max_iter(max_iter)
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise InputError(f"batch_size must be an integer >= 1; got {batch_size!r}.")
    if isinstance(num_gpus, bool) or int(num_gpus) < 0:
        raise InputError(f"num_gpus must be an integer >= 0; got {num_gpus!r}.")
    index = as_pairs(pairs)
    P = len(index)
    rows: dict[tuple[int, float], SweepRow] = {}
    if out is not None:
        out = local_path("out", out)
        _check_table_path("out", out)
        if resume and os.path.exists(out):
            rows = _resumed_rows(out, index, eps_list)
        else:
            check_target("out", out, overwrite, _is_table)
    reopen = False
    if save_potentials is not None:
        save_potentials = local_path("save_potentials", save_potentials)
        reopen = resume and out is not None and os.path.exists(save_potentials)
        if not reopen:
            check_target("save_potentials", save_potentials, overwrite)
            rows = {}           # the kept rows' potentials are not there: solve them again

    valid: list[tuple[int, np.ndarray, np.ndarray]] = []
    for p in range(P):
        ids = (int(index.index[p, 0]), int(index.index[p, 1]))
        if all((p, e) in rows for e in eps_list):
            continue                                    # finished in the resumed sweep
        try:
            a, b = _check_pair(src.shape, *index.pair(p), eps_list[-1])
        except InputError as exc:
            for e in eps_list:
                rows[p, e] = _failed(p, ids, e, f"InputError: {exc}")
            continue
        valid.append((p, a, b))

    cluster = ""

    def table() -> SweepResults:
        """The rows so far, by pair then eps."""
        return SweepResults(tuple(rows[k] for k in sorted(rows, key=lambda k: (k[0], -k[1]))),
                            eps_list, tol, cluster)

    def kept() -> str:
        """What a lost head leaves, and how to go on."""
        if out is None:
            return ("the finished rows are lost with it: pass out=... (--out) so that a sweep "
                    "keeps its rows as it goes.")
        return (f"{len(rows)} of {P * len(eps_list)} rows are saved in {out!r}. Start the "
                "cluster again and rerun the same sweep with resume=True (--resume) to solve "
                "the rest.")

    if not valid and (save_potentials is None or reopen):   # nothing left to solve
        if reopen and save_potentials is not None:
            _PotentialStore(save_potentials, P, eps_list, src.shape, reopen).finish()
        if out is not None:
            table()._write(out)
        return table()
    try:
        import ray
    except ImportError:
        raise ImportError("bigsink.sweep needs Ray: pip install 'ray[default]' (bigsink's ray "
                          "extra)") from None

    started = _start_ray(address, num_cpus, runtime_env)
    store: _PotentialStore | None = None
    try:
        with ExitStack() as outputs:
            resources = ray.cluster_resources()
            if num_gpus and resources.get("GPU", 0) < num_gpus:
                raise InputError(
                    f"num_gpus={num_gpus} but the Ray cluster has {resources.get('GPU', 0):g} "
                    "GPU(s); lower num_gpus or add GPU nodes."
                )
            if save_potentials is not None:
                where = (save_potentials if out is not None      # in place, as rows are kept
                         else outputs.enter_context(atomic_path(save_potentials)))
                store = _PotentialStore(where, P, eps_list, src.shape, reopen)
            gcs = ray.get_runtime_context().gcs_address
            watch = _HeadWatch(gcs, kept)
            cluster = (f"Ray {ray.__version__} at {gcs}: {resources.get('CPU', 0):g} CPUs, "
                       f"{resources.get('GPU', 0):g} GPUs ("
                       + ("started by the sweep" if started and address is None and
                          not os.environ.get("RAY_ADDRESS") else
                          "joined" if started else "this process's session") + ")"
                       + (f"; runtime_env {sorted(runtime_env)}" if runtime_env else ""))
            # the job's runtime_env where the sweep started or joined Ray; per task in a
            # session of yours (Ray then takes URIs and env_vars, not local files)
            env = {} if started or runtime_env is None else runtime_env
            workers = int(num_gpus) or max(1, int(resources.get("CPU", 1)))
            per_worker = math.ceil(len(valid) / (2 * workers))
            K = int(batch_size) if batch_size else max(1, min(MAX_BATCH, per_worker))
            batches = [valid[i:i + K] for i in range(0, len(valid), K)]
            cost_ref = ray.put(src)
            keep = store is not None
            args = (eps_list, tol, max_iter, keep)
            pending: dict[Any, list[tuple[int, np.ndarray, np.ndarray]]] = {}
            if num_gpus:
                actor_cls = ray.remote(num_gpus=1, max_restarts=max_retries,
                                       max_task_retries=max_retries, runtime_env=env)(_DeviceSolver)
                actors: list[Any] = [actor_cls.remote(cost_ref) for _ in range(int(num_gpus))]
                for i, batch in enumerate(batches):
                    A, B = (np.stack([x[j] for x in batch], axis=1) for j in (1, 2))
                    pending[actors[i % len(actors)].solve.remote(A, B, *args)] = batch
            else:
                task = ray.remote(solve_chain).options(num_cpus=1, max_retries=max_retries,
                                                       runtime_env=env)
                for batch in batches:
                    A, B = (np.stack([x[j] for x in batch], axis=1) for j in (1, 2))
                    pending[task.remote(cost_ref, A, B, *args)] = batch

            bar = progress_bar("sweep", "pair", progress, P)
            bar.update(P - len(valid))
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=HEAD_CHECK_S)
                    if not ready:
                        watch.check()
                        continue
                    batch = pending.pop(ready[0])
                    try:
                        records = ray.get(ready[0])
                    except Exception as exc:  # the task failed beyond its retries
                        watch.check(now=True)        # ... or the head went with it
                        for p, _, _ in batch:
                            ids = (int(index.index[p, 0]), int(index.index[p, 1]))
                            for e in eps_list:
                                rows[p, e] = _failed(p, ids, e, _reason(exc))
                        bar.update(len(batch))
                        continue
                    for k, e, tc, rc, it, ok, re_, ce, sec, err, f, g in records:
                        p = batch[k][0]
                        ids = (int(index.index[p, 0]), int(index.index[p, 1]))
                        rows[p, e] = SweepRow(p, ids[0], ids[1], e, tc, rc, it, ok, re_, ce, sec,
                                              err)
                        if store is not None and f is not None:
                            store.write(p, e, f, g)
                    if out is not None:             # the batch's rows kept, all or none
                        table()._write(out)
                    bar.update(len(batch))
            finally:
                bar.close()
            if store is not None:
                store.finish()
    finally:
        if started:
            ray.shutdown()
    if out is not None:
        table()._write(out)
    return table()
