#!/usr/bin/env bash
# bench/gateway.sh — beacon events per second from advertisement to signed webhook delivery,
# and the delay of each event, through a real `limmat gateway` (release build).
#
# For each mode (by default one batched and one unbatched run), the script starts a fresh
# `limmat gateway` on 127.0.0.1 with a generated gateway.toml and its own state directory:
#   * the simulated backend with only the benchmark's world (`default_world = false`): one
#     `[[sim.beacon]]` iBeacon entry with `count = BEACONS` clones, each advertising every
#     INTERVAL_MS, and `presence.update_interval` below that interval, so that every
#     advertisement of a present beacon becomes a `beacon.updated` event: the offered event
#     rate is BEACONS x 1000 / INTERVAL_MS per second (6,000/s by default). PRESENT_S and
#     ABSENT_S add a presence cycle (entered and left events as well);
#   * `webhooks.allow_networks = ["127.0.0.1/32"]`, so the receiver on 127.0.0.1 passes the
#     SSRF check.
# The harness (crates/limmat-gateway/examples/bench_webhooks.rs) then starts the crate's own
# webhook receiver, which verifies every signature (HMAC-SHA256, constant time), creates one
# subscription with `POST /beacon/subscriptions` (with `batch` in the batched mode), waits
# WARMUP seconds and measures for DURATION seconds:
#   accepted/s   limmat_gateway_events_accepted_total on /metrics (both ends of the window)
#   delivered/s  events in verified messages received in the window (a beacon.batch counts
#                its data.events), de-duplicated by webhook-id
#   requests/s   verified webhook messages received in the window
#   p50/p99/max  per event: arrival at the receiver minus the event's `timestamp` (the
#                sighting that caused it, RFC 3339 ms), so it covers decoding, presence, the
#                durable group commit, batching, the outbox commit and the signed POST
#   backlog      the subscription's `delivery.pending` at the end of the window (events
#                accepted but not yet delivered; it grows if delivery does not keep up)
#   bad_order    events whose `sequence` did not increase (must be 0)
#   adverts/s    limmat_gateway_advertisements_total, the reports the pipeline decoded
#   dropped      limmat_gateway_reports_dropped_total (reports the pipeline lagged behind on)
# and prints one table, with the load average before and after each run (the machine is
# shared; results are noisy).
#
# Run by hand, never in CI (about MODES x (WARMUP + DURATION + start-up) plus the build):
#     bench/gateway.sh
#     DURATION=10 BEACONS=10000 INTERVAL_MS=1000 bench/gateway.sh
#     MODES="batched" BATCH=1000,20 bench/gateway.sh
# Settings (environment variables, defaults in brackets):
#     BEACONS [3000]        simulated iBeacons (consecutive minors and addresses)
#     INTERVAL_MS [500]     advertising interval of each (20-10240)
#     PRESENT_S, ABSENT_S   a presence cycle for every beacon (unset: always present)
#     WARMUP [5]            seconds between subscribing and the measured window
#     DURATION [20]         seconds measured
#     MODES ["batched unbatched"]  runs, in this order
#     BATCH [500,10]        maxEvents,maxDelayMs of the batched subscription
#     PERF [0]              1 = `perf record -g` the gateway during each window and keep
#                           `perf report` (top symbols) in the temporary directory
#     SKIP_BUILD [0]        1 = use target/release/limmat and bench_webhooks as they are
#     KEEP_TMP [0]          1 = keep the temporary directory (configs, logs, state)
#
# Targets (the issue's): >= 5,000 events/s delivered with batching, p99 <= 50 ms.
# It needs curl (installed with apt-get if missing) and cargo. Everything listens on
# 127.0.0.1; every process the script starts is stopped on exit and the temporary directory
# is removed.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

