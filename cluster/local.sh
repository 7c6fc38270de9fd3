#!/usr/bin/env bash
# Start a Dask cluster on this machine: one `dask scheduler` and N `dask worker` processes,
# all on 127.0.0.1. Prints the scheduler address on stdout (first line), then waits; Ctrl-C
# (or SIGTERM) stops every process it started.
#
#   cluster/local.sh [N_WORKERS]          # default 2
#
# Environment:
#   PORT=8786            scheduler port (0 = any free port)
#   THREADS=1            threads per worker
#   MEMORY=auto          memory limit per worker (e.g. 4GiB)
#   DASK=dask            the `dask` executable (e.g. .venv/bin/dask)
#   LOGDIR=              directory for scheduler/worker logs (default: a new temp dir)
#   GRACE=10             seconds to let processes close on Ctrl-C before SIGKILL
#
# Then, from another shell:
#   bigsink cost X.npy Y.npy --out C.zarr --scheduler tcp://127.0.0.1:8786
#   bigsink solve C.zarr --a A.npy --b B.npy --eps 1e-3 --scheduler tcp://127.0.0.1:8786 --out R
set -euo pipefail

N_WORKERS=${1:-2}
PORT=${PORT:-8786}
THREADS=${THREADS:-1}
MEMORY=${MEMORY:-auto}
DASK=${DASK:-dask}
HOST=127.0.0.1
LOGDIR=${LOGDIR:-$(mktemp -d -t bigsink-cluster.XXXXXX)}
mkdir -p "$LOGDIR"
# shellcheck source=dask_procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/dask_procs.sh"

start_scheduler
names=()
for i in $(seq "$N_WORKERS"); do
    start_worker "worker-$i" --nthreads "$THREADS" --memory-limit "$MEMORY"
    names+=("worker-$i")
done
wait_workers "${names[@]}"

echo "$ADDRESS"
echo "scheduler and $N_WORKERS worker(s) running (logs in $LOGDIR); Ctrl-C to stop" >&2
# returns when a process exits or a signal arrives (then the trap stops the rest)
wait -n "${pids[@]}" || true
