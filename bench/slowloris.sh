#!/usr/bin/env bash
# bench/slowloris.sh — slow clients against every listener, with slowhttptest (hardening issue,
# items 1-3), while a loop of real requests measures what users still get.
#
# Targets, each started fresh on 127.0.0.1 from target/release/limmat (or target/debug):
#   gateway   `limmat gateway` (simulated backend): GET /gap/nodes on its local listener
#   admin     `limmat relay --admin`: GET /healthz on the admin listener
#   public    `limmat relay`: a client of an offline domain (its 504) on the public listener
# For each target and attack — slowloris (-H: headers never finished) on all three, and a slow
# body (-B: a POST whose body trickles) on the gateway's POST /beacon/subscriptions, the one
# listener whose handlers read bodies (the relay answers from the head) — slowhttptest opens CONNECTIONS connections at RATE per
# second for DURATION seconds while curl sends one real request every 100 ms; the table shows
# the real requests that got their expected answer, their p99, and slowhttptest's own closing
# line (how many of its connections the target had closed when it stopped).
#
# Run by hand, never in CI (about 6 x (DURATION + 5) s):
#     bench/slowloris.sh
#     CONNECTIONS=5000 DURATION=60 bench/slowloris.sh
# Settings: CONNECTIONS [2000], RATE [500], DURATION [30], TARGETS ["gateway admin public"]. Installs slowhttptest with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-2000}
RATE=${RATE:-500}
DURATION=${DURATION:-30}
TARGETS=${TARGETS:-gateway admin public}

BENCH_NAME=slowloris
. bench/slowhttp-common.sh

# start_target NAME: starts it, sets URL (attacked) and EXPECT (the status a real request gets).
start_target() {
    local port admin
    port=$(free_port)
    case $1 in
        gateway)
            RUST_LOG=warn "$LIMMAT" gateway --listen "127.0.0.1:$port" --state-dir "$TMPD/gw-$port" \
                >"$TMPD/$1.log" 2>&1 &
            URL=http://127.0.0.1:$port/gap/nodes EXPECT=200 ;;
        admin)
            admin=$(free_port)
            RUST_LOG=warn "$LIMMAT" relay --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
                >"$TMPD/$1.log" 2>&1 &
            URL=http://127.0.0.1:$admin/healthz EXPECT=200 ;;
        public)
            RUST_LOG=warn "$LIMMAT" relay --listen "127.0.0.1:$port" --client-wait 0s \
                >"$TMPD/$1.log" 2>&1 &
            URL=http://127.0.0.1:$port/offline-device/ EXPECT=504 ;;
    esac
    PIDS+=("$!")
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$URL" || true)" = "$EXPECT" ] && return 0
        sleep 0.1
    done
    log "$1 did not answer $EXPECT at $URL"; tail -5 "$TMPD/$1.log" >&2; exit 1
}

printf '%-8s %-8s %-62s %9s %9s %8s  %s\n' target attack "slowhttptest command" "real ok" "real p99" "ok %" "slowhttptest at the end"
for target in $TARGETS; do
    attacks=headers
    [ "$target" = gateway ] && attacks="headers body"
    for attack in $attacks; do
        start_target "$target"
        case $attack in
            headers) args=(-H -i 10 -r "$RATE" -t GET -u "$URL") ;;
            body) args=(-B -i 10 -r "$RATE" -t POST -s 8192 -u "${URL%/gap/nodes}/beacon/subscriptions") ;;
        esac
        cmd=(slowhttptest -c "$CONNECTIONS" "${args[@]}" -x 24 -p 3 -l "$DURATION")
        attack_and_probe "$TMPD/sht-$target-$attack.txt" "$URL" "$EXPECT" "${cmd[@]}"
        printf '%-8s %-8s %-62s %9s %9s %8s  %s\n' "$target" "$attack" "${cmd[*]:0:11}" "$ok/$total" "$p99" \
            "$ok_pct" "$tail_line"
        kill "${PIDS[-1]}" 2>/dev/null || true
        wait "${PIDS[-1]}" 2>/dev/null || true
    done
done
