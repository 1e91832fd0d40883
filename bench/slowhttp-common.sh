# Sourced by bench/slowloris.sh and bench/slowbody_relay.sh (set BENCH_NAME first): the
# slowhttptest install, the limmat binary to run, the file limit, a temporary directory and
# the processes to stop on exit, and a free loopback port.
log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
command -v slowhttptest >/dev/null 2>&1 || {
    log "apt-get install slowhttptest"
    apt-get install -y -q slowhttptest >&2
}
LIMMAT=target/release/limmat
[ -x "$LIMMAT" ] || LIMMAT=target/debug/limmat
[ -x "$LIMMAT" ] || { log "build limmat first (cargo build --release)"; exit 1; }
ulimit -n "$(ulimit -Hn)"

TMPD=$(mktemp -d -t "limmat-$BENCH_NAME.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMPD"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
