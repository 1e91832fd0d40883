#!/usr/bin/env bash
# bench/flap.sh — a device on a flapping link, for minutes (hardening issue, item 5).
#
# crates/limmat/tests/bad_network.rs::flapping_link_loses_no_request_once_back with the real
# binaries: `limmat relay`, a PTTH and a mux `limmat tunnel server` (mux PINGs every 1 s)
# reaching it through limmat-faults' proxy, and a client loop through the relay. The link is
# up for 8 s, then down for 4 s (a blackhole, then every flow reset and new connections
# refused), again and again. Requests started more than 3 s after the link came back must all
# succeed; the line printed at the end counts them and the lost ones (the test fails on any).
#
# Run by hand, never in CI (SECONDS_TOTAL plus start-up):
#     bench/flap.sh
#     SECONDS_TOTAL=600 bench/flap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export LIMMAT_FLAP_SECONDS=${SECONDS_TOTAL:-120}
cargo test -q -p limmat --test bad_network -- --ignored --nocapture flapping_link 2>&1 \
    | grep -E '^flapping link|test result|panicked|lost once back'
