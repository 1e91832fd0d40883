# Sourced by bench/slowloris.sh and bench/slowbody_relay.sh (set BENCH_NAME first): the
# slowhttptest install, the limmat binary to run, the file limit, a temporary directory and
# the processes to stop on exit, a free loopback port, and one attack with real requests
# measured meanwhile.
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

# attack_and_probe OUT URL EXPECT CMD...: runs the slowhttptest command CMD in the background
# (its output to OUT) and, from 3 s into the attack until 5 s before DURATION ends, asks URL
# every 0.1 s as a real client. Sets ok and total (answers with status EXPECT, of all),
# ok_pct, p99 (of the answers counted ok) and tail_line (slowhttptest's last counters).
attack_and_probe() {
    local out=$1 url=$2 expect=$3 sht res end
    shift 3
    "$@" >"$out" 2>&1 &
    sht=$!
    sleep 3 # let the attack ramp up
    ok=0 total=0
    : >"$TMPD/lat"
    end=$(( SECONDS + DURATION - 5 ))
    while (( SECONDS < end )); do
        res=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 "$url" || true)
        total=$(( total + 1 ))
        if [ "${res%% *}" = "$expect" ]; then ok=$(( ok + 1 )); echo "${res#* }" >>"$TMPD/lat"; fi
        sleep 0.1
    done
    wait "$sht" || true
    p99=$(sort -g "$TMPD/lat" | awk '{ a[NR] = $1 } END { i = int(NR * 0.99 + 0.5); if (i < 1) i = 1; if (NR) printf "%.1f ms", a[i] * 1000; else print "-" }')
    tail_line=$(grep -E "closed:|pending:|connected:" "$out" | tail -3 | sed "s/\x1b\[[0-9;]*[mHJ]//g" | tr -s ' \n' ' ' | cut -c1-90)
    ok_pct=$(awk -v o="$ok" -v t="$total" 'BEGIN { if (t) printf "%.1f", 100 * o / t; else print "-" }')
}
