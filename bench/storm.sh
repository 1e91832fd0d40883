#!/usr/bin/env bash
# bench/storm.sh — the reconnect storm (issue 13 item 6): PTTH devices (PTTH_PROCS processes
# of the `storm` example, each to its own 127.0.0.x address of the relay's 0.0.0.0 listener, so
# each process has its own port space) and MUX devices (one process) connect to one relay;
# once all are online the relay is killed (SIGKILL, a crash) and started again on the same
# port. The table shows the time from the kill until 95 % and 100 % of the devices are back,
# the relay's 429 and 401 answers and limit refusals (its /metrics) after the restart, and the
# restarted relay's CPU (busiest 1 s, and total until 100 %) and peak RSS (VmHWM).
#
# PROFILES runs the same storm against differently configured relays:
#   default   the relay's defaults (loopback is exempt from the per-address limits)
#   nat       every device seen as one address: `--limit-exempt none`, defaults otherwise
#             (max_conns_per_ip 1024, conn_rate_per_ip 500/s:1000) — what a fleet behind one
#             NAT address meets
#   nat-tuned `--limit-exempt none` with what README "A fleet behind one NAT address"
#             recommends: --max-conns-per-ip 16384 --conn-rate-per-ip 5000/s:20000
#
# Run by hand, never in CI (a few minutes):
#     bench/storm.sh
#     PTTH=2000 MUX=200 PROFILES=nat bench/storm.sh
# Settings: PTTH [10000], PTTH_PROCS [4], MUX [1000], PROFILES ["default nat nat-tuned"],
# WAIT [60] seconds for the fleet to come back. Builds the example in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PTTH=${PTTH:-10000}
PTTH_PROCS=${PTTH_PROCS:-4}
MUX=${MUX:-1000}
PROFILES=${PROFILES:-default nat nat-tuned}
WAIT=${WAIT:-60}

log() { printf '[storm] %s\n' "$*" >&2; }
PROFILE_DIR=${PROFILE_DIR:-release}
if [ "$PROFILE_DIR" = release ]; then
    cargo build -q --release -p limmat --bin limmat --example storm >&2
else
    cargo build -q -p limmat --bin limmat --example storm >&2
fi
LIMMAT=target/$PROFILE_DIR/limmat
STORM=target/$PROFILE_DIR/examples/storm
ulimit -n "$(ulimit -Hn)"

TMPD=$(mktemp -d -t limmat-storm.XXXXXX)
PIDS=()
RELAY=
cleanup() {
    for pid in "${PIDS[@]}" $RELAY; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMPD"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# online: the devices online now, summed over the storm processes' last lines.
online() {
    local sum=0 n f
    for f in "$TMPD"/storm-*.out; do
        n=$(tail -n 1 "$f" 2>/dev/null | sed -n 's/.*online=\([0-9]*\).*/\1/p')
        sum=$(( sum + ${n:-0} ))
    done
    echo "$sum"
}

start_relay() { # profile port admin
    local extra=()
    case $1 in
        default) ;;
        nat) extra=(--limit-exempt none) ;;
        nat-tuned) extra=(--limit-exempt none --max-conns-per-ip 16384 --conn-rate-per-ip 5000/s:20000) ;;
        *) log "unknown profile $1"; exit 2 ;;
    esac
    RUST_LOG=warn "$LIMMAT" relay --listen "0.0.0.0:$2" --admin "127.0.0.1:$3" --auth open "${extra[@]}" \
        >>"$TMPD/relay.log" 2>&1 &
    RELAY=$!
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$3/healthz" && return 0
        sleep 0.1
    done
    log "the relay did not start"; tail -5 "$TMPD/relay.log" >&2; exit 1
}

