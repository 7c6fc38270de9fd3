"""The Dask executor on real clusters: agreement with the local executor and POT, both modes,
a subprocess `dask scheduler` + `dask worker` cluster, a worker SIGKILLed mid-solve, read
counts in streaming mode, an out-of-core solve within the workers' memory limits, and faults."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import numpy as np
import ot
import pytest
import zarr

import bigsink
from bigsink import InputError, ZarrCost
from bigsink.executors.dask import DaskExecutor
from bigsink.solver.checkpoint import exists as checkpoint_exists

pytestmark = pytest.mark.dask
# Workers cannot import this test module: ship its classes and functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N, M = 240, 200
EPS = 0.05
TOL = 1e-9
CHUNKINGS = [(40, 200), (64, 64), (100, 37)]


def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two 2-D uniform point clouds, squared Euclidean cost / max, random weights."""
    rng = np.random.default_rng(7)
    x, y = rng.random((N, 2)), rng.random((M, 2))
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    a, b = rng.random(N) + 0.5, rng.random(M) + 0.5
    return C / C.max(), a / a.sum(), b / b.sum()


def write_zarr(path: Path, C: np.ndarray, chunks: tuple[int, int]) -> str:
    """C as a Zarr v3 array at ``path`` with ``chunks`` (uncompressed)."""
    arr = zarr.create_array(str(path), shape=C.shape, chunks=chunks, dtype=C.dtype,
                            compressors=None)
    arr[...] = C
    return str(path)


@pytest.fixture(scope="module")
def reference() -> Any:
    """The in-memory local solve, checked against POT."""
    C, a, b = problem()
    r = bigsink.solve(C, a, b, eps=EPS, tol=TOL, eps_scaling=False, progress=False)
    assert r.converged
    P = ot.sinkhorn(a, b, C, EPS, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000)
    assert r.transport_cost == pytest.approx(float((P * C).sum()), rel=1e-7)
    return r


def assert_same(r: Any, ref: Any) -> None:
    """Potentials and costs agree to 1e-9 relative."""
    for x, y in ((r.f, ref.f), (r.g, ref.g)):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9 * np.abs(y).max())
    for name in ("transport_cost", "reg_cost", "dual_cost"):
        assert getattr(r, name) == pytest.approx(getattr(ref, name), rel=1e-9), name


def strip_bytes(rows: int) -> int:
    """A strip budget of about ``rows`` rows (several strips, so the merge tree is real)."""
    return rows * M * 24


@pytest.fixture(scope="module")
def zarr_costs(tmp_path_factory: Any) -> dict[tuple[int, int], str]:
    C, _, _ = problem()
    root = tmp_path_factory.mktemp("costs")
    return {ch: write_zarr(root / f"C_{ch[0]}_{ch[1]}.zarr", C, ch) for ch in CHUNKINGS}


