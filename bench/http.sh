#!/usr/bin/env bash
# bench/http.sh — HTTP throughput and latency through Limmat, next to rathole and a direct baseline.
#
# What it measures, in one run and with the same wrk load for every cell:
#   direct   wrk -> nginx                                    (the origin alone)
#   ptth     wrk -> limmat relay -> limmat tunnel server --transport ptth -> nginx
#              (path form: http://127.0.0.1:RELAYPORT/bench/; nginx answers any path)
#   mux      wrk -> limmat relay -> limmat tunnel server --transport mux -> nginx
#              (limmat-mux/1: one HTTP/2 connection, a stream per client; /benchmux/)
#   rathole  wrk -> rathole server -> rathole client -> nginx (transport tcp, no noise)
#   floor    wrk -> bench/floor.c -> nginx: the cheapest proxy we know how to write (one thread,
#              epoll, read/write, nothing else), a new connection to nginx per visitor
#   floor2   wrk -> floor -> floor -> nginx: two of them in a chain, a new connection between
#              them per visitor — the TCP work of rathole and PTTH without their protocols
#   h2floor  wrk -> h2_floor relay -> h2_floor agent -> nginx: the floor of the mux transport,
#              crates/limmat-mux/examples/h2_floor.rs — a CONNECT stream per visitor over one
#              HTTP/2 connection with `h2`, tokio's current-thread runtime and limmat-mux/1's
#              HTTP/2 settings, and nothing else (no metadata, routing, limits, keepalive, counts)
# In the bulk cells the floors splice (bench/floor.c's `splice` mode), and `floor3`, three in a
# chain, has limmat's bulk structure (tunnel client, relay, tunnel proxy); `h2floor` gets a
# splicing floor in front, for the same three processes as limmat's mux.
# The floor legs are not products: they show what the kernel alone charges a proxy for each
# cell on this machine, the limit under any proxy's CPU and above its requests/s.
# each once with HTTP keep-alive and once with `Connection: close` (every request a new TCP
# connection, so through ptth every request also takes a fresh PTTH device connection, and
# through mux a fresh stream). It prints one table: requests/s, the ratio to rathole's
# requests/s in the same mode, latency p50/p99 (wrk --latency), requests completed,
# non-2xx/3xx responses and wrk socket errors, and what the proxies paid for it: the CPU time
# (utime + stime from /proc/PID/stat) of the proxy processes — limmat relay + the cell's tunnel,
# rathole server + client — per 1,000 requests (and, for bulk, per GiB), next to rathole's,
# and the part of it spent in the kernel (stime; "sys ms/1k").
# The cells run interleaved (ptth, mux, rathole, ptth, mux, rathole, …) REPEAT times; the table
# shows medians, with the spread of req/s ((max - min) / 2 as a share of the median).
#
# Then, unless BULK=0: TCP bulk throughput with iperf3 (one stream, BULK_SECONDS, client to
# server) direct, through limmat (iperf3 -> limmat tunnel client -> relay -> limmat tunnel proxy
# -> iperf3 server, for ptth and mux: one hop more than rathole, the user-side client) and
# through rathole. And, unless LATENCY=0: latency under a fixed rate, open loop (the
# `openloop` example of crates/limmat, built here; wrk2 is not packaged), RATE requests/s over
# RATE_CONNECTIONS keep-alive connections for RATE_SECONDS, each latency measured from when its
# request was due; the table shows p50/p99/p99.9 and p99 added over direct.
#
# The origin is nginx on 127.0.0.1 (worker_processes 1, access_log off, a 13-byte body
# "hello, limmat"), run in the foreground with its own prefix in a temporary directory.
# Everything listens on 127.0.0.1 on free ports below the ephemeral range; every process the
# script starts is stopped on exit. Relay, tunnel and rathole run with RUST_LOG=warn.
#
# Run by hand, never in CI (about REPEAT x 8 x (WARMUP + DURATION + SETTLE) plus bulk and
# open-loop cells and start-up):
#     bench/http.sh
#     DURATION=3s CONNECTIONS=20 bench/http.sh
# Settings (environment variables, defaults in brackets):
#     DURATION [10s]      wrk -d for each measured cell
#     CONNECTIONS [50]    wrk -c
#     THREADS [2]         wrk -t
#     WARMUP [2s]         unmeasured wrk run before each cell (0 = none)
#     SETTLE [2]          seconds of rest before each cell (the tunnel refills its pool)
#     WRK_TIMEOUT [10s]   wrk --timeout; above the relay's 5 s client wait, so 504s are
#                         counted as non-2xx responses rather than as wrk timeouts
#     MIN_LISTENERS [=CONNECTIONS]  limmat tunnel --min-listeners
#     MAX_SOCKETS [max(128, 4 x CONNECTIONS)]  limmat tunnel --max-sockets
#     MAX_PER_DOMAIN [0]  limmat relay --max-per-domain (0 = no cap)
#     STATUS_CODES [0]    1 = count responses per HTTP status with bench/status.lua
#                         (costs wrk some throughput, so it is off by default)
#     LEGS ["direct floor floor2 h2floor ptth mux rathole"]  which targets to run, in this order
#                         (the table's order is fixed)
#     WORKER_THREADS []   tokio worker threads of the limmat relay and tunnels
#                         (TOKIO_WORKER_THREADS; empty = one per core)
#     RELAY_ARGS []       more flags for `limmat relay`, such as "--runtime multi-thread
#                         --worker-threads 1" or "--data-path copy" (split on spaces)
#     TUNNEL_ARGS []      more flags for every `limmat tunnel`, such as "--runtime
#                         multi-thread" or "--data-path splice"
#     BULK [1]            run the iperf3 cells; BULK_SECONDS [10]
#     LATENCY [1]         run the open-loop cells; RATE [5000], RATE_SECONDS [10],
#                         RATE_CONNECTIONS [50]
#     SKIP_BUILD [0]      1 = use target/release/limmat (or LIMMAT) as it is
#     LIMMAT [target/release/limmat]  the limmat binary to measure, for A/B runs
#     KEEP_TMP [0]        1 = keep the temporary directory (configs, logs, raw wrk output)
#     REPEAT [3]          rounds of interleaved cells; medians are reported
#     PIN [0]             1 = pin the load (wrk, iperf3, openloop) and the origin (nginx,
#                         iperf3 -s) to LOAD_CPUS [0] and the proxies to PROXY_CPUS [1]
#                         with taskset; the report says so
#
# On a fresh Debian machine it installs what is missing: wrk, nginx-light (or nginx) and curl
# with apt-get, rathole with `cargo install rathole`, and it builds limmat with
# `cargo build --release`. If `limmat tunnel server` does not exist yet, the limmat rows are
# reported as skipped.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
SETTLE=${SETTLE:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-10s}
MIN_LISTENERS=${MIN_LISTENERS:-$CONNECTIONS}
if (( 4 * CONNECTIONS > 128 )); then default_max_sockets=$(( 4 * CONNECTIONS )); else default_max_sockets=128; fi
MAX_SOCKETS=${MAX_SOCKETS:-$default_max_sockets}
MAX_PER_DOMAIN=${MAX_PER_DOMAIN:-0}
STATUS_CODES=${STATUS_CODES:-0}
LEGS=${LEGS:-direct floor floor2 h2floor ptth mux rathole}
WORKER_THREADS=${WORKER_THREADS:-}
read -r -a RELAY_EXTRA <<<"${RELAY_ARGS:-}"
read -r -a TUNNEL_EXTRA <<<"${TUNNEL_ARGS:-}"
BULK=${BULK:-1}
BULK_SECONDS=${BULK_SECONDS:-10}
LATENCY=${LATENCY:-1}
RATE=${RATE:-5000}
RATE_SECONDS=${RATE_SECONDS:-10}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-50}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_TMP=${KEEP_TMP:-0}
REPEAT=${REPEAT:-3}
PIN=${PIN:-0}
LOAD_CPUS=${LOAD_CPUS:-0}
PROXY_CPUS=${PROXY_CPUS:-1}
CLK_TCK=$(getconf CLK_TCK)
DOMAIN=bench
MUX_DOMAIN=benchmux
export RUST_LOG=warn

