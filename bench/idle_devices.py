#!/usr/bin/env python3
"""Idle PTTH/1.0 or limmat-mux/1 devices for bench/idle.sh: opens COUNT connections to a relay
and keeps each one waiting (spec 2.3-2.4) or, with --protocol mux, open as an idle mux
connection (spec 5.1-5.6).

A mux device sends the mux POST, reads the 61-byte 101, then plays a minimal HTTP/2 server: its
SETTINGS (empty), an ACK for the relay's SETTINGS and an ACK for every PING, which is all an
idle mux connection needs (no stream is ever opened in the bench).

Every connection sends
    POST /<domain> HTTP/1.1\\r\\nUpgrade: PTTH/1.0\\r\\nConnection: Upgrade\\r\\nHost: relay\\r\\n\\r\\n
and then only reads: after a `204` (the hold time passed) it sends the same POST again on the same
connection, as device libraries do. A `101` (a client was paired: never happens in the bench) or
any other response, and any EOF, is counted and the connection is not reopened.

Connections are bound to the source address --src (several processes use several addresses of
127.0.0.0/8 so the ephemeral ports of one address are not exhausted). The soft open-file limit
is raised to the hard one.

Prints one line `ready OPENED FAILED` on stdout once every connection has been opened and its
POST written (FAILED: connects that did not succeed), then keeps the connections until SIGTERM,
SIGINT or --max-seconds, and prints a summary line on stderr.
"""

import argparse
import asyncio
import resource
import signal
import sys

RENEW = b"HTTP/1.1 204 \r\n\r\n"
UPGRADE_MUX = b"HTTP/1.1 101 \r\nUpgrade: limmat-mux/1\r\nConnection: Upgrade\r\n\r\n"
PREFACE_LEN = 24
SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


class Device(asyncio.Protocol):
    def __init__(self, post, stats):
        self.post = post
        self.stats = stats
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.post)

    def data_received(self, data):
        self.buf += data
        while self.buf.startswith(RENEW):
            self.buf = self.buf[len(RENEW):]
            self.stats["renewed"] += 1
            self.transport.write(self.post)
        if len(self.buf) >= 12 and not self.buf.startswith(RENEW[:12]):
            status = self.buf[9:12].decode("ascii", "replace")
            self.stats["other:" + status] = self.stats.get("other:" + status, 0) + 1
            self.buf = b""
            self.transport.close()

    def connection_lost(self, exc):
        self.stats["lost"] += 1


class MuxDevice(Device):
    """An idle limmat-mux/1 device: HTTP/2 server side, frames parsed only to ACK."""

    def __init__(self, post, stats):
        super().__init__(post, stats)
        self.upgraded = False
        self.skip = PREFACE_LEN

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            if len(self.buf) < len(UPGRADE_MUX):
                return
            if not self.buf.startswith(UPGRADE_MUX):
                status = self.buf[9:12].decode("ascii", "replace")
                self.stats["other:" + status] = self.stats.get("other:" + status, 0) + 1
                self.transport.close()
                return
            self.buf = self.buf[len(UPGRADE_MUX):]
            self.upgraded = True
            self.stats["mux"] = self.stats.get("mux", 0) + 1
            self.transport.write(SETTINGS)
        if self.skip:
            n = min(self.skip, len(self.buf))
            self.skip -= n
            self.buf = self.buf[n:]
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags = self.buf[3], self.buf[4]
            payload = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            if ftype == 4 and not flags & 1:
                self.transport.write(SETTINGS_ACK)
            elif ftype == 6 and not flags & 1:
                self.stats["pings"] = self.stats.get("pings", 0) + 1
                self.transport.write(b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--relay", required=True, help="HOST:PORT of the relay")
    ap.add_argument("--src", default="127.0.0.1", help="source address to bind")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--first", type=int, default=0, help="index of the first device")
    ap.add_argument("--domains", choices=["many", "one"], default="many",
                    help="many: dev%%05d per device; one: every device uses PREFIX")
    ap.add_argument("--prefix", default="dev")
    ap.add_argument("--concurrency", type=int, default=200, help="connects in flight")
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--protocol", choices=["ptth", "mux"], default="ptth")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.count + 64 > hard:
        sys.exit(f"idle_devices: --count {args.count} needs more than the hard limit of {hard} files")

    host, port = args.relay.rsplit(":", 1)
    port = int(port)
    loop = asyncio.get_running_loop()
    stats = {"renewed": 0, "lost": 0}
    transports = []
    failed = 0
    sem = asyncio.Semaphore(args.concurrency)

    async def one(i):
        nonlocal failed
        domain = f"{args.prefix}{i:05d}" if args.domains == "many" else args.prefix
        upgrade = "limmat-mux/1" if args.protocol == "mux" else "PTTH/1.0"
        post = (f"POST /{domain} HTTP/1.1\r\nUpgrade: {upgrade}\r\nConnection: Upgrade\r\n"
                f"Host: relay\r\n\r\n").encode()
        kind = MuxDevice if args.protocol == "mux" else Device
        async with sem:
            for attempt in range(5):
                try:
                    t, _ = await loop.create_connection(
                        lambda: kind(post, stats), host, port, local_addr=(args.src, 0))
                    transports.append(t)
                    return
                except OSError as e:
                    last = e
                    await asyncio.sleep(0.2 * (attempt + 1))
            failed += 1
            print(f"idle_devices: connect failed: {last}", file=sys.stderr)

    await asyncio.gather(*(one(args.first + i) for i in range(args.count)))
    # Let the last POSTs leave the socket buffers before announcing readiness.
    await asyncio.sleep(0.1)
    print(f"ready {len(transports)} {failed}", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        pass
    for t in transports:
        t.abort()
    summary = " ".join(f"{k}={v}" for k, v in sorted(stats.items()))
    print(f"idle_devices src={args.src} first={args.first} count={args.count}: "
          f"opened={len(transports)} failed={failed} {summary}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
