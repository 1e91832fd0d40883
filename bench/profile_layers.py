#!/usr/bin/env python3
"""bench/profile_layers.py — where a profiled process spends its CPU, by layer.

Reads the folded stacks of one process (`perf script | inferno-collapse-perf`) on stdin and
prints the share of samples by the layer of the function that was running (the stack's leaf):
the kernel (frames marked `_[k]`), the allocator, libc's memory copies, tokio, h2, hyper,
limmat's own crates and the rest; then the limmat functions with the most samples anywhere on
their stack (inclusive), and the user-space leaves with the most samples. bench/profile.sh
writes it next to each flame graph as CELL-PROCESS.layers.txt. Last, the kernel samples by the
system call (or interrupt) they ran under.

With `--per-request SECONDS REQ_PER_S` (how long perf recorded, and wrk's rate), each layer is
also given as CPU microseconds per request, so that two processes or two builds compare in
absolute terms. That needs perf's `cpu-clock` event (bench/profile.sh records with it), whose
sample weights, which the folded counts add up, are nanoseconds of CPU.
"""
import re
import sys
from collections import Counter

LAYERS = [
    ("kernel", lambda f: f.endswith("_[k]")),
    ("allocator (malloc/free)", lambda f: re.match(r"^(_int_malloc|_int_free|malloc|free|cfree|realloc|_int_realloc|unlink_chunk|malloc_consolidate|tcache_|__libc_malloc|__libc_free|__rust_alloc|__rust_dealloc|__rdl_)", f) is not None),
    ("libc memcpy/memset/memcmp", lambda f: re.match(r"^__(mem|str)", f) is not None),
    # By the type or module a frame belongs to (`<limmat_mux::H2Stream as tokio::…>::poll_write`
    # is limmat's code), not by the generics it names.
    ("limmat", lambda f: re.match(r"^<?limmat", f) is not None),
    ("tokio", lambda f: re.match(r"^<?(tokio|tokio_util|mio)::", f) is not None),
    ("h2", lambda f: re.match(r"^<?h2::", f) is not None),
    ("hyper / http", lambda f: re.match(r"^<?(hyper|hyper_util|http|httparse)::", f) is not None),
    ("rustls / ring", lambda f: re.match(r"^<?(rustls|tokio_rustls|ring|aws_lc)", f) is not None),
]


def layer(frame):
    for name, test in LAYERS:
        if test(frame):
            return name
    return "other user space (std, core, libc, unresolved)"


def kernel_entry(frames):
    """The system call a kernel stack ran under (`__x64_sys_NAME`), else what entered it."""
    for f in frames:
        m = re.match(r"^__(?:x64|do)_sys_(\w+)_\[k\]$", f)
        if m:
            return m.group(1)
    for f in frames:
        if f.endswith("_[k]") and re.search(r"irq|asm_exc|asm_sysvec", f):
            return "interrupt or fault: " + f[:-3]
    return "other kernel"


def main():
    per_request = None
    if len(sys.argv) == 4 and sys.argv[1] == "--per-request":
        seconds, rps = (float(a) for a in sys.argv[2:])
        if seconds > 0 and rps > 0:
            per_request = 1e-3 / (seconds * rps)  # µs of CPU per request, per ns sampled
    leaf_layer, leaf_fn, inclusive, syscall = Counter(), Counter(), Counter(), Counter()
    total = 0
    for line in sys.stdin:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        leaf = frames[-1]
        leaf_layer[layer(leaf)] += n
        if not leaf.endswith("_[k]"):
            leaf_fn[leaf] += n
        else:
            syscall[kernel_entry(frames)] += n
        seen = set()
        for f in frames[1:]:  # the first frame is the thread's name
            if re.match(r"^<?limmat_\w+::", f) and f not in seen:
                seen.add(f)
                inclusive[f] += n
    if total == 0:
        print("no samples")
        return
    pct = lambda n: 100.0 * n / total
    print("by layer of the running function (the stack's leaf):")
    if per_request is not None:
        print(f"  {total * per_request:.1f} µs of CPU per request in all")
    for name, n in leaf_layer.most_common():
        us = f"  {n * per_request:5.1f} µs/req" if per_request is not None else ""
        print(f"  {pct(n):5.1f} %{us}  {name}")
    print("\nlimmat functions, inclusive (samples with the function anywhere on the stack), top 15:")
    for f, n in inclusive.most_common(15):
        print(f"  {pct(n):5.1f} %  {f[:150]}")
    print("\nuser-space leaves, top 15:")
    for f, n in leaf_fn.most_common(15):
        print(f"  {pct(n):5.1f} %  {f[:150]}")
    print("\nkernel samples by the system call (or interrupt) they ran under, top 12:")
    for f, n in syscall.most_common(12):
        us = f"  {n * per_request:5.1f} µs/req" if per_request is not None else ""
        print(f"  {pct(n):5.1f} %{us}  {f}")


main()