@contextlib.contextmanager
def dask_processes(tmp: Path, workers: int = 2, flags: tuple[str, ...] = (),
                   security: Any = None) -> Iterator[tuple[str, list[Any]]]:
    """`dask scheduler` + ``workers`` `dask worker` processes on 127.0.0.1; yields the
    address and the processes (the scheduler first). ``flags`` go to both (e.g. TLS
    certificates), ``security`` to the client that waits for the workers."""
    bindir = Path(sys.executable).parent
    sfile = tmp / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(Path(bigsink.__file__).parent.parent)}
    protocol = ["--protocol", "tls"] if "--tls-cert" in flags else []
    procs = [subprocess.Popen(
        [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(sfile), *protocol, *flags],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not sfile.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(sfile.read_text())["address"]
        for _ in range(workers):
            procs.append(subprocess.Popen(
                [str(bindir / "dask"), "worker", address, "--nthreads", "1",
                 "--memory-limit", "1GiB", "--no-dashboard", "--host", "127.0.0.1",
                 "--local-directory", str(tmp), *flags],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        if workers:
            with Client(address, timeout=30, security=security) as c:
                c.wait_for_workers(workers, timeout=60)
        yield address, procs
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def subprocess_cluster(tmp_path_factory: Any) -> Iterator[str]:
    """`dask scheduler` + two `dask worker` processes on 127.0.0.1; yields the address."""
    with dask_processes(tmp_path_factory.mktemp("cluster")) as (address, _):
        yield address


@pytest.mark.parametrize("mode", ["resident", "streaming"])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_zarr_chunkings_on_local_cluster(
    dask_client: Any, zarr_costs: Any, reference: Any, chunks: Any, mode: str
) -> None:
    ex = DaskExecutor(dask_client, mode=mode, strip_bytes=strip_bytes(70))
    _, a, b = problem()
    r = bigsink.solve(zarr_costs[chunks], a, b, eps=EPS, tol=TOL, eps_scaling=False,
                      executor=ex, progress=False)
    assert_same(r, reference)


def test_in_memory_on_local_cluster(dask_client: Any, reference: Any) -> None:
    C, a, b = problem()
    r = bigsink.solve(C, a, b, eps=EPS, tol=TOL, eps_scaling=False, client=dask_client,
                      progress=False)
    assert_same(r, reference)


@pytest.mark.parametrize("mode", ["resident", "streaming"])
def test_subprocess_cluster_by_address(
    subprocess_cluster: str, zarr_costs: Any, reference: Any, mode: str
) -> None:
    _, a, b = problem()
    for chunks in CHUNKINGS[:2]:   # all three run on the LocalCluster above
        ex = DaskExecutor(subprocess_cluster, mode=mode, strip_bytes=strip_bytes(70))
        r = bigsink.solve(zarr_costs[chunks], a, b, eps=EPS, tol=TOL, eps_scaling=False,
                          executor=ex, progress=False)
        assert_same(r, reference)
    C, _, _ = problem()   # in memory, default executor settings, address given as client=
    r = bigsink.solve(C, a, b, eps=EPS, tol=TOL, eps_scaling=False, client=subprocess_cluster,
                      progress=False)
    assert_same(r, reference)


class CountingCost:
    """A Zarr cost that appends one line per ``rows`` call to a file (works across processes)."""

    def __init__(self, path: str, log: str) -> None:
        self.inner = ZarrCost(path)
        self.log = log
        self.shape, self.dtype, self.grid = self.inner.shape, self.inner.dtype, self.inner.grid

    def block(self, i: int, j: int) -> Any:
        return self.inner.block(i, j)

    def rows(self, start: int, stop: int) -> Any:
        log_read(self.log, start, stop)
        return self.inner.rows(start, stop)


def log_read(log: str, start: int, stop: int) -> None:
    """Append ``start stop`` to the file ``log`` (one line per read, across processes)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{start} {stop}\n".encode())
    finally:
        os.close(fd)


def reads(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    return [tuple(map(int, ln.split())) for ln in log.read_text().split("\n") if ln]  # type: ignore[misc]


def test_streaming_reads_each_block_once_per_iteration(
    dask_client: Any, zarr_costs: Any, tmp_path: Path
) -> None:
    _, a, b = problem()
    log = tmp_path / "reads.log"
    cost = CountingCost(zarr_costs[(40, 200)], str(log))
    n_iter = 6
    with pytest.warns(bigsink.ConvergenceWarning):
        r = bigsink.solve(cost, a, b, eps=EPS, tol=1e-300, max_iter=n_iter, eps_scaling=False,
                          executor=DaskExecutor(dask_client, mode="streaming",
                                                strip_bytes=strip_bytes(80)),
                          progress=False)
    assert r.n_iter == n_iter
    got = reads(log)
    strips = sorted(set(got))
    assert strips == [(0, 80), (80, 160), (160, 240)]   # two block rows of 40 per strip
    passes = 1 + n_iter + 1                              # scan, iterations, final evaluation
    assert len(got) == passes * len(strips)
    assert all(got.count(s) == passes for s in strips)   # each block read once per pass


def test_resident_reads_each_strip_once(dask_client: Any, zarr_costs: Any, tmp_path: Path) -> None:
    _, a, b = problem()
    log = tmp_path / "reads.log"
    cost = CountingCost(zarr_costs[(40, 200)], str(log))
    r = bigsink.solve(cost, a, b, eps=EPS, tol=1e-6, eps_scaling=False, progress=False,
                      executor=DaskExecutor(dask_client, mode="resident",
                                            strip_bytes=strip_bytes(80)))
    assert r.n_iter > 3
    assert sorted(reads(log)) == [(0, 80), (80, 160), (160, 240)]


def _actors(client: Any) -> int:
    """Actors held on the cluster's workers now."""
    return sum(client.run(lambda dask_worker: len(dask_worker.state.actors)).values())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scaling_path_on_the_workers_matches_in_process(dask_client: Any, dtype: Any) -> None:
    """The scaling path with its kernels held by the workers (one actor each): the same
    iterates as in process, its memory let go when the solve ends."""
    C, a, b = problem()
    C = C.astype(dtype)
    held: list[int] = []
    kw: dict[str, Any] = dict(eps=0.02, tol=1e-6, progress=False, resident_kernel=True)
    r = bigsink.solve(C, a, b, executor=DaskExecutor(dask_client, strip_bytes=strip_bytes(60)),
                      callback=lambda *_: held.append(_actors(dask_client)), **kw)
    local = bigsink.solve(C, a, b, **kw)
    assert r.converged and r.n_iter == local.n_iter
    assert max(held) == 2                           # one kernel holder per worker
    deadline = time.monotonic() + 10                # released at the end of the stage
    while _actors(dask_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _actors(dask_client) == 0
    assert r.transport_cost == pytest.approx(local.transport_cost, rel=1e-9)
    np.testing.assert_allclose(r.f, local.f, rtol=1e-7, atol=1e-9)
    log = bigsink.solve(C, a, b, **{**kw, "resident_kernel": False})
    assert r.transport_cost == pytest.approx(log.transport_cost, rel=1e-6)


class CountingZarr(ZarrCost):
    """A Zarr cost (so a streamed one can keep a scratch kernel) that appends one line per
    ``rows`` call to a file."""

    def __init__(self, path: str, log: str) -> None:
        super().__init__(path)
        self.log = log

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "log": self.log}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.log = state["log"]

    def rows(self, start: int, stop: int) -> Any:
        log_read(self.log, start, stop)
        return super().rows(start, stop)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_streamed_store_keeps_its_kernel_in_the_workers_scratch_files(
    dask_client: Any, tmp_path: Path, dtype: Any
) -> None:
    """Streaming a Zarr store, each worker builds the kernel rows of its strips from the
    store into a scratch file: the same iterates as in process, C read once per build
    instead of once per iteration, the actors gone after the solve."""
    C, a, b = problem()
    path = write_zarr(tmp_path / "C.zarr", C.astype(dtype), (40, M))
    log = tmp_path / "reads.log"
    ex = DaskExecutor(dask_client, mode="streaming", strip_bytes=strip_bytes(40))
    kw: dict[str, Any] = dict(eps=0.02, tol=1e-6, progress=False)
    held: list[int] = []
    r = bigsink.solve(CountingZarr(path, str(log)), a, b, executor=ex, resident_kernel=True,
                      callback=lambda *_: held.append(_actors(dask_client)), **kw)
    local = bigsink.solve(path, a, b, resident_kernel=True, **kw)   # its scratch file here
    assert r.converged and r.n_iter == local.n_iter > 20
    assert max(held) == 2                           # one kernel holder per worker
    assert r.transport_cost == pytest.approx(local.transport_cost, rel=1e-9)
    np.testing.assert_allclose(r.f, local.f, rtol=1e-7, atol=1e-9)
    logged = reads(log)
    assert sorted(set(logged)) == [(s, s + 40) for s in range(0, N, 40)]
    passes = len(logged) // (N // 40)
    print(f"{passes} reads of C for {r.n_iter} iterations", end=" ")
    assert len(logged) == passes * (N // 40) and passes < r.n_iter / 3   # not per iteration
    deadline = time.monotonic() + 10
    while _actors(dask_client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _actors(dask_client) == 0
    streamed_log = bigsink.solve(path, a, b, executor=ex, resident_kernel=False, **kw)
    assert r.transport_cost == pytest.approx(streamed_log.transport_cost, rel=1e-6)


def test_streamed_strips_of_a_computed_cost_cannot_hold_a_kernel(dask_client: Any) -> None:
    """Streaming a cost that no store backs (here computed from points) leaves the workers
    no place for a kernel: the log domain, and a clear error when the kernel is asked for."""
    rng = np.random.default_rng(7)
    cost = bigsink.PointCloudCost(rng.random((N, 2)), rng.random((M, 2)))
    _, a, b = problem()
    ex = DaskExecutor(dask_client, mode="streaming", strip_bytes=strip_bytes(80))
    with pytest.raises(InputError, match=r"resident_kernel=True.*streaming.*Zarr store"):
        bigsink.solve(cost, a, b, eps=EPS, executor=ex, progress=False, resident_kernel=True)
    r = bigsink.solve(cost, a, b, eps=EPS, executor=ex, progress=False)
    assert r.converged                              # auto: the log domain


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


@pytest.mark.parametrize(("mode", "scaling"),
                         [("resident", False), ("resident", True), ("streaming", True)],
                         ids=["log-domain", "scaling", "streaming-scaling"])
@pytest.mark.fault
def test_worker_killed_mid_solve(tmp_path: Path, mode: str, scaling: bool) -> None:
    """SIGKILL a worker in the middle of a solve: the same answer as undisturbed (the log
    domain: the same iterates; the scaling path: its kernels, in memory or in a scratch file,
    are lost with the worker, a warning says so, and the stage goes on in the log domain)."""
    from distributed import Client, LocalCluster

    n = 300
    k = np.arange(n, dtype=float)
    C = (k[:, None] - k[None, :]) ** 2 / (n - 1) ** 2
    a = np.exp(-((k - 100) ** 2) / (2 * 30.0**2))
    b = np.exp(-((k - 175) ** 2) / (2 * 40.0**2))
    a, b = a / a.sum(), b / b.sum()
    path = write_zarr(tmp_path / "C.zarr", C, (50, n))
    kw: dict[str, Any] = dict(eps=5e-3, tol=1e-6, progress=False, resident_kernel=scaling)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit="1GiB") as cluster, \
            Client(cluster) as client:
        ex = DaskExecutor(client, mode=mode, strip_bytes=50 * n * 24)
        t0 = time.monotonic()
        calm = bigsink.solve(path, a, b, executor=ex, **kw)
        calm_s = time.monotonic() - t0
        assert calm.converged and calm.n_iter > 25
        pids = client.run(os.getpid)
        ck = tmp_path / "ck"
        out: dict[str, Any] = {}
        paused, resume = threading.Event(), threading.Event()

        def hold(n_iter: int, err: float) -> None:
            """Pause the solve after iteration 6 (a checkpoint exists) until the kill."""
            if n_iter == 6:
                paused.set()
                resume.wait(60)

        def run() -> None:
            try:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    out["r"] = bigsink.solve(path, a, b, executor=ex, checkpoint=ck,
                                             checkpoint_every=5, callback=hold, **kw)
                out["warnings"] = [str(w.message) for w in seen]
            except BaseException as exc:  # reported below
                out["err"] = exc

        th = threading.Thread(target=run)
        th.start()
        assert paused.wait(60 + calm_s) and checkpoint_exists(ck)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)                       # mid-solve: after iteration 6
        killed_at = time.monotonic()
        while _alive(victim) and time.monotonic() < killed_at + 30:
            time.sleep(0.05)                                  # gone before the solve goes on
        resume.set()
        th.join(timeout=120)
        assert not th.is_alive()
        assert "err" not in out, out.get("err")
        assert time.monotonic() - killed_at > 0.0
        new_pids = client.run(os.getpid)
        assert victim not in new_pids.values()                # the worker really died
        r = out["r"]
    assert r.converged
    local = bigsink.solve(C, a, b, **kw)
    if not scaling:
        assert r.n_iter == calm.n_iter > 5
        np.testing.assert_allclose(r.f, calm.f, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(r.g, calm.g, rtol=1e-12, atol=1e-15)
        assert r.transport_cost == pytest.approx(calm.transport_cost, rel=1e-12)
        assert r.transport_cost == pytest.approx(local.transport_cost, rel=1e-9)
        return
    assert any("kernels were lost" in w for w in out["warnings"]), out["warnings"]
    for x in (calm, r):                    # a float32 kernel (mixed precision) at tol 1e-6
        assert x.transport_cost == pytest.approx(local.transport_cost, rel=1e-6)
        assert x.mass == pytest.approx(1.0, abs=1e-6)


def test_out_of_core_streaming_within_memory_limit(tmp_path: Path) -> None:
    """A Zarr cost 4x the worker's memory limit, streamed, with RSS below the limit: the
    worker reads it into a kernel in a scratch file as large as C, mapped, and its passes
    release the pages they are done with."""
    from distributed import Client, LocalCluster

    # an idle worker takes ~190 MiB, and compiling the scaling path's kernels (once per
    # machine: numba caches them on disk) up to ~180 MiB more
    limit = 512 * 2**20
    n, m = 131_072, 4096                                  # float32: 2.15 GB >= 4 x 512 MiB
    assert n * m * 4 >= 4 * limit
    rng = np.random.default_rng(3)
    x, y = rng.random(n).astype(np.float32), rng.random(m).astype(np.float32)
    arr = zarr.create_array(str(tmp_path / "C.zarr"), shape=(n, m), chunks=(128, m),
                            dtype=np.float32, compressors=None)
    for s in range(0, n, 4096):
        arr[s:s + 4096] = (x[s:s + 4096, None] - y[None, :]) ** 2
    # no pausing: a worker over its limit must fail the test (nanny restart), never hang it
    with dask.config.set({"distributed.worker.memory.pause": False}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, memory_limit=limit) as cluster, \
            Client(cluster) as client:
        pid0 = client.run(os.getpid)
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], *client.run(_rss).values())
                time.sleep(0.1)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bigsink.ConvergenceWarning)
            held: list[int] = []
            r = bigsink.solve(str(tmp_path / "C.zarr"), eps=0.05, max_iter=2, tol=1e-300,
                              eps_scaling=False, client=client, progress=False,
                              callback=lambda *_: held.append(_actors(client)))
        seconds = time.monotonic() - t0
        stop.set()
        th.join()
        assert client.run(os.getpid) == pid0                  # no worker was restarted
    print(f"out-of-core: peak worker RSS {peak[0] / 2**20:.0f} MiB of {limit / 2**20:.0f} MiB, "
          f"{seconds:.1f} s for scan + 2 iterations + evaluation")
    assert 0 < peak[0] < limit
    assert held == [1, 1]                                 # the scaling path, on the worker
    assert r.n_iter == 2
    assert r.marginal_error.col < 1e-9                    # exact after the g-update
    assert r.mass == pytest.approx(1.0, rel=1e-6)


def test_unreachable_scheduler_is_a_clear_error_within_10s(free_port: int) -> None:
    address = f"tcp://127.0.0.1:{free_port}"
    t0 = time.monotonic()
    with pytest.raises(InputError, match=address):
        bigsink.solve(np.ones((3, 3)), eps=0.1, client=address, progress=False)
    assert time.monotonic() - t0 < 10


def test_nan_in_zarr_block_named_through_dask(dask_client: Any, tmp_path: Path) -> None:
    C, a, b = problem()
    C = C.copy()
    C[130, 75] = np.nan                                   # block (3, 1) of (40, 64) chunks
    path = write_zarr(tmp_path / "nan.zarr", C, (40, 64))
    for mode in ("resident", "streaming"):
        with pytest.raises(InputError, match=r"C\[130, 75\].*block \(3, 1\)"):
            bigsink.solve(path, a, b, eps=EPS, progress=False,
                          executor=DaskExecutor(dask_client, mode=mode))


def test_bad_executor_arguments() -> None:
    with pytest.raises(InputError, match="mode"):
        DaskExecutor("tcp://127.0.0.1:1", mode="fast")
    with pytest.raises(InputError, match="strip_bytes"):
        DaskExecutor("tcp://127.0.0.1:1", strip_bytes=0)
    with pytest.raises(InputError, match="client"):
        DaskExecutor(42)


def test_strip_plan_sizes_tasks_for_scheduling_and_chunks_for_memory() -> None:
    """One task per worker thread resident (each placed on one), two streaming, kernel
    chunks within half the task budget, and a streamed strip (read into the task) within
    the other half."""
    from bigsink.executors.dask import MAX_TASK_BYTES, plan_strip_rows

    workers = {f"w{k}": {"nthreads": 1, "memory_limit": 8 << 30} for k in range(2)}
    n = m = 20_000
    rows, chunk = plan_strip_rows((n, m), 4, 1, workers, resident=True)
    assert rows == n // 2
    assert plan_strip_rows((n, m), 4, 1, workers, True, block_rows=209)[0] == 48 * 209
    assert chunk == MAX_TASK_BYTES // 2 // (m * 24)                  # (r, m, 1) float64 x 3
    rows, chunk = plan_strip_rows((n, m), 4, 1, workers, resident=False)
    assert rows == MAX_TASK_BYTES // 2 // (m * 4)                    # the strip read
    small = {"w": {"nthreads": 2, "memory_limit": 8 << 30}}
    assert plan_strip_rows((100, 50), 8, 3, small, resident=True) == (100, 100)


def test_resident_strips_are_dealt_evenly_to_the_workers(dask_client: Any) -> None:
    """One strip per worker thread by default; smaller strips (an explicit strip_bytes)
    dealt in consecutive runs, so that neighbours (merged first) share a worker."""
    from collections import Counter

    from distributed import wait

    C = np.random.default_rng(3).random((8000, 1200), dtype=np.float32)
    for strip_bytes, count in ((None, 2), (2000 * 1200 * 24, 4)):
        executor = DaskExecutor(dask_client, strip_bytes=strip_bytes)
        session = executor.open(bigsink.DenseCost(C, (100, 1200)), 1)
        try:
            with dask_client.as_current():           # the session fixture is not the default
                wait(session._data)
            holders = dask_client.who_has(session._data)
            where = [holders[f.key][0] for f in session._data]        # strip k -> worker
            assert len(where) == count
            assert set(Counter(where).values()) == {count // 2}       # even over 2 workers
            assert where == sorted(where, key=where.index)            # in consecutive runs
            sizes = {s1 - s0 for s0, s1 in session.strips}
            assert max(sizes) - min(sizes) <= 100                     # within one block row
        finally:
            session.close()


def test_point_cloud_strips_travel_as_points(dask_client: Any) -> None:
    """A cloud on Dask: resident strips are CloudStrips (points, no matrix), streamed strips
    are computed by the fused kernels in the tasks; both equal the in-process solve, in the
    log domain (recompute) and on the scaling path (kernels held by the workers)."""
    rng = np.random.default_rng(21)
    cost = bigsink.PointCloudCost(rng.random((300, 3)), rng.random((260, 3)), "minkowski",
                                  p=np.inf, block_shape=(40, 260))
    for resident in (False, None):
        local = bigsink.solve(cost, eps=0.02, tol=1e-10, progress=False,
                              resident_kernel=resident)
        for mode in ("resident", "streaming"):
            res = bigsink.solve(cost, eps=0.02, tol=1e-10, progress=False,
                                resident_kernel=resident,
                                executor=DaskExecutor(dask_client, mode=mode))
            assert res.converged
            assert res.transport_cost == pytest.approx(local.transport_cost, rel=1e-9)
            np.testing.assert_allclose(res.f, local.f, rtol=1e-8, atol=1e-10)
            if resident is False:
                assert res.placement.startswith("recompute")


def test_client_takes_a_cluster_object_and_the_environment_names_a_scheduler(
    dask_client: Any, reference: Any, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    from bigsink.executors import LocalExecutor, make_executor

    C, a, b = problem()
    kw: dict[str, Any] = dict(eps=EPS, tol=TOL, eps_scaling=False, progress=False)
    assert_same(bigsink.solve(C, a, b, client=dask_client.cluster, **kw), reference)
    address = dask_client.scheduler.address
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)     # as a DaskJob sets it
    chosen = make_executor()
    assert isinstance(chosen, DaskExecutor) and chosen.client == address
    assert isinstance(make_executor("local"), LocalExecutor)   # asked for: local
    assert_same(bigsink.solve(C, a, b, **kw), reference)
    nowhere = f"tcp://127.0.0.1:{free_port}"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", nowhere)      # an error, not a local solve
    with pytest.raises(InputError, match="nothing accepts connections"):
        bigsink.solve(C, a, b, **kw)


def test_a_dask_array_cost_is_computed_once(reference: Any) -> None:
    import dask.array as da

    from bigsink.costs import DenseCost, LazyCost, as_cost

    C, a, b = problem()
    lazy = da.from_array(C, chunks=(C.shape[0] // 4, C.shape[1]))
    src = as_cost(lazy)
    assert isinstance(src, LazyCost) and src.grid.block_shape == (C.shape[0] // 4, C.shape[1])
    whole = src.materialize()
    assert isinstance(whole, DenseCost) and whole.grid.block_shape == src.grid.block_shape
    kw: dict[str, Any] = dict(eps=EPS, tol=TOL, eps_scaling=False, progress=False)
    t0 = time.perf_counter()
    plain = bigsink.solve(C, a, b, **kw)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = bigsink.solve(lazy, a, b, **kw)
    assert time.perf_counter() - t0 < 5 * t_plain + 1.0
    assert_same(r, reference) and plain.converged


def _logged_block(block: np.ndarray, log: str) -> np.ndarray:
    """A dask.array block function that records each computation (one line per block)."""
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return block


def test_a_dask_array_cost_is_computed_by_the_workers_once(dask_client: Any, reference: Any,
                                                           tmp_path: Path) -> None:
    """On Dask, a dask.array cost's strips are computed by the workers from its graph, each
    once (resident), never on the coordinator and never per pass (issue 23: 9.4 s and 165
    scheduler warnings at n = 400, recomputed strip by strip every iteration)."""
    import dask.array as da

    C, a, b = problem()
    log = tmp_path / "computed.log"
    lazy = da.from_array(C, chunks=(C.shape[0] // 4, C.shape[1])).map_blocks(
        _logged_block, str(log), dtype=C.dtype, meta=np.empty((0, 0), dtype=C.dtype))
    r = bigsink.solve(lazy, a, b, eps=EPS, tol=TOL, eps_scaling=False, progress=False,
                      client=dask_client)
    assert_same(r, reference) and r.n_iter > 10
    pids = log.read_text().split()
    assert 0 < len(pids) <= 2 * 4                      # 4 blocks, each once or twice (scan)
    assert str(os.getpid()) not in pids                # not on the coordinator
    assert "resident" in r.executor


@pytest.mark.fault
def test_a_lost_scheduler_is_named_with_the_way_on(tmp_path: Path) -> None:
    """The scheduler killed mid-solve: a ClusterError naming it and the checkpoint, not
    "FutureCancelledError ... reason: unknown" (issue 24, item 10)."""
    C, a, b = problem()
    paused, resume = threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    def hold(n_iter: int, err: float) -> None:
        if n_iter == 3:
            paused.set()
            resume.wait(60)

    with dask_processes(tmp_path, workers=1) as (address, procs):
        def run() -> None:
            try:
                bigsink.solve(C, a, b, eps=EPS, tol=1e-12, eps_scaling=False, progress=False,
                              client=address, resident_kernel=False, callback=hold,
                              checkpoint=tmp_path / "ck", checkpoint_every=1)
            except BaseException as exc:  # reported below
                out["err"] = exc

        th = threading.Thread(target=run)
        th.start()
        assert paused.wait(120)
        procs[0].kill()                                      # the scheduler
        procs[0].wait(timeout=20)
        t0 = time.monotonic()
        resume.set()
        th.join(timeout=120)
    assert not th.is_alive()
    err = out.get("err")
    assert isinstance(err, bigsink.ClusterError), repr(err)
    assert address in str(err) and "resume=True" in str(err)
    assert time.monotonic() - t0 < 90


def test_the_waits_follow_dask_config(tmp_path: Path) -> None:
    """``bigsink.worker-wait`` / ``bigsink.connect-timeout`` in dask.config set the waits
    (a Job that starts before its workers can wait longer; issue 23)."""
    from bigsink.executors.dask import config_seconds

    assert config_seconds("worker-wait", 5.0) == 5.0
    with dask.config.set({"bigsink.worker-wait": "2m", "bigsink.connect-timeout": 3}):
        assert config_seconds("worker-wait", 5.0) == 120.0
        assert DaskExecutor("tcp://127.0.0.1:8786").connect_timeout == 3.0
    with dask.config.set({"bigsink.worker-wait": "soon"}), \
            pytest.raises(InputError, match=r"bigsink\.worker-wait"):
        config_seconds("worker-wait", 5.0)
    C, a, b = problem()
    with dask_processes(tmp_path, workers=0) as (address, _), \
            dask.config.set({"bigsink.worker-wait": "1s"}):
        t0 = time.monotonic()
        with pytest.raises(InputError, match=r"has no workers \(waited 1 s"):
            bigsink.solve(C, a, b, eps=EPS, client=address, progress=False)
        assert time.monotonic() - t0 < 15


def test_a_tls_scheduler_takes_the_users_certificates(tmp_path: Path) -> None:
    """issue 24, item 13: the scheduler and workers of cluster/ speak TLS with certificates
    the user supplies (distributed's ``--tls-*``); bigsink connects through dask.config's
    ``distributed.comm.tls.*``, and without them says what to set, in seconds."""
    trustme = pytest.importorskip("trustme")
    from distributed.security import Security

    ca = trustme.CA()
    ca_file, pem = tmp_path / "ca.pem", tmp_path / "node.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    flags = ("--tls-ca-file", str(ca_file), "--tls-cert", str(pem), "--tls-key", str(pem))
    config = {"distributed.comm.tls.ca-file": str(ca_file),
              "distributed.comm.tls.client.cert": str(pem),
              "distributed.comm.tls.client.key": str(pem),
              "distributed.comm.require-encryption": True}
    C, a, b = problem()
    ref = bigsink.solve(C, a, b, eps=0.05, progress=False)
    with dask.config.set(config):
        security = Security()
    with dask_processes(tmp_path, workers=1, flags=flags, security=security) as (address, _):
        assert address.startswith("tls://127.0.0.1:")
        t0 = time.monotonic()
        with pytest.raises(InputError, match=r"distributed\.comm\.tls\.ca-file"):
            bigsink.solve(C, a, b, eps=0.05, client=address, progress=False)
        assert time.monotonic() - t0 < 30
        with dask.config.set(config):
            r = bigsink.solve(C, a, b, eps=0.05, client=address, progress=False)
    np.testing.assert_allclose(r.f, ref.f, rtol=1e-12, atol=1e-14)


def test_an_active_default_client_is_used_and_named(dask_client: Any) -> None:
    """issue 23: an active default client was ignored (the solve ran locally). Now, as in
    Dask, ``Client()`` makes solves run on it unless ``executor="local"``; the result
    says where it ran (and the dashboard, when the scheduler serves one)."""
    from distributed import Client

    C, a, b = problem()
    ref = bigsink.solve(C, a, b, eps=0.05, progress=False)
    assert ref.executor.startswith("local")
    with Client(dask_client.cluster) as mine:                # the default client now
        r = bigsink.solve(C, a, b, eps=0.05, progress=False)
        local = bigsink.solve(C, a, b, eps=0.05, executor="local", progress=False)
        assert mine.status == "running"
    address = dask_client.scheduler.address
    assert r.executor.startswith(f"dask: scheduler {address}, 2 workers")
    assert "through your client" in r.executor and "executor" in r.summary()
    assert local.executor.startswith("local")
    np.testing.assert_allclose(r.f, ref.f, rtol=1e-12, atol=1e-14)
    after = bigsink.solve(C, a, b, eps=0.05, progress=False)  # closed: local again
    assert after.executor.startswith("local")


def test_the_dashboard_is_named_where_the_scheduler_serves_one() -> None:
    """issue 23: the dashboard's address in the result (and the progress line)."""
    pytest.importorskip("bokeh")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        C, a, b = problem()
        r = bigsink.solve(C, a, b, eps=0.05, client=client, progress=False)
        assert f"dashboard {client.dashboard_link}" in r.executor
        assert client.dashboard_link.startswith("http://127.0.0.1:")


def test_bigsinks_defaults_live_in_dask_config(dask_client: Any, tmp_path: Path) -> None:
    """issue 23: bigsink's knobs are a ``bigsink`` namespace in dask.config, with a YAML
    defaults file (as Dask's own libraries ship), not module constants."""
    from bigsink.executors.dask import DEFAULTS, config_share

    assert DEFAULTS.name == "bigsink.yaml" and DEFAULTS.exists()
    assert dask.config.get("bigsink.connect-timeout") == "5s"
    assert dask.config.get("bigsink.resident-share") == 0.5
    assert DaskExecutor("tcp://127.0.0.1:8786").connect_timeout == 5.0
    C = problem()[0]
    cost = ZarrCost(write_zarr(tmp_path / "C.zarr", C, (50, 50)))
    for share, mode in ((0.5, "resident"), (1e-12, "streaming")):   # C fits half, not 1e-12
        with dask.config.set({"bigsink.resident-share": share}):
            session = DaskExecutor(dask_client).open(cost, 1)
            try:
                assert session.mode == mode
            finally:
                session.close()
    with dask.config.set({"bigsink.worker-share": 2}), \
            pytest.raises(InputError, match=r"bigsink\.worker-share: expected a share"):
        config_share("worker-share")
