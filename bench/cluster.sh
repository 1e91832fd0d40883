#!/usr/bin/env bash
# bench/cluster.sh — a relay cluster against the goals of issue 14, with real processes.
#
# What it measures (release build; run by hand, never in CI, about 5 minutes):
#   1. crates/limmat/tests/cluster_e2e.rs bench_cluster_recovery: three `limmat relay` processes
#      on 127.0.0.2-4, DOMAINS [300] devices (limmat_agent with the default settings, as
#      `limmat tunnel server` runs them) behind a TCP balancer on 127.0.0.6 (the shared name);
#      node-4 is SIGKILLed ROUNDS [3] times (restarted in between): the time until it is gone
#      from both survivors' members endpoints, and until each of its domains answers a request
#      through a survivor again (median, p99 over every domain and round). The domains moved by
#      a 4th node joining and by a death, counted with the relay's own rendezvous function
#      (cluster_e2e's join test checks that exactly those devices move);
#   2. bench_gossip_bytes: the gossip bytes each node sends per second (its
#      limmat_cluster_gossip_bytes_total{direction="sent"}) over 10 s with 10 and with 10,000
#      idle devices connected;
#   3. bench/cluster-hop.sh: the forwarding hop's added latency and keep-alive req/s.
# The load generator shares the machine with the nodes, so absolute numbers are the machine's.
#     bench/cluster.sh
#     DOMAINS=300 ROUNDS=5 bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
test_bin() {
    cargo test -q --release -p limmat --test cluster_e2e --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "cluster_e2e" in m["target"]["name"]:
        print(m["executable"])' | tail -1
}
cargo build -q --release -p limmat
BIN=$(test_bin)
echo "| measurement | result | goal |"
echo "|---|---|---|"
DOMAINS=${DOMAINS:-300} ROUNDS=${ROUNDS:-3} "$BIN" --ignored --nocapture --test-threads 1 --exact bench_cluster_recovery 2>/dev/null | grep -o '|.*|$' || true
for n in 10 10000; do
    DOMAINS=$n "$BIN" --ignored --nocapture --test-threads 1 --exact bench_gossip_bytes 2>/dev/null \
        | grep -o '|.*|$' || echo "| gossip traffic per node, $n domains | failed | |"
done
bench/cluster-hop.sh