metric() { # admin name result -> value
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" -v r="$3" \
        'index($0, n "{") == 1 && index($0, r) { v += $NF } END { printf "%d", v }'
}

total=$(( PTTH + MUX ))
printf '%-10s %7s %6s %9s %9s %6s %6s %9s %9s %9s %9s\n' profile devices procs "95% back" "100% back" 429s 401s refused "cpu 1s" "cpu total" "rss peak"
for profile in $PROFILES; do
    port=$(free_port) admin=$(free_port)
    rm -f "$TMPD"/storm-*.out
    : >"$TMPD/relay.log"
    start_relay "$profile" "$port" "$admin"
    per=$(( PTTH / PTTH_PROCS ))
    for p in $(seq 1 "$PTTH_PROCS"); do
        n=$per
        [ "$p" -eq "$PTTH_PROCS" ] && n=$(( PTTH - per * (PTTH_PROCS - 1) ))
        "$STORM" "127.0.0.$(( p + 1 )):$port" "$n" ptth "p$p" >"$TMPD/storm-p$p.out" 2>"$TMPD/storm-p$p.err" &
        PIDS+=("$!")
    done
    if [ "$MUX" -gt 0 ]; then
        "$STORM" "127.0.0.$(( PTTH_PROCS + 2 )):$port" "$MUX" mux m >"$TMPD/storm-m.out" 2>"$TMPD/storm-m.err" &
        PIDS+=("$!")
    fi
    end=$(( SECONDS + 120 ))
    while [ "$(online)" -lt "$total" ]; do
        (( SECONDS < end )) || { log "$profile: only $(online)/$total online before the restart"; break; }
        sleep 0.5
    done
    # The crash and the restart.
    kill -9 "$RELAY"; wait "$RELAY" 2>/dev/null || true
    killed_ms=$(date +%s%3N)
    start_relay "$profile" "$port" "$admin"
    clk=$(getconf CLK_TCK)
    cpu_prev=$(awk '{ print $14 + $15 }' "/proc/$RELAY/stat") cpu_first=$cpu_prev busiest=0
    tick_prev=$(date +%s%N)
    end=$(( SECONDS + WAIT ))
    while (( SECONDS < end )); do
        sleep 1
        now=$(date +%s%N)
        cpu=$(awk '{ print $14 + $15 }' "/proc/$RELAY/stat")
        pct=$(awk -v c=$(( cpu - cpu_prev )) -v k="$clk" -v ns=$(( now - tick_prev )) 'BEGIN { printf "%d", 100 * c / k / (ns / 1e9) }')
        (( pct > busiest )) && busiest=$pct
        cpu_prev=$cpu tick_prev=$now
        [ "$(online)" -ge "$total" ] && break
    done
    sleep 0.2
    cpu_total=$(awk -v c=$(( cpu_prev - cpu_first )) -v k="$clk" 'BEGIN { printf "%.2f s", c / k }')
    rss=$(awk '/VmHWM/ { printf "%.0f MB", $2 / 1024 }' "/proc/$RELAY/status")
    r429=$(metric "$admin" limmat_handshakes_total '"429"')
    r401=$(metric "$admin" limmat_handshakes_total '"401"')
    refused=$(metric "$admin" limmat_connections_rejected_total '')
    times=$(python3 - "$killed_ms" "$total" "$TMPD"/storm-*.out <<'PY'
import re, sys
killed, total, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
series = []
for f in files:
    rows = []
    for line in open(f):
        m = re.match(r"t_ms=(\d+) online=(\d+)", line)
        if m:
            rows.append((int(m[1]), int(m[2])))
    series.append(rows)
events = sorted({t for rows in series for t, _ in rows if t >= killed})
def at(rows, t):
    v = 0
    for tt, n in rows:
        if tt > t:
            break
        v = n
    return v
out = {}
dipped = False
for t in events:
    s = sum(at(rows, t) for rows in series)
    if s < total:
        dipped = True
    for goal, name in ((0.95, "95"), (1.0, "100")):
        if dipped and name not in out and s >= goal * total:
            out[name] = t
fmt = lambda k: f"{(out[k] - killed) / 1000:.1f} s" if k in out else "never"
print(fmt("95"), fmt("100"))
PY
)
    read -r t95 u95 t100 u100 <<<"$times"
    printf '%-10s %7s %6s %9s %9s %6s %6s %9s %9s %9s %9s\n' "$profile" "$total" "$(( PTTH_PROCS + (MUX > 0) ))" \
        "$t95 $u95" "$t100 $u100" "$r429" "$r401" "$refused" "$busiest %" "$cpu_total" "$rss"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    kill "$RELAY" 2>/dev/null || true; wait "$RELAY" 2>/dev/null || true; RELAY=
done
