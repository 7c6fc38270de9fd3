"""Write a cost larger than one worker's memory to Zarr, solve it on a LocalCluster, then
the same solve against a scheduler address. (At the full size the cost is 1.5 GiB against
1 GiB workers; the --small size runs the same streaming path on a cost that fits.)

    python examples/zarr_dask.py [--small] [--out DIR]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from _common import example_args
from distributed import Client, LocalCluster

import bigsink
from bigsink.executors.dask import DaskExecutor


def main() -> None:
    args = example_args(__doc__)

    # full size: a 1.5 GiB cost against 1 GiB workers. The small (CI) size keeps the same
    # streaming path but its cost fits: a worker paused near a tight limit (Dask pauses at
    # 80% of it, and the interpreter alone takes ~120 MiB) would stall the run.
    n = 2000 if args.small else 20_000
    memory_limit = "1GiB"
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 2)), rng.random((n, 2))

    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
        memory_limit=memory_limit,
    ) as cluster, Client(cluster) as client:
        path = Path(tmp) / "cost.zarr"
        cost = bigsink.write_cost(x, y, path, scale="max", chunks=(250, n), dtype="float32",
                                  client=client)
        size_mb = n * n * 4 / 2**20
        print(f"cost: {cost.shape} float32 = {size_mb:.0f} MiB in Zarr; each worker may "
              f"hold {memory_limit}")

        # 1. a Client: the executor streams strips from the store (C does not fit a worker)
        streaming = DaskExecutor(client, mode="streaming")
        r1 = bigsink.solve(cost, eps=1e-2, tol=1e-6, executor=streaming)
        print("LocalCluster (client):", r1.summary(), sep="\n")

        # 2. the same solve against the scheduler's address, as from another machine
        r2 = bigsink.solve(str(path), eps=1e-2, tol=1e-6, client=cluster.scheduler_address)
        print(f"by address {cluster.scheduler_address}: <P,C> = {r2.transport_cost:.10g}")
        assert abs(r2.transport_cost / r1.transport_cost - 1) < 1e-9

        r1.save(args.out / "zarr_dask_result.zarr", overwrite=True)
        (args.out / "zarr_dask.json").write_text(json.dumps({
            "n": n, "cost_mib": size_mb, "worker_memory_limit": memory_limit,
            "n_iter": r1.n_iter, "transport_cost": r1.transport_cost,
            "seconds_client": r1.seconds, "seconds_address": r2.seconds,
        }, indent=1))


if __name__ == "__main__":
    main()