log() { printf '[bench] %s\n' "$*" >&2; }
# limmat_env PROGRAM ARGS...: runs PROGRAM with the chosen worker threads. `exec`, so that the
# background job's PID (which `start` records and the clean-up stops) is the program's own.
limmat_env() {
    if [ -n "$WORKER_THREADS" ]; then
        exec env TOKIO_WORKER_THREADS="$WORKER_THREADS" "$@"
    else
        exec "$@"
    fi
}
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
# Command prefixes that pin the load and origin, or the proxies, to their CPUs (PIN=1); empty
# otherwise. Prefixes, not functions, so that `exec` and `env` can run them.
ON_LOAD=()
ON_PROXY=()
if [ "$PIN" = 1 ]; then
    command -v taskset >/dev/null 2>&1 || die "PIN=1 needs taskset (util-linux)"
    ON_LOAD=(taskset -c "$LOAD_CPUS")
    ON_PROXY=(taskset -c "$PROXY_CPUS")
fi

# "10s", "2m", "500ms" or a bare number of seconds -> whole seconds (rounded up).
to_seconds() {
    local v=$1
    case $v in
        *ms) echo $(( (${v%ms} + 999) / 1000 )) ;;
        *s) echo "${v%s}" ;;
        *m) echo $(( ${v%m} * 60 )) ;;
        *h) echo $(( ${v%h} * 3600 )) ;;
        *) echo "$v" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -q >&2
        apt_updated=1
    fi
    log "apt-get install $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }

command -v curl >/dev/null 2>&1 || apt_install curl
command -v wrk >/dev/null 2>&1 || apt_install wrk
if [ "$BULK" = 1 ]; then command -v iperf3 >/dev/null 2>&1 || apt_install iperf3; fi
NGINX=$(find_nginx)
if [ -z "$NGINX" ]; then
    apt_install nginx-light || apt_install nginx
    NGINX=$(find_nginx)
    [ -n "$NGINX" ] || die "nginx is still missing after apt-get install"
fi
command -v timeout >/dev/null 2>&1 || die "timeout (coreutils) is missing"
command -v cargo >/dev/null 2>&1 || die "cargo is missing (needed to build limmat and rathole)"

want_leg() { [[ " $LEGS " == *" $1 "* ]]; }

RATHOLE=${RATHOLE:-$(command -v rathole 2>/dev/null || echo "$HOME/.cargo/bin/rathole")}
if want_leg rathole && [ ! -x "$RATHOLE" ]; then
    # --locked does not build with this toolchain; the plain install does.
    log "cargo install rathole"
    cargo install rathole >&2
    RATHOLE=$(command -v rathole 2>/dev/null || echo "$HOME/.cargo/bin/rathole")
    [ -x "$RATHOLE" ] || die "rathole is still missing after cargo install"
fi

LIMMAT=${LIMMAT:-$ROOT/target/release/limmat}
OPENLOOP=$ROOT/target/release/examples/openloop
H2FLOOR=$ROOT/target/release/examples/h2_floor
want_limmat() { want_leg ptth || want_leg mux; }
if want_limmat || [ "$LATENCY" = 1 ]; then
    if [ "$SKIP_BUILD" != 1 ]; then
        log "cargo build --release (limmat and the openloop example)"
        (cd "$ROOT" && cargo build --release >&2 && cargo build --release -p limmat --example openloop >&2)
    fi
    [ -x "$LIMMAT" ] || die "$LIMMAT is missing"
fi
if want_leg h2floor; then
    if [ "$SKIP_BUILD" != 1 ]; then
        log "cargo build --release -p limmat-mux --example h2_floor"
        (cd "$ROOT" && cargo build --release -p limmat-mux --example h2_floor >&2)
    fi
    [ -x "$H2FLOOR" ] || die "$H2FLOOR is missing (cargo build --release -p limmat-mux --example h2_floor)"
fi
have_tunnel=0
if want_limmat && "$LIMMAT" tunnel server --help 2>/dev/null | grep -q -- --transport; then have_tunnel=1; fi
if want_limmat && [ "$have_tunnel" = 0 ]; then
    log "warning: '$LIMMAT tunnel server --transport' does not exist; the limmat rows are skipped"
