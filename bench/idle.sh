#!/usr/bin/env bash
# bench/idle.sh — the relay's memory per idle device: waiting PTTH/1.0 or idle limmat-mux/1.
#
# What it measures: a relay (`limmat relay`, every per-IP and per-domain limit off, hold time
# 60 s, RUST_LOG=warn) holds devices that have sent
#     POST /<domain> HTTP/1.1 / Upgrade: PTTH/1.0 / Connection: Upgrade / Host: relay
# and wait (spec 2.3-2.4). The devices come from bench/idle_devices.py (Python asyncio, no
# dependencies), PROCS processes per step, each bound to one of SOURCES (127.0.0.2-5) so no one
# source address runs out of ephemeral ports. The relay's memory is sampled from /proc:
#     VmRSS, RssAnon (/proc/PID/status) and Pss (/proc/PID/smaps_rollup)
# before the first device connects, and at each step of STEPS once every device of the step
# has written its POST and the admin gauge `limmat_waiting_devices` (GET /metrics) shows them all
# waiting, plus SETTLE seconds. It reports bytes per device from the baseline
# ((RSS_step - RSS_before) / devices) and marginal between steps ((RSS_step - RSS_prev) /
# (devices - devices_prev)), which leaves out one-time growth. The kernel's memory for the
# sockets is not in RSS: as a hint, the table also shows the system-wide Slab growth per
# device, which counts BOTH ends of each loopback connection (relay and bench client sockets)
# and everything else the machine did meanwhile.
#
# With PROTOCOLS containing mux, devices are limmat-mux/1 connections instead (the same client
# with --protocol mux: the mux POST, the 61-byte 101, then a minimal idle HTTP/2 server that
# only ACKs SETTINGS and PING), counted by the gauge `limmat_mux_connections`.
#
# It runs every combination of
#     PROTOCOLS   ptth and mux
#     ALLOCATORS  default (glibc as is) and arena2 (MALLOC_ARENA_MAX=2; environment only)
#     DOMAINS     many (one domain per device, dev00000...) and one (all devices in one domain)
# with a fresh relay each time, and prints one table at the end.
#
# PROFILE=heaptrack instead runs one smaller case (PROFILE_DEVICES [2000], PROFILE_DOMAINS
# [many], default allocator, the first of PROTOCOLS) with the relay under heaptrack, stops it
# with SIGTERM once the devices wait, and prints the heap's allocation sites at its peak (which
# is while every device waits) grouped by bench/heaptrack_sites.py, with bytes per device.
# heaptrack needs the symbols: LIMMAT=target/profiling/limmat (cargo build --profile
# profiling). The admin /metrics polls that tell when all devices wait build a registry
# snapshot, which shows up as a transient site.
#
# The machine's hard open-file limit (20,000 here) bounds the relay to about 19,900
# connections, so the default is 15,000 devices. Everything listens on 127.0.0.1 on free ports;
# every process the script starts is stopped on exit (clients first, then the relay).
#
# Run by hand, never in CI (about 4 x 40 s):
#     bench/idle.sh
#     STEPS="1000 2000" DOMAINS=many ALLOCATORS=default bench/idle.sh
#     PROFILE=heaptrack bench/idle.sh
# Settings (environment variables, defaults in brackets):
#     STEPS ["5000 10000 15000"]   cumulative device counts sampled; the last is the total
#                                  (100,000 devices cannot run here: the hard open-file
#                                  limit of 20,000 per process caps the relay)
#     PROTOCOLS ["ptth mux"]       device transports, see above
#     PROCS [4]                    client processes started per step
#     SOURCES ["127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5"]  source addresses, round robin
#     DOMAINS ["many one"]         see above
#     ALLOCATORS ["default arena2"] see above
#     HOLD_TIME [60s]              relay --hold-time (devices re-POST after a 204 anyway)
#     SETTLE [3]                   seconds between "all waiting" and the sample
#     READY_TIMEOUT [90]           seconds a step may take before the run fails
#     PROFILE [none]               heaptrack (see above)
#     PROFILE_DEVICES [2000]
#     PROFILE_DOMAINS [many]       many | one
#     SKIP_BUILD [0]               1 = use target/release/limmat as it is
#     LIMMAT [target/release/limmat]  the binary (e.g. target/profiling/limmat, whose symbols
#                                  heaptrack needs; implies SKIP_BUILD=1)
#     KEEP_TMP [0]                 1 = keep the temporary directory (logs, profiles)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

