#!/usr/bin/env bash
# bench/cluster-hop.sh — what a client pays for reaching a non-owner (spec 7.5), against the
# goals of issue 14: p50 ≤ +0.3 ms, p99 ≤ +1 ms added, keep-alive req/s through a forwarding
# node ≥ 80 % of the owner's own.
#
# What it measures (crates/limmat-relay/tests/cluster_hop_bench.rs, release build): two
# clustered relays in one process on loopback, node-a on 127.0.0.2 owns every domain used and
# holds the devices, node-b on 127.0.0.3 forwards; the same load runs against node-a directly
# and through node-b:
#   - keep-alive: ROUNDS [20000] round trips of 64 -> 256 bytes on one pipe (p50, p99), and
#     round trips per second over CONNS [8] pipes in parallel;
#   - new connection: NEW_CONNS [1000] times connect, request, first byte of the answer.
# The load generator shares the machine with both relays, so absolute numbers are the
# machine's; the differences are the hop's.
#
# Run by hand, never in CI (about a minute):
#     bench/cluster-hop.sh
#     ROUNDS=50000 CONNS=16 bench/cluster-hop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q --release -p limmat-relay --test cluster_hop_bench -- --ignored --nocapture --test-threads 1 2>/dev/null \
    | grep '^|'