fi

# More descriptors for 2 x CONNECTIONS sockets per hop; the children inherit the limit.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || (( hard > 65536 )); then hard=65536; fi
ulimit -n "$hard" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------
# Processes and clean-up
# ---------------------------------------------------------------------------------------------
TMPD=$(mktemp -d -t limmat-bench.XXXXXX)
chmod 755 "$TMPD"
PIDS=()
NAMES=()

cleanup() {
    local rc=$? i pid deadline
    trap - EXIT INT TERM
    for (( i = ${#PIDS[@]} - 1; i >= 0; i-- )); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    done
    deadline=$(( SECONDS + 5 ))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP_TMP" = 1 ]; then
        log "kept $TMPD"
    else
        rm -rf "$TMPD"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND... : run in the background, output to $TMPD/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$TMPD/$name.log" 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}

# pid_of NAME: the PID of a process started with `start NAME …`.
pid_of() {
    local i
    for i in "${!NAMES[@]}"; do
        if [ "${NAMES[$i]}" = "$1" ]; then echo "${PIDS[$i]}"; return 0; fi
    done
}

# cpu_ticks NAME...: "TOTAL SYS", utime + stime and stime alone (clock ticks) of those
# processes, summed. The fields after the command name's closing parenthesis, so that a name
# with spaces cannot shift them.
cpu_ticks() {
    local name pid total=0 sys=0 u s
    for name in "$@"; do
        pid=$(pid_of "$name")
        [ -n "$pid" ] || continue
        read -r u s < <(awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0 0)
        total=$(( total + u + s )) sys=$(( sys + s ))
    done
    echo "$total $sys"
}

# proxies_of TARGET: the processes whose CPU a cell of TARGET costs.
proxies_of() {
    case $1 in
        ptth) echo limmat-relay limmat-tunnel-ptth ;;
        mux) echo limmat-relay limmat-tunnel-mux ;;
        rathole) echo rathole-server rathole-client ;;
        floor) echo floor ;;
        floor2) echo floor2-a floor2-b ;;
        h2floor) echo h2floor-relay h2floor-agent ;;
    esac
}

alive_or_die() {
    local i
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            tail -n 20 "$TMPD/${NAMES[$i]}.log" >&2 || true
            die "${NAMES[$i]} exited early (log above)"
        fi
    done
}

# wait_200 URL WHAT SECONDS: poll with curl until URL answers 200 with the origin's body.
wait_200() {
    local url=$1 what=$2 deadline=$(( SECONDS + $3 )) body
    while (( SECONDS < deadline )); do
        alive_or_die
        body=$(curl -s --max-time 2 -w ' %{http_code}' "$url" 2>/dev/null || true)
        if [ "$body" = "hello, limmat 200" ]; then
            log "$what answers 200 at $url"
            return 0
        fi
        sleep 0.2
    done
    die "$what did not answer 200 at $url within $3 s (last: '${body:-nothing}')"
}

# wait_port PORT WHAT SECONDS: until a server listens on the port.
wait_port() {
    local deadline=$(( SECONDS + $3 ))
    while (( SECONDS < deadline )); do
        alive_or_die
        port_in_use "$1" 0A && return 0
        sleep 0.1
    done
    die "$2 is not listening on 127.0.0.1:$1 after $3 s"
}

