#!/usr/bin/env bash
# bench/cluster.sh — cluster membership and ownership against the goals of issue 14.
#
# What it measures (crates/limmat-relay/tests/cluster_bench.rs; timing here is the gossip
# protocol's, not the CPU's, so the test profile is enough):
#   - failure detection: three chitchat nodes on 127.0.0.2-4 with the default settings (gossip
#     every 250 ms, HMAC-tagged UDP), node-c's sockets vanish as after SIGKILL, and the time
#     until it is gone from BOTH survivors' live sets; ROUNDS rounds [10], a fresh node-c each
#     time, after 3 s of steady gossip so the phi-accrual detector has learned the interval;
#   - domains moved by rendezvous hashing when a 4th node joins and when a node dies, over
#     DOMAINS domains [100000].
# Baselines from the issue: Yaler ≈ 10 s, piko ≈ 2 s failure detection.
#
# Run by hand, never in CI (about ROUNDS x 5 s):
#     bench/cluster.sh
#     ROUNDS=30 bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "| measurement | result | goal |"
echo "|---|---|---|"
cargo test -q -p limmat-relay --test cluster_bench -- --ignored --nocapture --test-threads 1 2>/dev/null \
    | grep '^|'
