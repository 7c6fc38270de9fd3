#!/usr/bin/env python
"""Solve a bigsink problem on a SLURM cluster through dask-jobqueue.

Runs on a login node (or inside a small SLURM job): it submits SLURM jobs that each start
Dask workers, connects to them, runs ``bigsink.solve(..., client=client)`` and saves the
result. The cost must be on a file system the compute nodes share (or an object-store URL).

    make dist && pip install dist/bigsink-*.whl dask-jobqueue   # bigsink is on no index
    python cluster/slurm/submit.py /shared/C.zarr --a /shared/a.npy --b /shared/b.npy \\
        --eps 1e-3 --out /shared/result --jobs 8 --cores 16 --memory 64GiB \\
        --queue normal --walltime 02:00:00 --account myproject

Options left out come from the site's ``jobqueue.yaml`` (dask-jobqueue's configuration).

Equivalent with the command line: start the SLURMCluster in Python, print
``cluster.scheduler_address`` and pass it to ``bigsink solve --scheduler``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the SLURM-backed Dask cluster, solve, save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cost", help="Zarr cost array (shared path or URL)")
    parser.add_argument("--a", default=None, help="row weights .npy (default uniform)")
    parser.add_argument("--b", default=None, help="column weights .npy (default uniform)")
    parser.add_argument("--eps", type=float, required=True)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=10_000)
    parser.add_argument("--out", required=True, help="result directory (shared path)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint group (shared path)")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (one worker each)")
    # the job's shape: given here, or from your site's jobqueue.yaml (dask-jobqueue's own
    # configuration, ~/.config/dask/jobqueue.yaml) when left out
    parser.add_argument("--cores", type=int, default=None, help="cores per job")
    parser.add_argument("--memory", default=None, help="memory per job, e.g. 32GiB")
    parser.add_argument("--queue", default=None, help="SLURM partition")
    parser.add_argument("--account", default=None, help="SLURM account")
    parser.add_argument("--walltime", default=None, help="e.g. 01:00:00")
    parser.add_argument("--local-directory", default=None, help="worker spill directory")
    parser.add_argument("--start-timeout", type=float, default=3600.0,
                        help="seconds to wait for the workers (queueing included)")
    args = parser.parse_args(argv)

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    import bigsink

    given = {"queue": args.queue, "account": args.account, "cores": args.cores,
             "memory": args.memory, "walltime": args.walltime,
             "local_directory": args.local_directory}
    cluster = SLURMCluster(
        processes=1,              # one worker process per job, `cores` threads
        **{k: v for k, v in given.items() if v is not None},
    )
    cluster.scale(jobs=args.jobs)
    print(f"scheduler at {cluster.scheduler_address}; job script:\n{cluster.job_script()}",
          file=sys.stderr)
    try:
        with Client(cluster) as client:
            wait_for_workers(cluster, client, args.jobs, args.start_timeout)
            a = np.load(args.a) if args.a else None
            b = np.load(args.b) if args.b else None
            extra: dict[str, object] = {}
            if args.checkpoint:  # a resubmitted run continues from its checkpoint
                extra = {"checkpoint": args.checkpoint,
                         "resume": os.path.exists(args.checkpoint)}
            result = bigsink.solve(args.cost, a, b, eps=args.eps, tol=args.tol,
                                   max_iter=args.max_iter, client=client, **extra)
            result.save(args.out)
            print(result.summary())
    finally:
        cluster.close()
    return 0 if result.converged else 1


def job_alive(job_id: str) -> bool:
    """Whether SLURM still lists the job (pending or running)."""
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                         text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


def wait_for_workers(cluster: Any, client: Any, n: int, timeout: float) -> None:
    """Wait until ``n`` workers have connected; fail at once (naming the job and its output
    file) when a job ends before its worker connected: a worker that dies at start (a bad
    Python environment, a missing local directory) would otherwise be waited for until
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while len(client.scheduler_info()["workers"]) < n:
        connected = {w.get("name") for w in client.scheduler_info()["workers"].values()}
        for name, job in list(cluster.workers.items()):
            job_id = getattr(job, "job_id", None)
            if job_id and name not in connected and not any(
                    str(c).startswith(str(name)) for c in connected) and not job_alive(job_id):
                raise RuntimeError(
                    f"SLURM job {job_id} ended before its Dask worker connected: see its "
                    f"output (slurm-{job_id}.out in the submit directory).")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(client.scheduler_info()['workers'])} of {n} "
                               f"workers connected within {timeout:g} s.")
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
