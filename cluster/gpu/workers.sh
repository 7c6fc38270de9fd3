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
CLUSTER_NAME=GPU
# shellcheck source=../dask_procs.sh
source "$(dirname "${BASH_SOURCE[0]}")/../dask_procs.sh"

start_scheduler
names=()
for gpu in "${gpu_ids[@]}"; do
    # one thread: strips of one worker run one after another on its GPU (the GPU is the
    # parallelism); the `GPU=1` resource lets you pin tasks with resources={"GPU": 1}
    CUDA_VISIBLE_DEVICES="$gpu" start_worker "gpu-$gpu" --nthreads 1 \
        --memory-limit "$MEMORY" --resources "GPU=1"
    names+=("gpu-$gpu")
done
wait_workers "${names[@]}"

echo "$ADDRESS"
echo "scheduler and ${#gpu_ids[@]} GPU worker(s) running (logs in $LOGDIR); Ctrl-C to stop" >&2
wait -n "${pids[@]}" || true