# port_in_use PORT [STATE]: some socket has that local port (in that state; 0A = listening).
# Reads /proc/net/tcp rather than connecting, so that no server logs a probe as a bad peer.
port_in_use() {
    awk -v p="$(printf ':%04X' "$1")" -v st="${2:-}" \
        'NR > 1 && substr($2, length($2) - 4) == p && (st == "" || $4 == st) { found = 1 }
         END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# pick_port VAR: a free TCP port on 127.0.0.1, below the ephemeral range so that wrk's and the
# relays' own outgoing connections cannot take it, and not one already picked.
CHOSEN=" "
pick_port() {
    local p tries=0
    while (( tries++ < 200 )); do
        p=$(( 20000 + RANDOM % 12000 ))
        [[ $CHOSEN == *" $p "* ]] && continue
        port_in_use "$p" && continue
        CHOSEN+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port found"
}
pick_port ORIGIN_PORT
pick_port RELAY_PORT
pick_port RATHOLE_CTRL_PORT
pick_port RATHOLE_PORT
pick_port IPERF_PORT
pick_port RATHOLE_IPERF_PORT
pick_port CLIENT_PTTH_PORT
pick_port CLIENT_MUX_PORT
pick_port FLOOR_PORT
pick_port FLOOR2_PORT
pick_port FLOOR2_MID_PORT
pick_port FLOOR_IPERF_PORT
pick_port FLOOR2_IPERF_PORT
pick_port FLOOR2_IPERF_MID_PORT
pick_port FLOOR3_IPERF_PORT
pick_port FLOOR3_IPERF_MID1_PORT
pick_port FLOOR3_IPERF_MID2_PORT
pick_port H2FLOOR_PORT
pick_port H2FLOOR_AGENT_PORT
pick_port H2FLOOR_IPERF_PORT
pick_port H2FLOOR_IPERF_RELAY_PORT
pick_port H2FLOOR_IPERF_AGENT_PORT

# ---------------------------------------------------------------------------------------------
# Origin, limmat, rathole
# ---------------------------------------------------------------------------------------------
sed -e "s|@DIR@|$TMPD|g" -e "s|@PORT@|$ORIGIN_PORT|g" "$BENCH_DIR/nginx.conf.in" >"$TMPD/nginx.conf"
# -e: the error log before the config is read (else nginx tries /var/log/nginx/error.log).
start nginx "${ON_LOAD[@]}" "$NGINX" -p "$TMPD" -c "$TMPD/nginx.conf" -e "$TMPD/nginx-error.log"
DIRECT_URL=http://127.0.0.1:$ORIGIN_PORT/bench/
wait_200 "$DIRECT_URL" "nginx" 15

PTTH_URL=http://127.0.0.1:$RELAY_PORT/$DOMAIN/
MUX_URL=http://127.0.0.1:$RELAY_PORT/$MUX_DOMAIN/
if want_limmat && [ "$have_tunnel" = 1 ]; then
    start limmat-relay limmat_env "${ON_PROXY[@]}" "$LIMMAT" relay --listen "127.0.0.1:$RELAY_PORT" \
        --max-per-domain "$MAX_PER_DOMAIN" --drain-timeout 1s ${RELAY_EXTRA[@]+"${RELAY_EXTRA[@]}"}
    wait_port "$RELAY_PORT" "limmat relay" 15
    if want_leg ptth; then
        start limmat-tunnel-ptth limmat_env "${ON_PROXY[@]}" "$LIMMAT" tunnel server "127.0.0.1:$ORIGIN_PORT" \
            "127.0.0.1:$RELAY_PORT" "$DOMAIN" --transport ptth \
            --min-listeners "$MIN_LISTENERS" --max-sockets "$MAX_SOCKETS" ${TUNNEL_EXTRA[@]+"${TUNNEL_EXTRA[@]}"}
        wait_200 "$PTTH_URL" "limmat relay + tunnel (ptth)" 30
    fi
    if want_leg mux; then
        start limmat-tunnel-mux limmat_env "${ON_PROXY[@]}" "$LIMMAT" tunnel server "127.0.0.1:$ORIGIN_PORT" \
            "127.0.0.1:$RELAY_PORT" "$MUX_DOMAIN" --transport mux --max-sockets "$MAX_SOCKETS" ${TUNNEL_EXTRA[@]+"${TUNNEL_EXTRA[@]}"}
        wait_200 "$MUX_URL" "limmat relay + tunnel (mux)" 30
    fi
fi

RATHOLE_URL=http://127.0.0.1:$RATHOLE_PORT/bench/
if want_leg rathole; then
    token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    cat >"$TMPD/rathole-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$RATHOLE_CTRL_PORT"

[server.transport]
type = "tcp"

[server.services.$DOMAIN]
token = "$token"
bind_addr = "127.0.0.1:$RATHOLE_PORT"

[server.services.iperf]
token = "$token"
bind_addr = "127.0.0.1:$RATHOLE_IPERF_PORT"
EOF
    cat >"$TMPD/rathole-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$RATHOLE_CTRL_PORT"

[client.transport]
type = "tcp"

[client.services.$DOMAIN]
token = "$token"
local_addr = "127.0.0.1:$ORIGIN_PORT"

[client.services.iperf]
token = "$token"
local_addr = "127.0.0.1:$IPERF_PORT"
EOF
    start rathole-server "${ON_PROXY[@]}" "$RATHOLE" --server "$TMPD/rathole-server.toml"
    wait_port "$RATHOLE_CTRL_PORT" "rathole server" 15
    start rathole-client "${ON_PROXY[@]}" "$RATHOLE" --client "$TMPD/rathole-client.toml"
    wait_200 "$RATHOLE_URL" "rathole" 30
fi

FLOOR=$TMPD/floor
FLOOR_URL=http://127.0.0.1:$FLOOR_PORT/bench/
FLOOR2_URL=http://127.0.0.1:$FLOOR2_PORT/bench/
if want_leg floor || want_leg floor2 || want_leg h2floor; then
    command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
    cc -O2 -o "$FLOOR" "$BENCH_DIR/floor.c" || die "cc could not build bench/floor.c"
fi
if want_leg floor; then
    start floor "${ON_PROXY[@]}" "$FLOOR" "$FLOOR_PORT" "$ORIGIN_PORT"
    wait_200 "$FLOOR_URL" "floor" 15
fi
if want_leg floor2; then
    start floor2-b "${ON_PROXY[@]}" "$FLOOR" "$FLOOR2_MID_PORT" "$ORIGIN_PORT"
    start floor2-a "${ON_PROXY[@]}" "$FLOOR" "$FLOOR2_PORT" "$FLOOR2_MID_PORT"
    wait_200 "$FLOOR2_URL" "floor2" 15
fi
H2FLOOR_URL=http://127.0.0.1:$H2FLOOR_PORT/bench/
if want_leg h2floor; then
    start h2floor-relay "${ON_PROXY[@]}" "$H2FLOOR" relay "127.0.0.1:$H2FLOOR_PORT" "127.0.0.1:$H2FLOOR_AGENT_PORT"
    wait_port "$H2FLOOR_AGENT_PORT" "h2floor relay" 15
    start h2floor-agent "${ON_PROXY[@]}" "$H2FLOOR" agent "127.0.0.1:$H2FLOOR_AGENT_PORT" "127.0.0.1:$ORIGIN_PORT"
    wait_200 "$H2FLOOR_URL" "h2floor" 15
fi

# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------
wrk_version=$(wrk -v 2>&1 | head -n 1 | awk '{print $2}' || true)
rathole_version=$("$RATHOLE" --version 2>/dev/null | awk '/Build Version/ {print $3}' || true)
limmat_version=$("$LIMMAT" --version 2>/dev/null || true)
log "wrk $wrk_version: -t$THREADS -c$CONNECTIONS -d$DURATION --latency --timeout $WRK_TIMEOUT," \
    "warm-up $WARMUP, rest ${SETTLE}s"

dur_s=$(to_seconds "$DURATION")
warm_s=$(to_seconds "$WARMUP")

# wrk_cmd DURATION MODE URL OUT
wrk_cmd() {
    local d=$1 mode=$2 url=$3 out=$4 limit
    local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$d" --latency --timeout "$WRK_TIMEOUT")
    if [ "$mode" = close ]; then args+=(-H 'Connection: close'); fi
    if [ "$STATUS_CODES" = 1 ]; then args+=(-s "$BENCH_DIR/status.lua"); fi
    limit=$(( $(to_seconds "$d") + $(to_seconds "$WRK_TIMEOUT") + 30 ))
    "${ON_LOAD[@]}" timeout -k 5 "$limit" wrk "${args[@]}" "$url" >"$out" 2>&1
}

# wrk's latency with its unit (us, ms, s, m) -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v == "") { print "-"; exit }
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : 1
        printf "%.2f", n * f
    }'
}