STEPS=${STEPS:-"5000 10000 15000"}
PROCS=${PROCS:-4}
SOURCES=${SOURCES:-"127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5"}
DOMAINS=${DOMAINS:-"many one"}
PROTOCOLS=${PROTOCOLS:-"ptth mux"}
PROTOCOL=ptth
ALLOCATORS=${ALLOCATORS:-"default arena2"}
HOLD_TIME=${HOLD_TIME:-60s}
SETTLE=${SETTLE:-3}
READY_TIMEOUT=${READY_TIMEOUT:-90}
PROFILE=${PROFILE:-none}
PROFILE_DEVICES=${PROFILE_DEVICES:-2000}
PROFILE_DOMAINS=${PROFILE_DOMAINS:-many}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}

LIMMAT=${LIMMAT:-$ROOT/target/release/limmat}
CLIENT=$BENCH_DIR/idle_devices.py
read -r -a SRC <<<"$SOURCES"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/limmat-idle.XXXXXX")
CLIENT_PIDS=()
RELAY_PID=
WRAP_PID=

stop_clients() {
    local pid
    for pid in "${CLIENT_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${CLIENT_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    CLIENT_PIDS=()
}

# SIGTERM to the relay (graceful: waiting devices are closed), SIGKILL after 20 s.
stop_relay() {
    local pid=$RELAY_PID wait_for=${WRAP_PID:-$RELAY_PID} i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        kill -0 "$wait_for" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$wait_for" 2>/dev/null || true
    RELAY_PID= WRAP_PID=
}

