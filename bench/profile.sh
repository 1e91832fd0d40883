#!/usr/bin/env bash
# bench/profile.sh — where a request's CPU goes in the relay and the tunnel (performance
# issue, item 2): flame graphs of `limmat relay` and `limmat tunnel server` under wrk, one per
# process and cell, as SVG under bench/profiles/, the top functions of each as text, and the
# share of its CPU by layer (kernel, allocator, tokio, h2, limmat, …; bench/profile_layers.py).
#
# Cells: ptth and mux, each with `Connection: close` (every request a new TCP connection: the
# cell that matters most to users) and keep-alive; and `h2floor-close` / `h2floor-keepalive`,
# the floor of the mux transport (crates/limmat-mux/examples/h2_floor.rs, H2FLOOR) in place of
# the relay and the tunnel, to set mux's profile against (not in the default CELLS). For each, a fresh nginx origin, relay and
# tunnel on 127.0.0.1, a warm-up, then `perf record -g` (frame pointers are not kept, so DWARF
# unwinding, at PERF_FREQ Hz) on both processes for SECONDS while wrk runs.
#
# Run by hand (root or perf_event_paranoid <= 1), never in CI:
#     bench/profile.sh                      # all four cells, 10 s each
#     CELLS="ptth-close" SECONDS_EACH=20 bench/profile.sh
#     CELLS="mux-close h2floor-close" bench/profile.sh   # mux against its floor
# KEEP_FOLDED=1 also keeps each process's folded stacks (CELL-PROCESS.folded) in OUT.
#
# `rathole-close` / `rathole-keepalive` profile rathole's server and client in the same places,
# for comparison (rathole from PATH or ~/.cargo/bin; not in the default CELLS).
#
# TOOL=callgrind counts instead of sampling: both processes run under valgrind's callgrind, the
# counters are zeroed after the warm-up, and the instructions each process executes in user
# space (Ir) are divided by the requests wrk completed. Unlike CPU time, the count does not
# swing with this shared machine's load (runs agree within about 1 %), so it shows a change of
# a few per cent that a wrk run cannot; it says nothing of the kernel's part (see
# bench/http.sh's sys column). Prints a table of Ir per request (relay, tunnel, both) and
# writes each process's top functions by their own cost to OUT/CELL-PROCESS.callgrind.txt
# (the first entries, `main` and the runtime's entry points, also carry the cost of the frames
# that were already running when the counters were zeroed).
#     TOOL=callgrind CELLS="mux-close h2floor-close rathole-close" SECONDS_EACH=5 bench/profile.sh
# Needs valgrind (installed when missing). Processes run about 30 times slower under it, so
# wrk makes a few thousand requests per cell.
#
# TOOL=segments counts what the kernel's side costs in packets: the TCP segments sent on the
# host (OutSegs of /proc/net/snmp: every process's, the load generator's and the origin's too,
# so run it on an otherwise quiet loopback) per request, and the relay's and the tunnel's CPU
# (utime + stime) per 1,000 requests, over SECONDS_EACH of wrk. The segment count does not
# swing with the load; the CPU does.
#     TOOL=segments CELLS="mux-close h2floor-close rathole-close" SECONDS_EACH=5 bench/profile.sh
# Needs perf (linux-perf), wrk, nginx and inferno (`cargo install inferno`; installed when
# missing). LIMMAT [target/profiling/limmat] is the binary profiled, built first with `cargo
# build --profile profiling` (the release build with the symbols and line tables that the
# release profile strips), as is h2floor (H2FLOOR) for its cells; SKIP_BUILD=1, or a LIMMAT or
# H2FLOOR of your own, uses the binary as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=$PWD/bench
OUT=${OUT:-$BENCH_DIR/profiles/latest}
CELLS=${CELLS:-ptth-close mux-close ptth-keepalive mux-keepalive}
SECONDS_EACH=${SECONDS_EACH:-10}
PERF_FREQ=${PERF_FREQ:-499}
CONNECTIONS=${CONNECTIONS:-50}
SKIP_BUILD=${SKIP_BUILD:-0}
[ -n "${LIMMAT:-}" ] || build_limmat=1
[ -n "${H2FLOOR:-}" ] || build_h2floor=1
LIMMAT=${LIMMAT:-target/profiling/limmat}
H2FLOOR=${H2FLOOR:-target/profiling/examples/h2_floor}
TOOL=${TOOL:-perf}
export RUST_LOG=warn

log() { printf '[profile] %s\n' "$*" >&2; }
if [ "$SKIP_BUILD" != 1 ] && [ "${build_limmat:-0}" = 1 ]; then
    log "cargo build --profile profiling --bin limmat"
    cargo build --profile profiling --bin limmat -p limmat >&2
fi
[ -x "$LIMMAT" ] || { log "$LIMMAT is missing: cargo build --profile profiling"; exit 1; }
case " $CELLS " in *" h2floor-"*)
    if [ "$SKIP_BUILD" != 1 ] && [ "${build_h2floor:-0}" = 1 ]; then
        log "cargo build --profile profiling --example h2_floor"
        cargo build --profile profiling -p limmat-mux --example h2_floor >&2
    fi
    [ -x "$H2FLOOR" ] || { log "$H2FLOOR is missing: cargo build --profile profiling -p limmat-mux --example h2_floor"; exit 1; } ;;