declare -A RPS P50 P99 REQS NON2XX ERRS CODES SPREAD CPUK SYSK
MODES=(keepalive close)
mode_label() { if [ "$1" = keepalive ]; then echo keep-alive; else echo "conn-close"; fi; }

# median / spread: of the numbers on stdin, one per line; spread = (max - min) / 2 over the
# median, as a percentage ("-" for fewer than two).
median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
spread() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR < 2) { print "-"; exit }
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        if (m > 0) printf "±%.0f%%", (a[NR] - a[1]) / 2 / m * 100; else print "-" }'
}

# run_cell TARGET MODE URL ROUND: one wrk run, its results under "TARGET/MODE/ROUND".
declare -A R_RPS R_P50 R_P99 R_REQS R_NON2XX R_ERRS R_CODES R_CPU R_SYS
run_cell() {
    local target=$1 mode=$2 url=$3 key="$1/$2/$4" out="$TMPD/wrk-$1-$2-$4.txt" line t0 s0 t1 s1
    local -a procs
    read -r -a procs <<<"$(proxies_of "$target")"
    sleep "$SETTLE"
    alive_or_die
    if (( warm_s > 0 )); then
        wrk_cmd "$WARMUP" "$mode" "$url" "$TMPD/wrk-$target-$mode-warmup.txt" || true
    fi
    # TIME_WAIT sockets left by earlier Connection: close cells can slow later ones.
    log "round $4: measuring $target $(mode_label "$mode") for $DURATION: $url" \
        "($(awk '/^TCP:/ { for (i = 2; i < NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat) TCP sockets in TIME_WAIT)"
    read -r t0 s0 < <(cpu_ticks "${procs[@]}")
    if ! wrk_cmd "$DURATION" "$mode" "$url" "$out"; then
        log "wrk failed for $target $mode:"
        cat "$out" >&2 || true
    fi
    read -r t1 s1 < <(cpu_ticks "${procs[@]}")
    R_CPU[$key]=$(( t1 - t0 )) R_SYS[$key]=$(( s1 - s0 ))
    R_RPS[$key]=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    R_P50[$key]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    R_P99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    R_REQS[$key]=$(awk '/ requests in / {print $1}' "$out")
    R_NON2XX[$key]=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    line=$(grep 'Socket errors:' "$out" || true)
    if [ -n "$line" ]; then
        # "Socket errors: connect 0, read 12, write 0, timeout 0" -> "0 12 0 0"
        R_ERRS[$key]=$(echo "$line" | sed -E 's/.*connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+).*/\1 \2 \3 \4/')
    else
        R_ERRS[$key]="0 0 0 0"
    fi
    R_CODES[$key]=$(sed -n 's/^Status codes: //p' "$out")
    : "${R_RPS[$key]:=0}" "${R_NON2XX[$key]:=0}" "${R_REQS[$key]:=0}"
}

# per_1k TICKS REQUESTS: CPU milliseconds per 1,000 requests.
per_1k() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.3f", t / hz * 1000 / (n / 1000) }'; }

# summarise TARGET MODE: the rounds' medians (req/s, p50, p99, CPU per 1,000 requests), the
# spread of req/s, and the sums of requests, non-2xx and errors, under "TARGET/MODE".
summarise() {
    local key="$1/$2" r k
    local -a rps=() p50=() p99=() cpu=() sys=()
    local reqs=0 non=0 e1=0 e2=0 e3=0 e4=0 a b c d
    for (( r = 1; r <= REPEAT; r++ )); do
        k=$key/$r
        [ -n "${R_RPS[$k]+x}" ] || continue
        rps+=("${R_RPS[$k]}") p50+=("${R_P50[$k]}") p99+=("${R_P99[$k]}")
        reqs=$(( reqs + R_REQS[$k] )) non=$(( non + R_NON2XX[$k] ))
        read -r a b c d <<<"${R_ERRS[$k]}"
        e1=$(( e1 + a )) e2=$(( e2 + b )) e3=$(( e3 + c )) e4=$(( e4 + d ))
        if [ -n "$(proxies_of "$1")" ] && (( R_REQS[$k] > 0 )); then
            cpu+=("$(per_1k "${R_CPU[$k]}" "${R_REQS[$k]}")")
            sys+=("$(per_1k "${R_SYS[$k]}" "${R_REQS[$k]}")")
        fi
        CODES[$key]+="${CODES[$key]:+; }${R_CODES[$k]}"
    done
    (( ${#rps[@]} > 0 )) || return 0
    RPS[$key]=$(printf '%s\n' "${rps[@]}" | median)
    SPREAD[$key]=$(printf '%s\n' "${rps[@]}" | spread)
    P50[$key]=$(printf '%s\n' "${p50[@]}" | grep -v '^-$' | median)
    P99[$key]=$(printf '%s\n' "${p99[@]}" | grep -v '^-$' | median)
    if (( ${#cpu[@]} > 0 )); then
        CPUK[$key]=$(printf '%s\n' "${cpu[@]}" | median | awk '{ printf "%.1f", $1 }')
        SYSK[$key]=$(printf '%s\n' "${sys[@]}" | median | awk '{ printf "%.1f", $1 }')
    else
        CPUK[$key]=- SYSK[$key]=-
    fi
    REQS[$key]=$reqs NON2XX[$key]=$non ERRS[$key]=$e1/$e2/$e3/$e4
}

url_of() {
    case $1 in
        direct) echo "$DIRECT_URL" ;;
        ptth) echo "$PTTH_URL" ;;
        mux) echo "$MUX_URL" ;;
        rathole) echo "$RATHOLE_URL" ;;
        floor) echo "$FLOOR_URL" ;;
        floor2) echo "$FLOOR2_URL" ;;
        h2floor) echo "$H2FLOOR_URL" ;;
    esac
}

for target in $LEGS; do
    case $target in
        direct | ptth | mux | rathole | floor | floor2 | h2floor) ;;
        *) die "unknown leg '$target' in LEGS" ;;
    esac
