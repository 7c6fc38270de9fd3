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
SCHEDULER_FILE="$LOGDIR/scheduler.json"
rm -f "$SCHEDULER_FILE"

pids=()
alive() {  # is any of the given pids still running?
    local pid
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}
stop() {  # SIGTERM the given pids, wait up to GRACE seconds, then SIGKILL what is left
    local pid
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq $((${GRACE:-10} * 10))); do
        alive "$@" || break
        sleep 0.1
    done
    for pid in "$@"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    trap - INT TERM EXIT
    # workers first (they leave the scheduler cleanly), then the scheduler
    if ((${#pids[@]} > 1)); then
        stop "${pids[@]:1}"
    fi
    if ((${#pids[@]} > 0)); then
        stop "${pids[0]}"
    fi
    echo "bigsink local cluster stopped" >&2
}
trap cleanup INT TERM EXIT

"$DASK" scheduler --host "$HOST" --port "$PORT" --no-dashboard \
    --scheduler-file "$SCHEDULER_FILE" >"$LOGDIR/scheduler.log" 2>&1 &
pids+=($!)

# wait (up to 30 s) for the scheduler to write its address
for _ in $(seq 300); do
    [[ -s "$SCHEDULER_FILE" ]] && break
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "dask scheduler failed to start; see $LOGDIR/scheduler.log" >&2
        exit 1
    fi
    sleep 0.1
done
ADDRESS=$(sed -n 's/.*"address": *"\([^"]*\)".*/\1/p' "$SCHEDULER_FILE")
if [[ -z "$ADDRESS" ]]; then
    echo "dask scheduler did not report an address; see $LOGDIR/scheduler.log" >&2
    exit 1
fi

for i in $(seq "$N_WORKERS"); do
    "$DASK" worker "$ADDRESS" --host "$HOST" --nthreads "$THREADS" --memory-limit "$MEMORY" \
        --no-dashboard --name "worker-$i" >"$LOGDIR/worker-$i.log" 2>&1 &
    pids+=($!)
done

# wait (up to 60 s) until every worker has registered with the scheduler
for i in $(seq "$N_WORKERS"); do
    for _ in $(seq 600); do
        grep -q "Registered to" "$LOGDIR/worker-$i.log" 2>/dev/null && break
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            echo "dask worker $i failed to start; see $LOGDIR/worker-$i.log" >&2
            exit 1
        fi
        sleep 0.1
    done
done

echo "$ADDRESS"
echo "scheduler and $N_WORKERS worker(s) running (logs in $LOGDIR); Ctrl-C to stop" >&2
# returns when a process exits or a signal arrives (then the trap stops the rest)
wait -n "${pids[@]}" || true