esac
case " $CELLS " in *" rathole-"*)
    RATHOLE=$(command -v rathole || echo "$HOME/.cargo/bin/rathole")
    [ -x "$RATHOLE" ] || cargo install rathole >&2 ;;
esac
if [ "$TOOL" = callgrind ]; then
    command -v valgrind >/dev/null || apt-get install -y -q valgrind >&2
elif [ "$TOOL" = segments ]; then
    :
else
    command -v perf >/dev/null || { log "perf is missing (apt-get install linux-perf)"; exit 1; }
    command -v inferno-flamegraph >/dev/null || cargo install inferno >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

TMPD=$(mktemp -d -t limmat-profile.XXXXXX)
PIDS=()
SUMMARY=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; rm -rf "$TMPD"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# under NAME COMMAND...: COMMAND, under callgrind with TOOL=callgrind (its counts to
# $TMPD/NAME.cg, each dump to NAME.cg.1, NAME.cg.2, …).
under() {
    local name=$1
    shift
    if [ "$TOOL" = callgrind ]; then
        exec valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$TMPD/$name.cg" "$@"
    fi
    exec "$@"
}
wait_200() {
    for _ in $(seq 150); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true)" = 200 ] && return 0
        sleep 0.2
    done
    log "no 200 from $1"; exit 1
}