BEACONS=${BEACONS:-3000}
INTERVAL_MS=${INTERVAL_MS:-500}
PRESENT_S=${PRESENT_S:-}
ABSENT_S=${ABSENT_S:-}
WARMUP=${WARMUP:-5}
DURATION=${DURATION:-20}
MODES=${MODES:-batched unbatched}
BATCH=${BATCH:-500,10}
PERF=${PERF:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
export RUST_LOG=${RUST_LOG:-warn}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Tools and build
# ---------------------------------------------------------------------------------------------
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
if ! command -v curl >/dev/null 2>&1; then
    log "apt-get install curl"
    $SUDO apt-get update -q >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl >&2
fi
command -v cargo >/dev/null 2>&1 || die "cargo is missing (needed to build limmat)"
if [ "$PERF" = 1 ]; then
    command -v perf >/dev/null 2>&1 || die "PERF=1 needs perf (linux-perf)"
    KEEP_TMP=1
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LIMMAT=$TARGET_DIR/release/limmat
HARNESS=$TARGET_DIR/release/examples/bench_webhooks
if [ "$SKIP_BUILD" != 1 ]; then
    # One invocation for both, so they share one feature set and neither rebuilds the other.
    log "cargo build --release -p limmat -p limmat-gateway --bin limmat --example bench_webhooks"
    (cd "$ROOT" && cargo build --release -p limmat -p limmat-gateway --bin limmat --example bench_webhooks) >&2
fi
[ -x "$LIMMAT" ] || die "$LIMMAT is missing"
[ -x "$HARNESS" ] || die "$HARNESS is missing"

# ---------------------------------------------------------------------------------------------
# Processes and clean-up
# ---------------------------------------------------------------------------------------------
TMPD=$(mktemp -d -t limmat-gbench.XXXXXX)
PIDS=()

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop "$pid"; done
    if [ "$KEEP_TMP" = 1 ]; then log "kept $TMPD"; else rm -rf "$TMPD"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop PID: TERM, wait up to 10 s, then KILL; and forget it.
stop() {
    local pid=$1 deadline=$(( SECONDS + 10 )) keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# port_in_use PORT: some socket has that local port (read from /proc, no probe).
port_in_use() {
    awk -v p="$(printf ':%04X' "$1")" \
        'NR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# pick_port: a free TCP port on 127.0.0.1 below the ephemeral range.
pick_port() {
    local p tries=0
    while (( tries++ < 200 )); do
        p=$(( 20000 + RANDOM % 12000 ))
        port_in_use "$p" && continue
        echo "$p"
        return 0
    done
    die "no free port found"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------
# write_config FILE PORT STATE_DIR
write_config() {
    local update
    # Below the advertising interval: every sighting of a present beacon is an update event.
    update=$(awk -v ms="$INTERVAL_MS" 'BEGIN { printf "%dms", ms / 2 }')
    {
        printf '[gateway]\nname = "bench"\nstate_dir = "%s"\n\n' "$3"
        printf '[api]\nlisten = "127.0.0.1:%s"\n\n' "$2"
        printf '[presence]\nupdate_interval = "%s"\nleave_after = "30s"\n\n' "$update"
        printf '[webhooks]\nallow_networks = ["127.0.0.1/32"]\n\n'
        printf '[sim]\nseed = 1\ndefault_world = false\n\n'
        printf '[[sim.beacon]]\nformat = "ibeacon"\naddress = "C0:00:00:00:00:01"\n'
        printf 'count = %s\ninterval_ms = %s\n' "$BEACONS" "$INTERVAL_MS"
        if [ -n "$PRESENT_S" ]; then printf 'present_s = %s\n' "$PRESENT_S"; fi
        if [ -n "$ABSENT_S" ]; then printf 'absent_s = %s\n' "$ABSENT_S"; fi
    } >"$1"
}

# run MODE: the harness's result line and the load average, into $TMPD/MODE/result.
run() {
    local mode=$1 port dir gw harness_args=() deadline perf_pid= line
    port=$(pick_port)
    dir=$TMPD/$mode
    mkdir -p "$dir/state"
    write_config "$dir/gateway.toml" "$port" "$dir/state"
    "$LIMMAT" gateway --config "$dir/gateway.toml" >"$dir/gateway.log" 2>&1 &
    gw=$!
    PIDS+=("$gw")
    deadline=$(( SECONDS + 30 ))
    until curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/metrics"; do
        if ! kill -0 "$gw" 2>/dev/null; then
            tail -n 20 "$dir/gateway.log" >&2 || true
            die "the gateway exited early (log above)"
        fi
        (( SECONDS < deadline )) || die "the gateway did not answer on 127.0.0.1:$port within 30 s"
        sleep 0.2
    done
    case $mode in
        batched) harness_args=(--batch "$BATCH") ;;
        unbatched) ;;
        *) die "unknown mode $mode (batched or unbatched)" ;;
    esac
    if [ "$PERF" = 1 ]; then
        (sleep "$WARMUP" && exec perf record -q -F 499 -g -p "$gw" -o "$dir/perf.data" -- sleep "$DURATION") \
            >"$dir/perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    log "$mode: $BEACONS beacons every $INTERVAL_MS ms, warm-up ${WARMUP}s, window ${DURATION}s (load $(loadavg))"
    line=$("$HARNESS" --gateway "http://127.0.0.1:$port" --label "$mode" \
        --warmup "$WARMUP" --duration "$DURATION" "${harness_args[@]}" 2>"$dir/harness.log") \
        || { cat "$dir/harness.log" >&2; die "the harness failed in mode $mode"; }
    if [ -n "$perf_pid" ]; then
        wait "$perf_pid" 2>/dev/null || true
        perf report -i "$dir/perf.data" --no-children --stdio --percent-limit 1 2>/dev/null \
            | grep -v '^$' | head -200 >"$dir/perf-top.txt" || true
        log "perf profile: $dir/perf-top.txt"
    fi
    stop "$gw"
    echo "$line $(loadavg | tr ' ' '/')" >"$dir/result"
}

# ---------------------------------------------------------------------------------------------
# Runs and table
# ---------------------------------------------------------------------------------------------
offered=$(( BEACONS * 1000 / INTERVAL_MS ))
load_start=$(loadavg)
rows=()
for mode in $MODES; do
    run "$mode"
    rows+=("$(cat "$TMPD/$mode/result")")
done

echo
echo "limmat gateway: advertisement -> signed webhook, $BEACONS beacons x $(( 1000 / INTERVAL_MS ))/s" \
    "(offered ~$offered events/s), window ${DURATION}s, batch $BATCH (maxEvents,maxDelayMs)"
echo "$(nproc) CPUs; load average at start $load_start"
fmt='%-10s %11s %12s %11s %8s %8s %9s %9s %10s %6s %10s %8s  %s\n'
# shellcheck disable=SC2059
printf "$fmt" mode accepted/s delivered/s requests/s "p50 ms" "p99 ms" "max ms" backlog delivered bad_ord adverts/s dropped "load after"
# shellcheck disable=SC2059
printf "$fmt" ---------- ----------- ------------ ----------- -------- -------- --------- --------- ---------- ------ ---------- -------- ---------------
for row in "${rows[@]}"; do
    # shellcheck disable=SC2059,SC2086
    printf "$fmt" $row
done
echo
echo "Targets: delivered/s >= 5000 with batching, p99 <= 50 ms."