done
# Interleaved: every target once per mode and round, so that a noisy minute hits all of them.
for (( round = 1; round <= REPEAT; round++ )); do
    for mode in "${MODES[@]}"; do
        for target in $LEGS; do
            if [[ $target == ptth || $target == mux ]] && [ "$have_tunnel" != 1 ]; then continue; fi
            run_cell "$target" "$mode" "$(url_of "$target")" "$round"
        done
    done
done
for target in $LEGS; do
    for mode in "${MODES[@]}"; do summarise "$target" "$mode"; done
done

# ---------------------------------------------------------------------------------------------
# Bulk (iperf3) and open-loop latency
# ---------------------------------------------------------------------------------------------
declare -A BULK_GBPS BULK_RETR LAT
if [ "$BULK" = 1 ]; then
    start iperf3-server "${ON_LOAD[@]}" iperf3 -s -p "$IPERF_PORT"
    wait_port "$IPERF_PORT" "iperf3 server" 15
    if want_limmat && [ "$have_tunnel" = 1 ]; then
        for t in ptth mux; do
            want_leg "$t" || continue
            port_var=CLIENT_${t^^}_PORT
            start "bulk-device-$t" limmat_env "${ON_PROXY[@]}" "$LIMMAT" tunnel proxy "127.0.0.1:$IPERF_PORT" \
                "127.0.0.1:$RELAY_PORT" "bulk$t" --transport "$t" --min-listeners 4 ${TUNNEL_EXTRA[@]+"${TUNNEL_EXTRA[@]}"}
            start "bulk-client-$t" limmat_env "${ON_PROXY[@]}" "$LIMMAT" tunnel client "127.0.0.1:${!port_var}" \
                "127.0.0.1:$RELAY_PORT" "bulk$t" ${TUNNEL_EXTRA[@]+"${TUNNEL_EXTRA[@]}"}
            wait_port "${!port_var}" "limmat tunnel client ($t)" 15
        done
        sleep 1
    fi
    if want_leg floor; then
        start bulk-floor "${ON_PROXY[@]}" "$FLOOR" "$FLOOR_IPERF_PORT" "$IPERF_PORT" splice
        wait_port "$FLOOR_IPERF_PORT" "floor (bulk)" 15
    fi
    if want_leg floor2; then
        start bulk-floor2-b "${ON_PROXY[@]}" "$FLOOR" "$FLOOR2_IPERF_MID_PORT" "$IPERF_PORT" splice
        start bulk-floor2-a "${ON_PROXY[@]}" "$FLOOR" "$FLOOR2_IPERF_PORT" "$FLOOR2_IPERF_MID_PORT" splice
        wait_port "$FLOOR2_IPERF_PORT" "floor2 (bulk)" 15
        start bulk-floor3-c "${ON_PROXY[@]}" "$FLOOR" "$FLOOR3_IPERF_MID2_PORT" "$IPERF_PORT" splice
        start bulk-floor3-b "${ON_PROXY[@]}" "$FLOOR" "$FLOOR3_IPERF_MID1_PORT" "$FLOOR3_IPERF_MID2_PORT" splice
        start bulk-floor3-a "${ON_PROXY[@]}" "$FLOOR" "$FLOOR3_IPERF_PORT" "$FLOOR3_IPERF_MID1_PORT" splice
        wait_port "$FLOOR3_IPERF_PORT" "floor3 (bulk)" 15
    fi
    if want_leg h2floor; then
        start bulk-h2floor-relay "${ON_PROXY[@]}" "$H2FLOOR" relay "127.0.0.1:$H2FLOOR_IPERF_RELAY_PORT" "127.0.0.1:$H2FLOOR_IPERF_AGENT_PORT"
        wait_port "$H2FLOOR_IPERF_AGENT_PORT" "h2floor relay (bulk)" 15
        start bulk-h2floor-agent "${ON_PROXY[@]}" "$H2FLOOR" agent "127.0.0.1:$H2FLOOR_IPERF_AGENT_PORT" "127.0.0.1:$IPERF_PORT"
        wait_port "$H2FLOOR_IPERF_RELAY_PORT" "h2floor relay (bulk)" 15
        start bulk-h2floor-front "${ON_PROXY[@]}" "$FLOOR" "$H2FLOOR_IPERF_PORT" "$H2FLOOR_IPERF_RELAY_PORT" splice
        wait_port "$H2FLOOR_IPERF_PORT" "h2floor front floor (bulk)" 15
    fi
    # bulk_cell TARGET PORT ROUND: one iperf3 run; Gbit/s, retransmits and the proxies' CPU
    # seconds per GiB received under "TARGET/ROUND".
    declare -A R_GBPS R_RETR R_BCPU R_BSYS BULK_SPREAD BULK_CPU BULK_SYS
    bulk_cell() {
        local out="$TMPD/iperf-$1-$3.json" key="$1/$3" t0 s0 t1 s1
        local -a procs
        case $1 in
            ptth | mux) procs=(limmat-relay "bulk-device-$1" "bulk-client-$1") ;;
            rathole) procs=(rathole-server rathole-client) ;;
            floor) procs=(bulk-floor) ;;
            floor2) procs=(bulk-floor2-a bulk-floor2-b) ;;
            floor3) procs=(bulk-floor3-a bulk-floor3-b bulk-floor3-c) ;;
            h2floor) procs=(bulk-h2floor-front bulk-h2floor-relay bulk-h2floor-agent) ;;
            *) procs=() ;;
        esac
        sleep "$SETTLE"
        alive_or_die
        log "round $3: iperf3 through $1 for ${BULK_SECONDS}s"
        read -r t0 s0 < <(cpu_ticks "${procs[@]}")
        if "${ON_LOAD[@]}" timeout -k 5 $(( BULK_SECONDS + 30 )) iperf3 -c 127.0.0.1 -p "$2" -t "$BULK_SECONDS" -J >"$out" 2>&1; then
            read -r t1 s1 < <(cpu_ticks "${procs[@]}")
            read -r R_GBPS[$key] R_RETR[$key] R_BCPU[$key] R_BSYS[$key] < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