for cell in $CELLS; do
    transport=${cell%-*} mode=${cell#*-}
    origin=$(free_port) relay=$(free_port)
    sed -e "s|@DIR@|$TMPD|g" -e "s|@PORT@|$origin|g" "$BENCH_DIR/nginx.conf.in" >"$TMPD/nginx.conf"
    "$NGINX" -p "$TMPD" -c "$TMPD/nginx.conf" -e "$TMPD/nginx-error.log" & PIDS+=("$!")
    if [ "$transport" = h2floor ]; then
        agent=$(free_port)
        under relay "$H2FLOOR" relay "127.0.0.1:$relay" "127.0.0.1:$agent" 2>"$TMPD/relay.log" & PIDS+=("$!"); relay_pid=$!
        sleep 0.5
        under tunnel "$H2FLOOR" agent "127.0.0.1:$agent" "127.0.0.1:$origin" 2>"$TMPD/tunnel.log" & PIDS+=("$!"); tunnel_pid=$!
    elif [ "$transport" = rathole ]; then
        # rathole's server in the relay's place, its client in the tunnel's.
        control=$(free_port) token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        printf '[server]\nbind_addr = "127.0.0.1:%s"\n[server.transport]\ntype = "tcp"\n[server.services.bench]\ntoken = "%s"\nbind_addr = "127.0.0.1:%s"\n' \
            "$control" "$token" "$relay" >"$TMPD/rathole-server.toml"
        printf '[client]\nremote_addr = "127.0.0.1:%s"\n[client.transport]\ntype = "tcp"\n[client.services.bench]\ntoken = "%s"\nlocal_addr = "127.0.0.1:%s"\n' \
            "$control" "$token" "$origin" >"$TMPD/rathole-client.toml"
        under relay "$RATHOLE" --server "$TMPD/rathole-server.toml" 2>"$TMPD/relay.log" & PIDS+=("$!"); relay_pid=$!
        sleep 0.5
        under tunnel "$RATHOLE" --client "$TMPD/rathole-client.toml" 2>"$TMPD/tunnel.log" & PIDS+=("$!"); tunnel_pid=$!
    else
        under relay "$LIMMAT" relay --listen "127.0.0.1:$relay" --max-per-domain 0 2>"$TMPD/relay.log" & PIDS+=("$!"); relay_pid=$!
        sleep 0.5
        args=(--transport "$transport" --max-sockets 200)
        [ "$transport" = ptth ] && args+=(--min-listeners "$CONNECTIONS")
        under tunnel "$LIMMAT" tunnel server "127.0.0.1:$origin" "127.0.0.1:$relay" bench "${args[@]}" \
            2>"$TMPD/tunnel.log" & PIDS+=("$!"); tunnel_pid=$!
    fi
    url=http://127.0.0.1:$relay/bench/
    wait_200 "$url"
    wrk_args=(-t2 -c"$CONNECTIONS" --timeout 10s)
    [ "$mode" = close ] && wrk_args+=(-H 'Connection: close')
    wrk "${wrk_args[@]}" -d2s "$url" >/dev/null 2>&1 || true
    if [ "$TOOL" = callgrind ]; then
        log "$cell: callgrind on relay ($relay_pid) and tunnel ($tunnel_pid) for ${SECONDS_EACH}s"
        callgrind_control -z "$relay_pid" >/dev/null 2>&1
        callgrind_control -z "$tunnel_pid" >/dev/null 2>&1
        wrk "${wrk_args[@]}" -d"${SECONDS_EACH}s" "$url" >"$TMPD/wrk.txt" 2>&1 || true
        callgrind_control -d "$relay_pid" >/dev/null 2>&1
        callgrind_control -d "$tunnel_pid" >/dev/null 2>&1
        requests=$(awk '/requests in/ {print $1}' "$TMPD/wrk.txt")
        line="$cell ${requests:-0}"
        for proc in relay tunnel; do
            callgrind_annotate --auto=no --threshold=100 "$TMPD/$proc.cg.1" >"$TMPD/$proc.annotated" 2>/dev/null || true
            head -n 100 "$TMPD/$proc.annotated" >"$OUT/$cell-$proc.callgrind.txt"
            ir=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }' "$TMPD/$proc.annotated")
            line+=" ${ir:-0}"
        done
        SUMMARY+=("$line")
        stop_all
        continue
    fi
    if [ "$TOOL" = segments ]; then
        log "$cell: TCP segments and CPU of relay ($relay_pid) and tunnel ($tunnel_pid) for ${SECONDS_EACH}s"
        out_segs() { awk '/^Tcp: [0-9]/ {print $12}' /proc/net/snmp; }
        cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
        segs0=$(out_segs) relay0=$(cpu_ticks "$relay_pid") tunnel0=$(cpu_ticks "$tunnel_pid")
        wrk "${wrk_args[@]}" -d"${SECONDS_EACH}s" "$url" >"$TMPD/wrk.txt" 2>&1 || true
        segs1=$(out_segs) relay1=$(cpu_ticks "$relay_pid") tunnel1=$(cpu_ticks "$tunnel_pid")
        requests=$(awk '/requests in/ {print $1}' "$TMPD/wrk.txt")
        SUMMARY+=("$cell ${requests:-0} $((segs1 - segs0)) $((relay1 - relay0 + tunnel1 - tunnel0))")
        stop_all
        continue
    fi
    log "$cell: perf on relay ($relay_pid) and tunnel ($tunnel_pid) for ${SECONDS_EACH}s"
    perf record -e cpu-clock -F "$PERF_FREQ" --call-graph dwarf,16384 -p "$relay_pid" -o "$TMPD/relay.data" \
        -- sleep "$SECONDS_EACH" >/dev/null 2>&1 &
    p1=$!
    perf record -e cpu-clock -F "$PERF_FREQ" --call-graph dwarf,16384 -p "$tunnel_pid" -o "$TMPD/tunnel.data" \
        -- sleep "$SECONDS_EACH" >/dev/null 2>&1 &
    p2=$!
    wrk "${wrk_args[@]}" -d"$((SECONDS_EACH + 1))s" "$url" >"$TMPD/wrk.txt" 2>&1 || true
    wait "$p1" "$p2" || true
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$TMPD/wrk.txt")
    for proc in relay tunnel; do
        perf script -i "$TMPD/$proc.data" 2>/dev/null | inferno-collapse-perf --all >"$TMPD/$proc.folded"
        inferno-flamegraph --title "$proc, $cell, $rps req/s" <"$TMPD/$proc.folded" \
            >"$OUT/$cell-$proc.svg"
        perf report -i "$TMPD/$proc.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
            | grep -E '^ +[0-9]' | sed -E 's/[ -]+$//' | head -n 25 >"$OUT/$cell-$proc.top.txt" || true
        "$BENCH_DIR/profile_layers.py" --per-request "$SECONDS_EACH" "${rps:-0}" \
            <"$TMPD/$proc.folded" >"$OUT/$cell-$proc.layers.txt"
        log "$OUT/$cell-$proc.svg ($(wc -l <"$TMPD/$proc.folded") stacks)"
    done
    if [ "${KEEP_FOLDED:-0}" = 1 ]; then
        for proc in relay tunnel; do cp "$TMPD/$proc.folded" "$OUT/$cell-$proc.folded"; done
    fi
    stop_all
done

if [ "$TOOL" = segments ]; then
    printf '%-20s %9s %14s %16s\n' cell requests "TCP segs/req" "CPU ms/1k req"
    for line in "${SUMMARY[@]}"; do
        read -r cell requests segs ticks <<<"$line"
        awk -v c="$cell" -v n="$requests" -v s="$segs" -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {
            if (n == 0) { printf "%-20s %9s  (no requests)\n", c, n; exit }
            printf "%-20s %9d %14.2f %16.1f\n", c, n, s / n, t / hz * 1e6 / n }'
    done
fi
if [ "$TOOL" = callgrind ]; then
    printf '%-20s %9s %14s %14s %14s\n' cell requests "relay Ir/req" "tunnel Ir/req" "both Ir/req"
    for line in "${SUMMARY[@]}"; do
        read -r cell requests relay_ir tunnel_ir <<<"$line"
        awk -v c="$cell" -v n="$requests" -v r="$relay_ir" -v t="$tunnel_ir" 'BEGIN {
            if (n == 0) { printf "%-20s %9s  (no requests)\n", c, n; exit }
            printf "%-20s %9d %14.0f %14.0f %14.0f\n", c, n, r / n, t / n, (r + t) / n }'
    done
fi
