#!/usr/bin/env python3
"""Groups a heaptrack peak flame-graph stack file into the relay's allocation sites.

    heaptrack_print -f heaptrack.limmat.PID.zst -p 0 -a 0 -T 0 \\
        --flamegraph-cost-type peak -F stacks.txt
    bench/heaptrack_sites.py stacks.txt DEVICES

Each line of stacks.txt is `frame;frame;...;frame BYTES`: the bytes that stack held at the
heap's peak (when every device waits). Stacks are labelled by the first rule below that matches
(rules name the relay's and tokio's frames), and the table shows bytes at the peak and bytes per
device. Unmatched stacks are shown by their innermost non-allocator frames.
"""

import re
import sys
from collections import defaultdict

RULES = [
    (("admin::metrics",), "admin GET /metrics: registry snapshot (transient; the bench polls it)"),
    (("snapshot (registry.rs)",), "admin GET /metrics: registry snapshot (transient; the bench polls it)"),
    (("new_task", "(conn.rs)"), "tokio task cell of mux::serve (spawned per mux device, conn.rs)"),
    (("new_task", "(server.rs)"), "tokio task cell of conn::handle (spawned per connection, server.rs)"),
    (("registration_set.rs",), "tokio I/O driver ScheduledIo per socket (new_accepted)"),
    # h2's per-connection state (mux devices), allocated by the client handshake.
    (("new<> (framed_write.rs)",), "h2 FramedWrite buffer, 16 KiB up front (codec/framed_write.rs)"),
    (("new_read<> (length_delimited.rs)",), "tokio-util FramedRead buffer under h2, 8 KiB up front"),
    (("new (decoder.rs)",), "h2 HPACK decoder buffer, 4 KiB up front (hpack/decoder.rs)"),
    (("new (streams.rs)",), "h2 stream store, Arc<Mutex<Inner>> (proto/streams/streams.rs)"),
    (("promote_to_shared",), "bytes' shared header of h2's read buffer (first frame split off)"),
    (("(client.rs)", "(timeout.rs)"), "other h2 client handshake allocations"),
    (("new (keepalive.rs)",), "mux Keepalive kick Arc<Notify> (keepalive.rs)"),
    (("mux_add (registry.rs)",), "Domain.mux Vec<Arc<MuxConn>> (registry.rs mux_add)"),
    (("pin<> (boxed.rs)", "(conn.rs)"), "mux::serve future, boxed in the connection's task (conn.rs)"),
    (("channel<> (oneshot.rs)", "(device.rs)"), "oneshot::channel per wait (device.rs wait)"),
    (("cancellation_token.rs", "(registry.rs)"), "CancellationToken x2 per Domain (registry.rs Domain::default)"),
    (("describe (registry.rs)",), "Domain.device_info (registry.rs describe)"),
    (("admit (registry.rs)", "from_slice"), "Arc<str> domain key (registry.rs admit)"),
    (("admit (registry.rs)", "default<> (boxed.rs)"), "Box<Domain> (registry.rs admit)"),
    (("admit (registry.rs)",), "registry shard HashMap<Arc<str>, Box<Domain>> table (registry.rs admit)"),
    (("push_compacting",), "Domain.devices VecDeque<Entry> (registry.rs device_ready)"),
    (("(mux.rs)",), "other allocations of mux::serve: Arc<MuxConn>, Signals (mux.rs)"),
    (("(limits.rs)",), "limits (limits.rs)"),
    (("(stats.rs)",), "stats gauges (stats.rs)"),
]
GENERIC = re.compile(
    r"\((alloc|unix|boxed|raw_vec|mod|sync|harness|panicking|panic|unwind_safe|task|raw|worker|"
    r"context|local|scoped|runtime|pool|lifecycle|function|backtrace|core|unsafe_cell|"
    r"task_tracker|map|option|iterator|spec_from_iter|spec_from_iter_nested|spec_extend)\.rs\)"
    r"|^_RNv|^clone3|^start_thread|^0x")


def label(frames):
    text = ";".join(frames)
    for needles, name in RULES:
        if all(n in text for n in needles):
            return name
    own = [f for f in frames if f and not GENERIC.search(f)]
    return "other: " + " < ".join(reversed(own[-3:])) if own else "other"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, devices = sys.argv[1], int(sys.argv[2])
    sites = defaultdict(int)
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            stack, _, cost = line.rstrip("\n").rpartition(" ")
            try:
                cost = int(cost)
            except ValueError:
                continue
            if cost <= 0:
                continue
            total += cost
            sites[label([s.strip() for s in stack.split(";")])] += cost
    print(f"heap at the peak: {total} B over {devices} devices = {total / devices:.0f} B/device")
    print(f"{'bytes':>10} {'B/device':>9} {'share':>6}  site")
    shown = 0
    for name, cost in sorted(sites.items(), key=lambda kv: -kv[1]):
        if shown >= 20 and cost < total * 0.002:
            continue
        shown += 1
        print(f"{cost:>10} {cost / devices:>9.1f} {100 * cost / total:>5.1f}%  {name}")


if __name__ == "__main__":
    main()
