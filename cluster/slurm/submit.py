#!/usr/bin/env python
"""Solve a bigsink problem on a SLURM cluster through dask-jobqueue.

Runs on a login node (or inside a small SLURM job): it submits SLURM jobs that each start
Dask workers, connects to them, runs ``bigsink.solve(..., client=client)`` and saves the
result. The cost must be on a file system the compute nodes share (or an object-store URL).

    make dist && pip install dist/bigsink-*.whl dask-jobqueue   # bigsink is on no index
    python cluster/slurm/submit.py /shared/C.zarr --a /shared/a.npy --b /shared/b.npy \\
        --eps 1e-3 --out /shared/result --jobs 8 --cores 16 --memory 64GiB \\
        --queue normal --walltime 02:00:00 --account myproject

Equivalent with the command line: start the SLURMCluster in Python, print
``cluster.scheduler_address`` and pass it to ``bigsink solve --scheduler``.
"""

from __future__ import annotations

import argparse
import os
import sys

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
    parser.add_argument("--cores", type=int, default=8, help="cores per job")
    parser.add_argument("--memory", default="32GiB", help="memory per job")
    parser.add_argument("--queue", default=None, help="SLURM partition")
    parser.add_argument("--account", default=None, help="SLURM account")
    parser.add_argument("--walltime", default="01:00:00")
    parser.add_argument("--local-directory", default="$TMPDIR", help="worker spill directory")
    args = parser.parse_args(argv)

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    import bigsink

    cluster = SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=args.cores,
        processes=1,              # one worker process per job, `cores` threads
        memory=args.memory,
        walltime=args.walltime,
        local_directory=args.local_directory,
        job_extra_directives=["--exclusive"],
    )
    cluster.scale(jobs=args.jobs)
    print(f"scheduler at {cluster.scheduler_address}; job script:\n{cluster.job_script()}",
          file=sys.stderr)
    with Client(cluster) as client:
        client.wait_for_workers(args.jobs, timeout=3600)
        a = np.load(args.a) if args.a else None
        b = np.load(args.b) if args.b else None
        extra: dict[str, object] = {}
        if args.checkpoint:  # a resubmitted run continues from its checkpoint
            extra = {"checkpoint": args.checkpoint, "resume": os.path.exists(args.checkpoint)}
        result = bigsink.solve(args.cost, a, b, eps=args.eps, tol=args.tol,
                               max_iter=args.max_iter, client=client, **extra)
        result.save(args.out)
        print(result.summary())
    cluster.close()
    return 0 if result.converged else 1


if __name__ == "__main__":
    sys.exit(main())