got = d["end"]["sum_received"]
gib = got["bytes"] / 2**30
hz, have = int(sys.argv[4]), sys.argv[5] == "1" and gib > 0
cpu = "%.3f" % (int(sys.argv[2]) / hz / gib) if have else "-"
sys_ = "%.3f" % (int(sys.argv[3]) / hz / gib) if have else "-"
print("%.2f" % (got["bits_per_second"] / 1e9), d["end"]["sum_sent"].get("retransmits", "-"), cpu, sys_)
' "$out" "$(( t1 - t0 ))" "$(( s1 - s0 ))" "$CLK_TCK" "$(( ${#procs[@]} > 0 ))" 2>/dev/null || echo "0 - - -")
        else
            log "iperf3 failed through $1: $(tail -c 300 "$out")"
            R_GBPS[$key]=0 R_RETR[$key]=- R_BCPU[$key]=- R_BSYS[$key]=-
        fi
    }
    for (( round = 1; round <= REPEAT; round++ )); do
        for target in $LEGS; do
            case $target in
                direct) bulk_cell direct "$IPERF_PORT" "$round" ;;
                ptth) [ "$have_tunnel" = 1 ] && bulk_cell ptth "$CLIENT_PTTH_PORT" "$round" ;;
                mux) [ "$have_tunnel" = 1 ] && bulk_cell mux "$CLIENT_MUX_PORT" "$round" ;;
                rathole) bulk_cell rathole "$RATHOLE_IPERF_PORT" "$round" ;;
                floor) bulk_cell floor "$FLOOR_IPERF_PORT" "$round" ;;
                floor2)
                    bulk_cell floor2 "$FLOOR2_IPERF_PORT" "$round"
                    bulk_cell floor3 "$FLOOR3_IPERF_PORT" "$round"
                    ;;
                h2floor) bulk_cell h2floor "$H2FLOOR_IPERF_PORT" "$round" ;;
            esac
        done
    done
    for target in $LEGS $(want_leg floor2 && echo floor3); do
        gbps=() cpus=() syss=() retr=()
        for (( round = 1; round <= REPEAT; round++ )); do
            [ -n "${R_GBPS[$target/$round]+x}" ] || continue
            gbps+=("${R_GBPS[$target/$round]}") retr+=("${R_RETR[$target/$round]}")
            [ "${R_BCPU[$target/$round]}" != - ] && cpus+=("${R_BCPU[$target/$round]}")
            [ "${R_BSYS[$target/$round]}" != - ] && syss+=("${R_BSYS[$target/$round]}")
        done
        (( ${#gbps[@]} > 0 )) || continue
        BULK_GBPS[$target]=$(printf '%s\n' "${gbps[@]}" | median | awk '{ printf "%.2f", $1 }')
        BULK_SPREAD[$target]=$(printf '%s\n' "${gbps[@]}" | spread)
        BULK_RETR[$target]=$(IFS=/; echo "${retr[*]}")
        if (( ${#cpus[@]} > 0 )); then
            BULK_CPU[$target]=$(printf '%s\n' "${cpus[@]}" | median | awk '{ printf "%.2f", $1 }')
            BULK_SYS[$target]=$(printf '%s\n' "${syss[@]}" | median | awk '{ printf "%.2f", $1 }')
        else
            BULK_CPU[$target]=- BULK_SYS[$target]=-
        fi
    done
fi

if [ "$LATENCY" = 1 ]; then
    [ -x "$OPENLOOP" ] || die "$OPENLOOP is missing (cargo build --release -p limmat --example openloop)"
    for target in $LEGS; do
        if [[ $target == ptth || $target == mux ]] && [ "$have_tunnel" != 1 ]; then continue; fi
        url=$(url_of "$target")
        hostport=${url#http://}; path=/${hostport#*/}; hostport=${hostport%%/*}
        sleep "$SETTLE"
        alive_or_die
        log "open loop through $target: $RATE req/s for ${RATE_SECONDS}s over $RATE_CONNECTIONS connections"
        LAT[$target]=$("${ON_LOAD[@]}" timeout -k 5 $(( RATE_SECONDS + 60 )) "$OPENLOOP" "$hostport" "$path" \
            "$RATE" "$RATE_SECONDS" "$RATE_CONNECTIONS" 2>&1 | tail -n 1)
    done
fi

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
echo
echo "HTTP through limmat vs rathole vs direct — $(date -u '+%Y-%m-%d %H:%M:%SZ'), $(nproc) cores, $(uname -r)"
echo "load:    wrk $wrk_version -t$THREADS -c$CONNECTIONS -d$DURATION --latency --timeout $WRK_TIMEOUT" \
    "(warm-up $WARMUP, ${SETTLE}s rest before each cell)"
echo "origin:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), worker_processes 1, 13-byte body, 127.0.0.1:$ORIGIN_PORT"
if want_limmat; then
    echo "limmat:  ${limmat_version:-?}; relay --max-per-domain $MAX_PER_DOMAIN (other settings default);" \
        "ptth: tunnel server --transport ptth --min-listeners $MIN_LISTENERS --max-sockets $MAX_SOCKETS, URL $PTTH_URL;" \
        "mux: tunnel server --transport mux --max-sockets $MAX_SOCKETS, URL $MUX_URL"
fi
if want_leg rathole; then
    echo "rathole: ${rathole_version:-?}, transport tcp (defaults), URL $RATHOLE_URL"
fi
echo "limmat tokio worker threads: ${WORKER_THREADS:-as the runtime settings say}; relay flags:" \
    "${RELAY_ARGS:-(defaults)}; tunnel flags: ${TUNNEL_ARGS:-(defaults)}."
if [ "$PIN" = 1 ]; then
    echo "pinned: load and origin (wrk, iperf3, openloop, nginx) on CPUs $LOAD_CPUS, proxies on CPUs $PROXY_CPUS (taskset)."
else
    echo "not pinned: every process may run on any of the $(nproc) cores."
fi
echo "$REPEAT rounds, cells interleaved; medians, spread = (max - min) / 2 of req/s over the median;" \
    "requests, non-2xx and errors summed over the rounds."
echo "CPU ms/1k = utime + stime of the proxies (limmat: relay + that tunnel; rathole: server + client;" \
    "floor: its one or two processes; h2floor: its relay + agent) per 1,000 requests; 'CPU vs rathole' = that / rathole's in the" \
    "same mode (lower is cheaper); sys ms/1k = the stime part of it (the kernel's work for the proxies)."
echo "RUST_LOG=warn for limmat and rathole. 'vs rathole' = req/s / rathole req/s in the same mode."
echo "errors = wrk socket errors connect/read/write/timeout; non-2xx counts non-2xx/3xx responses."
echo
fmt='%-8s %-11s %10s %7s %10s %9s %9s %10s %8s %-14s %9s %9s %9s\n'
# shellcheck disable=SC2059
printf "$fmt" target mode req/s spread "vs rathole" "p50 ms" "p99 ms" requests non-2xx errors "CPU ms/1k" "CPU vs rh" "sys ms/1k"
# shellcheck disable=SC2059
printf "$fmt" -------- ----------- ---------- ------- ---------- --------- --------- ---------- -------- -------------- --------- --------- ---------
for target in direct floor floor2 h2floor ptth mux rathole; do
    want_leg "$target" || continue
    for mode in "${MODES[@]}"; do
        key=$target/$mode
        if [ -z "${RPS[$key]+x}" ]; then
            # shellcheck disable=SC2059
            printf "$fmt" "$target" "$(mode_label "$mode")" skipped - - - - - - "(no limmat tunnel)" - - -
            continue
        fi
        ratio=-
        if [ -n "${RPS[rathole/$mode]+x}" ]; then
            ratio=$(awk -v a="${RPS[$key]}" -v b="${RPS[rathole/$mode]}" \
                'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
        fi
        cpu_ratio=-
        if [ -n "${CPUK[rathole/$mode]+x}" ]; then
            cpu_ratio=$(awk -v a="${CPUK[$key]}" -v b="${CPUK[rathole/$mode]}" \
                'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2fx", a / b; else print "-" }')
        fi
        # shellcheck disable=SC2059
        printf "$fmt" "$target" "$(mode_label "$mode")" \
            "$(awk -v r="${RPS[$key]}" 'BEGIN { printf "%.0f", r }')" "${SPREAD[$key]}" "$ratio" \
            "${P50[$key]}" "${P99[$key]}" "${REQS[$key]}" "${NON2XX[$key]}" "${ERRS[$key]}" \
            "${CPUK[$key]}" "$cpu_ratio" "${SYSK[$key]:--}"
    done
done

if [ "$BULK" = 1 ]; then
    echo
    echo "TCP bulk, iperf3 -t $BULK_SECONDS, one stream client -> server (limmat: iperf3 -> tunnel client -> relay -> tunnel proxy -> iperf3)"
    echo "(medians of $REPEAT rounds; CPU s/GiB = utime + stime of the proxies per GiB received: limmat relay + tunnel proxy + tunnel client, rathole server + client, floors their one to three splicing processes, h2floor a splicing floor + its relay + agent; sys s/GiB = the stime part)"
    bfmt='%-8s %10s %7s %10s %12s %10s %10s %10s\n'
    # shellcheck disable=SC2059
    printf "$bfmt" target Gbit/s spread "vs rathole" retransmits "CPU s/GiB" "CPU vs rh" "sys s/GiB"
    for target in direct floor floor2 floor3 h2floor ptth mux rathole; do
        [ -n "${BULK_GBPS[$target]+x}" ] || continue
        ratio=$(awk -v a="${BULK_GBPS[$target]}" -v b="${BULK_GBPS[rathole]:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
        cpu_ratio=$(awk -v a="${BULK_CPU[$target]}" -v b="${BULK_CPU[rathole]:--}" \
            'BEGIN { if (a != "-" && b != "-" && b > 0) printf "%.2fx", a / b; else print "-" }')
        # shellcheck disable=SC2059
        printf "$bfmt" "$target" "${BULK_GBPS[$target]}" "${BULK_SPREAD[$target]}" "$ratio" \
            "${BULK_RETR[$target]}" "${BULK_CPU[$target]}" "$cpu_ratio" "${BULK_SYS[$target]:--}"
    done
fi

if [ "$LATENCY" = 1 ]; then
    echo
    echo "open loop: $RATE req/s for ${RATE_SECONDS}s over $RATE_CONNECTIONS keep-alive connections (latency from when each request was due)"
    lfmt='%-8s %9s %7s %9s %9s %10s %9s %18s\n'
    # shellcheck disable=SC2059
    printf "$lfmt" target requests errors "p50 ms" "p99 ms" "p99.9 ms" "max ms" "p99 added vs direct"
    field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
    direct_p99=$(field p99_ms "${LAT[direct]:-}")
    for target in direct floor floor2 h2floor ptth mux rathole; do
        [ -n "${LAT[$target]+x}" ] || continue
        l=${LAT[$target]}
        p99=$(field p99_ms "$l")
        added=$(awk -v a="$p99" -v b="$direct_p99" 'BEGIN { if (a != "" && b != "") printf "%+.3f ms", a - b; else print "-" }')
        # shellcheck disable=SC2059
        printf "$lfmt" "$target" "$(field requests "$l")" "$(field errors "$l")" "$(field p50_ms "$l")" \
            "$p99" "$(field p999_ms "$l")" "$(field max_ms "$l")" "$added"
    done
fi

if [ "$STATUS_CODES" = 1 ]; then
    echo
    echo "status codes per cell:"
    for key in "${!CODES[@]}"; do printf '  %-18s %s\n' "$key" "${CODES[$key]:-?}"; done | sort
fi

# Anything the servers logged at warn or above during the run, briefly.
first=1
for name in "${NAMES[@]}"; do
    f=$TMPD/$name.log
    [ "$name" = nginx ] && f=$TMPD/nginx-error.log
    if [ -s "$f" ]; then
        if [ "$first" = 1 ]; then echo; echo "server logs (warn and above; first lines):"; first=0; fi
        echo "  $name: $(wc -l <"$f") lines"
        head -n 5 "$f" | cut -c1-200 | sed 's/^/    /'
    fi
done
