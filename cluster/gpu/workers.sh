#!/usr/bin/env bash
# Start a Dask cluster on this machine with ONE WORKER PER GPU: one `dask scheduler` and, for
# every GPU id, `dask worker --nthreads 1` with CUDA_VISIBLE_DEVICES set to that GPU (so
# each worker sees its GPU as device 0). Everything listens on 127.0.0.1. Prints the
# scheduler address on stdout (first line), then waits; Ctrl-C stops every process it started.
#
#   cluster/gpu/workers.sh                 # every GPU that nvidia-smi lists
#   GPUS=0,2 cluster/gpu/workers.sh        # only GPUs 0 and 2
#
# Environment:
#   GPUS=                comma-separated GPU ids (default: all, from `nvidia-smi -L`)
#   PORT=8786            scheduler port (0 = any free port)
#   MEMORY=auto          host memory limit per worker (e.g. 32GiB)
#   DASK=dask            the `dask` executable (e.g. .venv/bin/dask)
#   LOGDIR=              directory for logs (default: a new temp dir)
#   GRACE=10             seconds to let processes close on Ctrl-C before SIGKILL
#
# Then, from another shell (the cost must be at a path every worker can read):
#   bigsink solve C.zarr --eps 1e-3 --device gpu --scheduler tcp://127.0.0.1:8786 --out R
set -euo pipefail

PORT=${PORT:-8786}
MEMORY=${MEMORY:-auto}
DASK=${DASK:-dask}
HOST=127.0.0.1
if [[ -z "${GPUS:-}" ]]; then
    if ! command -v nvidia-smi >/dev/null; then
        echo "nvidia-smi not found: set GPUS=0,1,... explicitly" >&2
        exit 1
    fi
    GPUS=$(nvidia-smi -L | sed -n 's/^GPU \([0-9]*\):.*/\1/p' | paste -sd, -)
fi
if [[ -z "$GPUS" ]]; then
    echo "no GPU found (nvidia-smi -L lists none); set GPUS=0,1,..." >&2
    exit 1
fi
IFS=, read -r -a gpu_ids <<<"$GPUS"
LOGDIR=${LOGDIR:-$(mktemp -d -t bigsink-gpu-cluster.XXXXXX)}
mkdir -p "$LOGDIR"
SCHEDULER_FILE="$LOGDIR/scheduler.json"
rm -f "$SCHEDULER_FILE"

pids=()
stop() {  # SIGTERM, wait up to GRACE seconds, then SIGKILL
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq $((${GRACE:-10} * 10))); do
        local any=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && any=1; done
        ((any)) || break
        sleep 0.1
    done
    for pid in "$@"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    trap - INT TERM EXIT
    if ((${#pids[@]} > 1)); then stop "${pids[@]:1}"; fi   # workers first
    if ((${#pids[@]} > 0)); then stop "${pids[0]}"; fi
    echo "bigsink GPU cluster stopped" >&2
}
trap cleanup INT TERM EXIT

"$DASK" scheduler --host "$HOST" --port "$PORT" --no-dashboard \
    --scheduler-file "$SCHEDULER_FILE" >"$LOGDIR/scheduler.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do
    [[ -s "$SCHEDULER_FILE" ]] && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "scheduler failed; see $LOGDIR" >&2; exit 1; }
    sleep 0.1
done
ADDRESS=$(sed -n 's/.*"address": *"\([^"]*\)".*/\1/p' "$SCHEDULER_FILE")
[[ -n "$ADDRESS" ]] || { echo "scheduler reported no address; see $LOGDIR" >&2; exit 1; }

for gpu in "${gpu_ids[@]}"; do
    # one thread: strips of one worker run one after another on its GPU (the GPU is the
    # parallelism); the `GPU=1` resource lets you pin tasks with resources={"GPU": 1}
    CUDA_VISIBLE_DEVICES="$gpu" "$DASK" worker "$ADDRESS" --host "$HOST" --nthreads 1 \
        --memory-limit "$MEMORY" --resources "GPU=1" --no-dashboard --name "gpu-$gpu" \
        >"$LOGDIR/worker-gpu-$gpu.log" 2>&1 &
    pids+=($!)
done
for gpu in "${gpu_ids[@]}"; do
    for _ in $(seq 600); do
        grep -q "Registered to" "$LOGDIR/worker-gpu-$gpu.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "Registered to" "$LOGDIR/worker-gpu-$gpu.log" \
        || { echo "worker for GPU $gpu did not start; see $LOGDIR" >&2; exit 1; }
done

echo "$ADDRESS"
echo "scheduler and ${#gpu_ids[@]} GPU worker(s) running (logs in $LOGDIR); Ctrl-C to stop" >&2
wait -n "${pids[@]}" || true
