#!/usr/bin/env python3
"""A point-to-point Ethernet link with added one-way delay, between two QEMU `-netdev socket,udp=`
endpoints: the guest NIC's and QEMU user networking's (joined to its socket through a hub).

This kernel has no sch_netem, so `tc netem delay` is not available; this relay plays its role.
Every frame QEMU sends to one of our two UDP ports is held for a fixed time, then sent on to
the other side's QEMU socket, in arrival order (a FIFO per direction: no reordering, no loss
added), frames leaving back to back no faster than `--rate-mbit` (100 Mbit/s by default, a
Fast Ethernet link; 0 turns pacing off). `--to-guest-ms 20` is what `tc qdisc add dev TAP root netem delay 20ms`
on the host side of a tap does: frames towards the guest wait 20 ms, frames from it none, so
every round trip through the guest grows by 20 ms.

On SIGTERM/SIGINT it prints, per direction, the frames relayed and the hold time measured on
each (mean and maximum, from arrival to send), so the delay actually produced is reported,
scheduling jitter included.
"""

import argparse
import collections
import selectors
import signal
import socket
import sys
import time


def udp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Room for a window's worth of frames while we sleep between releases.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


class Direction:
    """Frames arriving on `rx` leave through `tx` towards `dest` after `delay` seconds."""

    def __init__(self, name, rx, tx, dest, delay, rate):
        self.name, self.rx, self.tx, self.dest, self.delay = name, rx, tx, dest, delay
        self.byte_time = 8 / rate if rate else 0.0
        # When the simulated wire is free again (frames leave back to back at `rate`).
        self.wire_free = 0.0
        self.queue = collections.deque()
        self.frames = 0
        self.hold_total = 0.0
        self.hold_max = 0.0

    def receive(self):
        while True:
            try:
                frame = self.rx.recv(65536)
            except BlockingIOError:
                return
            now = time.monotonic()
            # Held for the delay, then serialised: a frame leaves once the previous one has.
            due = max(now + self.delay, self.wire_free)
            self.wire_free = due + len(frame) * self.byte_time
            self.queue.append((due, now, frame))

    def release(self, now):
        while self.queue and self.queue[0][0] <= now:
            _, arrived, frame = self.queue.popleft()
            try:
                self.tx.sendto(frame, self.dest)
            except BlockingIOError:
                # The kernel's buffer is full: keep the frame, retry on the next turn.
                self.queue.appendleft((now, arrived, frame))
                return
            hold = time.monotonic() - arrived
            self.frames += 1
            self.hold_total += hold
            self.hold_max = max(self.hold_max, hold)

    def report(self):
        mean = self.hold_total / self.frames * 1e3 if self.frames else 0.0
        return (f"delay-link {self.name}: {self.frames} frames, held {mean:.2f} ms on average, "
                f"{self.hold_max * 1e3:.2f} ms at most (target {self.delay * 1e3:.1f} ms)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest-listen", type=int, required=True,
                    help="our UDP port the guest NIC's socket netdev sends to")
    ap.add_argument("--guest-peer", type=int, required=True,
                    help="the guest NIC socket netdev's own UDP port (localaddr)")
    ap.add_argument("--net-listen", type=int, required=True,
                    help="our UDP port the user-network side's socket netdev sends to")
    ap.add_argument("--net-peer", type=int, required=True,
                    help="the user-network side socket netdev's own UDP port (localaddr)")
    ap.add_argument("--to-guest-ms", type=float, default=20.0)
    ap.add_argument("--from-guest-ms", type=float, default=0.0)
    ap.add_argument("--rate-mbit", type=float, default=100.0,
                    help="link rate each way (frames leave no faster; 0: unlimited)")
    args = ap.parse_args()

    guest_sock = udp_socket(args.guest_listen)
    net_sock = udp_socket(args.net_listen)
    from_guest = Direction("from guest", guest_sock, net_sock, ("127.0.0.1", args.net_peer),
                           args.from_guest_ms / 1e3, args.rate_mbit * 1e6)
    to_guest = Direction("to guest", net_sock, guest_sock, ("127.0.0.1", args.guest_peer),
                         args.to_guest_ms / 1e3, args.rate_mbit * 1e6)
    directions = (from_guest, to_guest)

    stop = False

    def on_signal(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    selector = selectors.DefaultSelector()
    selector.register(guest_sock, selectors.EVENT_READ, from_guest)
    selector.register(net_sock, selectors.EVENT_READ, to_guest)
    print("delay-link ready", flush=True)
    while not stop:
        now = time.monotonic()
        due = [d.queue[0][0] for d in directions if d.queue]
        timeout = max(0.0, min(due) - now) if due else 0.5
        for key, _ in selector.select(timeout):
            key.data.receive()
        now = time.monotonic()
        for d in directions:
            d.release(now)
    for d in directions:
        print(d.report(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
