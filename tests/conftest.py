"""Shared fixtures: reference problems, and real clusters started once per session."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

# every Ray the tests start (here, and `ray start` in subprocesses, which inherit this)
# takes the loopback address and listens on 127.0.0.1 only (bigsink.sweep._loopback_only)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def gaussian_1d(n: int, mean: float, sd: float) -> np.ndarray:
    """DESIGN.md R3's normalised Gaussian histogram on the grid 0..n-1."""
    k = np.arange(n, dtype=float)
    w = np.exp(-((k - mean) ** 2) / (2 * sd**2))
    return w / w.sum()


@pytest.fixture(scope="session")
def r3_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DESIGN.md R3: (C, a, b) on a 1-D grid of 100 points, C = (i - j)^2 / max."""
    k = np.arange(100, dtype=float)
    C = (k[:, None] - k[None, :]) ** 2
    return C / C.max(), gaussian_1d(100, 30, 10), gaussian_1d(100, 40, 10)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A real ``LocalCluster`` with 2 worker processes on 127.0.0.1, shared by the session."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="2GiB",
    )
    # not the default client: tests that do not pass client= stay local (a default
    # client is picked up by solve, as Dask's conventions want; tested on its own)
    client = Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A real local Ray runtime (``ray.init(num_cpus=2)``), shared by the session."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'bigsink[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (free to start a server on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def http_port() -> Iterator[int]:
    """A web server on 127.0.0.1 (what a dashboard port answers like); yields its port."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