cleanup() {
    stop_clients
    stop_relay
    if [[ $KEEP_TMP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "idle.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

metric() { # metric NAME -> value from the admin /metrics, or empty
    curl -fsS --max-time 5 "http://$ADMIN/metrics" 2>/dev/null | awk -v n="$1" '$1 == n {print $2; exit}'
}

kib() { # kib FILE FIELD -> the field's value in KiB, or 0
    awk -v f="$2:" '$1 == f {print $2; found=1; exit} END {if (!found) print 0}' "$1" 2>/dev/null || echo 0
}

# start_relay ALLOCATOR [WRAPPER...]: sets RELAY_PID (and WRAP_PID under a profiler), ADMIN, RELAY.
start_relay() {
    local alloc=$1; shift
    local port admin env=(RUST_LOG=warn) i
    port=$(free_port); admin=$(free_port)
    RELAY=127.0.0.1:$port ADMIN=127.0.0.1:$admin
    [[ $alloc == arena2 ]] && env+=(MALLOC_ARENA_MAX=2)
    (
        ulimit -n "$(ulimit -Hn)"
        exec env "${env[@]}" "$@" "$LIMMAT" relay --listen "$RELAY" --admin "$ADMIN" \
            --max-per-domain 0 --hold-time "$HOLD_TIME" --max-conns-per-ip 0 \
            --conn-rate-per-ip 0 --handshake-rate-per-domain 0 --limit-exempt none
    ) >"$TMP/relay.log" 2>&1 &
    RELAY_PID=$!
    for ((i = 0; i < 300; i++)); do
        curl -fsS --max-time 1 "http://$ADMIN/healthz" >/dev/null 2>&1 && break
        kill -0 "$RELAY_PID" 2>/dev/null || { cat "$TMP/relay.log" >&2; die "the relay exited"; }
        sleep 0.1
    done
    ((i < 300)) || die "the relay's admin listener did not come up"
    if (($# > 0)); then # under a wrapper: the relay is the wrapper's descendant named limmat
        WRAP_PID=$RELAY_PID
        # Not found (the binary must be named limmat): stop the wrapper itself on the way out.
        RELAY_PID=$(pgrep -n -x limmat -P "$WRAP_PID" || pgrep -n -x limmat) ||
            { RELAY_PID=$WRAP_PID; die "cannot find the relay under $1"; }
        [[ $(ps -o comm= -p "$RELAY_PID") == limmat ]] ||
            { RELAY_PID=$WRAP_PID; die "cannot find the relay under $1"; }
    fi
}

# add_devices FIRST COUNT DOMAINS: starts PROCS clients for devices FIRST..FIRST+COUNT-1 and
# waits until each has opened its connections and written its POST.
NPROC_STARTED=0
add_devices() {
    local first=$1 count=$2 mode=$3 k n start=$1 out pids=() outs=() deadline
    for ((k = 0; k < PROCS; k++)); do
        n=$((count / PROCS + (k < count % PROCS ? 1 : 0)))
        ((n > 0)) || continue
        out=$TMP/client.$NPROC_STARTED.out
        python3 "$CLIENT" --relay "$RELAY" --src "${SRC[NPROC_STARTED % ${#SRC[@]}]}" \
            --first "$start" --count "$n" --domains "$mode" --max-seconds 900 --protocol "$PROTOCOL" \
            >"$out" 2>"$TMP/client.$NPROC_STARTED.err" &
        CLIENT_PIDS+=($!); pids+=($!); outs+=("$out")
        start=$((start + n)); NPROC_STARTED=$((NPROC_STARTED + 1))
    done
    deadline=$((SECONDS + READY_TIMEOUT))
    for k in "${!outs[@]}"; do
        until grep -q '^ready' "${outs[k]}" 2>/dev/null; do
            kill -0 "${pids[k]}" 2>/dev/null || { cat "$TMP"/client.*.err >&2; die "a client exited"; }
            ((SECONDS < deadline)) || die "clients not ready within ${READY_TIMEOUT}s"
            sleep 0.2
        done
        read -r _ opened failed <"${outs[k]}"
        ((failed == 0)) || die "a client failed to open $failed connections (see ${outs[k]%.out}.err)"
    done
}

wait_waiting() { # wait_waiting N: until limmat_waiting_devices (or mux connections) >= N
    local want=$1 deadline=$((SECONDS + READY_TIMEOUT)) got gauge=limmat_waiting_devices
    [[ $PROTOCOL == mux ]] && gauge=limmat_mux_connections
    while :; do
        got=$(metric $gauge)
        [[ -n $got && $got -ge $want ]] && return 0
        ((SECONDS < deadline)) || die "only ${got:-?} of $want devices waiting after ${READY_TIMEOUT}s"
        sleep 0.3
    done
}

# sample -> "VmRSS RssAnon Pss Slab" in KiB (Slab is system-wide).
sample() {
    local rss anon pss slab
    rss=$(kib "/proc/$RELAY_PID/status" VmRSS)
    anon=$(kib "/proc/$RELAY_PID/status" RssAnon)
    pss=$(kib "/proc/$RELAY_PID/smaps_rollup" Pss)
    slab=$(kib /proc/meminfo Slab)
    echo "$rss $anon $pss $slab"
}

ROWS=$TMP/rows
: >"$ROWS"

run_case() { # run_case ALLOCATOR DOMAINS
    local alloc=$1 mode=$2 prev=0 step base cur threads
    echo "== protocol=$PROTOCOL allocator=$alloc domains=$mode" >&2
    start_relay "$alloc"
    sleep 1
    base=$(sample)
    printf '%s %s %s %s\n' "$PROTOCOL/$alloc" "$mode" 0 "$base" >>"$ROWS"
    for step in $STEPS; do
        ((step > prev)) || die "STEPS must increase"
        add_devices "$prev" $((step - prev)) "$mode"
        wait_waiting "$step"
        sleep "$SETTLE"
        cur=$(sample)
        threads=$(kib "/proc/$RELAY_PID/status" Threads)
        echo "   $step devices waiting ($(metric limmat_waiting_devices) PTTH, $(metric limmat_mux_connections) mux by the gauges), VmRSS RssAnon Pss Slab KiB: $cur, relay threads $threads" >&2
        printf '%s %s %s %s\n' "$PROTOCOL/$alloc" "$mode" "$step" "$cur" >>"$ROWS"
        prev=$step
    done
    stop_clients
    stop_relay
    grep -h . "$TMP"/client.*.err >&2 || true
    rm -f "$TMP"/client.*
    NPROC_STARTED=0
}

print_table() {
    awk '
    function row(a, m, d, r, an, p, s,   br, mr, bs) {
        br = d ? sprintf("%.0f", (r - R0) * 1024 / d) : "-"
        mr = d ? sprintf("%.0f", (r - RP) * 1024 / (d - DP)) : "-"
        bp = d ? sprintf("%.0f", (p - P0) * 1024 / d) : "-"
        bs = d ? sprintf("%.0f", (s - S0) * 1024 / d) : "-"
        printf "%-14s %-7s %8s %10s %10s %10s %12s %12s %12s %14s\n", a, m, d, r, an, p, br, mr, bp, bs
    }
    BEGIN {
        printf "%-14s %-7s %8s %10s %10s %10s %12s %12s %12s %14s\n", "proto/alloc", "domains", "devices",
            "VmRSS KiB", "RssAnon KiB", "Pss KiB", "RSS B/dev", "RSS B/dev", "Pss B/dev", "Slab B/dev"
        printf "%-14s %-7s %8s %10s %10s %10s %12s %12s %12s %14s\n", "", "", "", "", "", "",
            "(vs before)", "(marginal)", "(vs before)", "(both ends)"
    }
    {
        if ($3 == 0) { R0 = $4; P0 = $6; S0 = $7; RP = $4; DP = 0 }
        row($1, $2, $3, $4, $5, $6, $7)
        RP = $4; DP = $3
    }' "$ROWS"
}

profile() {
    local n=$PROFILE_DEVICES mode=$PROFILE_DOMAINS out=$TMP/heaptrack.limmat file
    [[ $PROFILE == heaptrack ]] || die "PROFILE must be heaptrack"
    PROTOCOL=${PROTOCOLS%% *}
    command -v heaptrack >/dev/null || die "heaptrack is not installed (apt-get install heaptrack)"
    READY_TIMEOUT=$((READY_TIMEOUT * 3))
    echo "== heaptrack, $n devices, domains=$mode" >&2
    start_relay default heaptrack -o "$out"
    add_devices 0 "$n" "$mode"
    wait_waiting "$n"
    sleep "$SETTLE"
    echo "   $n devices waiting; VmRSS under heaptrack: $(kib "/proc/$RELAY_PID/status" VmRSS) KiB" >&2
    stop_relay # the heap's peak is while every device waits: stop the relay before the clients
    stop_clients
    file=$(ls "$out".* 2>/dev/null | head -1) || true
    [[ -n $file ]] || die "no heaptrack output"
    heaptrack_print -f "$file" -p 0 -a 0 -T 0 --flamegraph-cost-type peak -F "$TMP/peak-stacks.txt" \
        >"$TMP/heaptrack-print.txt" 2>&1 || die "heaptrack_print failed (see $TMP/heaptrack-print.txt)"
    echo
    echo "limmat relay under heaptrack: heap at its peak, $n idle $PROTOCOL devices, domains=$mode"
    python3 "$BENCH_DIR/heaptrack_sites.py" "$TMP/peak-stacks.txt" "$n"
    echo "(raw: $file and $TMP/peak-stacks.txt; KEEP_TMP=1 keeps them)" >&2
}

if [[ $SKIP_BUILD != 1 && $LIMMAT == "$ROOT/target/release/limmat" ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
[[ -x $LIMMAT ]] || die "no $LIMMAT"
command -v curl >/dev/null || die "curl is needed"
echo "hard open-file limit: $(ulimit -Hn); kernel $(uname -r); $(nproc) cores" >&2

if [[ $PROFILE != none ]]; then
    profile
    exit 0
fi

last=${STEPS##* }
(($(ulimit -Hn) > last + 100)) || die "the hard open-file limit $(ulimit -Hn) is too low for $last devices"
for PROTOCOL in $PROTOCOLS; do
    for alloc in $ALLOCATORS; do
        for mode in $DOMAINS; do
            run_case "$alloc" "$mode"
        done
    done
done
echo
echo "limmat relay, idle devices: waiting PTTH/1.0 (hold time $HOLD_TIME) and idle limmat-mux/1 connections, RUST_LOG=warn"
print_table
