# Process helpers shared by cluster/local.sh and cluster/gpu/workers.sh (sourced, not run).
# A script sets HOST, PORT, DASK, LOGDIR (and optionally GRACE, CLUSTER_NAME), sources this
# file, then calls start_scheduler and start_worker; every process it starts is stopped on
# Ctrl-C, SIGTERM or exit (workers first, then the scheduler).

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
    echo "bigsink ${CLUSTER_NAME:-local} cluster stopped" >&2
}
trap cleanup INT TERM EXIT

start_scheduler() {  # start `dask scheduler`; sets ADDRESS once it has written it (30 s max)
    local file="$LOGDIR/scheduler.json"
    rm -f "$file"
    "$DASK" scheduler --host "$HOST" --port "$PORT" --no-dashboard \
        --scheduler-file "$file" >"$LOGDIR/scheduler.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 300); do
        [[ -s "$file" ]] && break
        if ! kill -0 "${pids[0]}" 2>/dev/null; then
            echo "dask scheduler failed to start; see $LOGDIR/scheduler.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    ADDRESS=$(sed -n 's/.*"address": *"\([^"]*\)".*/\1/p' "$file")
    if [[ -z "$ADDRESS" ]]; then
        echo "dask scheduler did not report an address; see $LOGDIR/scheduler.log" >&2
        exit 1
    fi
}

start_worker() {  # start_worker NAME [dask worker options...]: log in $LOGDIR/NAME.log
    local name=$1
    shift
    "$DASK" worker "$ADDRESS" --host "$HOST" --no-dashboard --name "$name" "$@" \
        >"$LOGDIR/$name.log" 2>&1 &
    pids+=($!)
}

wait_workers() {  # wait_workers NAME...: until each has registered (60 s max each)
    local name
    for name in "$@"; do
        for _ in $(seq 600); do
            grep -q "Registered to" "$LOGDIR/$name.log" 2>/dev/null && break
            sleep 0.1
        done
        if ! grep -q "Registered to" "$LOGDIR/$name.log" 2>/dev/null; then
            echo "dask worker $name did not start; see $LOGDIR/$name.log" >&2
            exit 1
        fi
    done
}
