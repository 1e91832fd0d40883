#!/usr/bin/env bash
# bench/slowbody_relay.sh — slow-body clients through the relay against a gateway (issue 13
# item 2): can a gateway be starved through its relay link? A relay and `limmat gateway`
# (simulated backend, registered as `gw-bench`, relay.transport TRANSPORT) are started on
# 127.0.0.1; slowhttptest opens CONNECTIONS slow-body POSTs to
# http://relay/gw-bench/beacon/subscriptions (a complete application/json head, then the body
# trickling: without -f the gateway answers 415 at once)
# while curl sends one real GET /gw-bench/beacon/beacons through the relay every 100 ms; the
# table shows the real requests that got their 200, their p99, and slowhttptest's closing
# counts. TRANSPORT=ptth shows the PTTH pool (relay.max_connections, 32) for comparison.
#
# Run by hand, never in CI (about DURATION + 10 s per transport):
#     bench/slowbody_relay.sh
#     CONNECTIONS=5000 DURATION=60 TRANSPORTS="auto ptth" bench/slowbody_relay.sh
# Settings: CONNECTIONS [2000], RATE [500], DURATION [30], TRANSPORTS ["auto"].
# Measured (debug build, 2 shared cores, 2026-12-06): auto 201/201 real requests (100 %, p99
# 10 ms) with 2,000 slow bodies; ptth 157/176 (89.2 %), 32 slow clients served, the rest 504.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-2000}
RATE=${RATE:-500}
DURATION=${DURATION:-30}
TRANSPORTS=${TRANSPORTS:-auto}

BENCH_NAME=slowbody-relay
. bench/slowhttp-common.sh

printf '%-9s %-86s %9s %9s %7s  %s\n' transport "slowhttptest command" "real ok" "real p99" "ok %" "slowhttptest at the end"
for transport in $TRANSPORTS; do
    relay_port=$(free_port) gw_port=$(free_port)
    RUST_LOG=warn "$LIMMAT" relay --listen "127.0.0.1:$relay_port" >"$TMPD/relay-$transport.log" 2>&1 &
    PIDS+=("$!")
    printf '[relay]\ntransport = "%s"\n' "$transport" >"$TMPD/gateway-$transport.toml"
    RUST_LOG=warn "$LIMMAT" gateway --listen "127.0.0.1:$gw_port" --state-dir "$TMPD/gw-$transport" \
        --config "$TMPD/gateway-$transport.toml" --relay "127.0.0.1:$relay_port" --domain gw-bench \
        >"$TMPD/gateway-$transport.log" 2>&1 &
    PIDS+=("$!")
    URL=http://127.0.0.1:$relay_port/gw-bench/beacon/beacons
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$URL" || true)" = 200 ] && break
        sleep 0.1
    done
    cmd=(slowhttptest -c "$CONNECTIONS" -B -i 10 -r "$RATE" -t POST -s 8192 -f application/json
        -u "http://127.0.0.1:$relay_port/gw-bench/beacon/subscriptions" -x 24 -p 3 -l "$DURATION")
    attack_and_probe "$TMPD/sht-$transport.txt" "$URL" 200 "${cmd[@]}"
    printf '%-9s %-86s %9s %9s %7s  %s\n' "$transport" "${cmd[*]:0:12} …" "$ok/$total" "$p99" \
        "$ok_pct" "$tail_line"
    kill "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
    wait "${PIDS[-1]}" "${PIDS[-2]}" 2>/dev/null || true
done
