#!/usr/bin/python3
"""Throughput of the QEMU firmware (socksgate-mps2) as its own console reports it.

    qemu_bench.py run --firmware ELF --label TEXT [--net user|tap] [--delay-ms MS]
                      [--rounds 1,4] [--size-mib N] [--table FILE]
    qemu_bench.py link [--delay-ms 20] [--window 16384]

`run` boots the firmware with its console (UART0) on a unix socket, keeps one connection to
it open for the whole run and downloads a file through the gateway with `curl --socks5`,
first with 1 session, then with 4 in parallel (`--rounds`), each file compared byte for byte.
The figures are the firmware's: every session's log line on the console (`session ... up=U
down=D ms=T end=finished`) gives its bytes each way and its duration, from accept to the end
of the close; per-session throughput is D / T. `stats` is read before and after each round:
it must show no dropped log line, its byte counters must have grown by what the lines add up
to, and its `uptime-ms` must have advanced with the host's clock (within 5 %), so the
firmware's durations are true ones. The
aggregate of a round is all sessions' bytes over the longest session's duration (they start
together). curl's own figure is printed next to it for comparison.

Networks (`--net`):
  user  QEMU user networking (libslirp), as `./ci.sh qemu` uses it: the guest takes its
        address by DHCP from QEMU (10.0.2.15); the origin is `python3 -m http.server` on
        loopback, reached as 10.0.2.100:80 through a `guestfwd` socat; SOCKS is a `hostfwd`.
  tap   a tap device in the current network namespace (run under `unshare -n`): the host's
        own TCP stack, no libslirp. The tap side is 10.0.2.2/24 with the origin on it; the
        firmware gets the static address 10.0.2.15/24 over its console (`set address`,
        `save`, `reboot`), so no DHCP server is needed.
With `--delay-ms`, the NIC and the network are two UDP socket netdevs joined by
`delay_link.py`, which holds every frame towards the guest that long (see its docstring).

`link` measures `delay_link.py` alone, between two host UDP sockets: a window of frames
sent, all received after the delay, one small "ACK" frame back, repeated, so it reports what
window / round trip the relay itself allows, and the hold time it produced.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GUEST = "10.0.2.15"
TAP_HOST = "10.0.2.2"
SESSION_LINE = re.compile(
    # Whole lines only: the reader may hold the first half of one.
    rb"session client=(\S+) .* up=(\d+) down=(\d+) ms=(\d+) end=([a-z:-]+)\r?\n"
)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fail(text):
    print(f"FAIL: {text}", file=sys.stderr, flush=True)
    sys.exit(1)


class Console:
    """One connection to the firmware's console for the whole run; a thread reads
    everything into `text`, so session log lines are seen as they are written."""

    def __init__(self, path):
        self.sock = None
        for _ in range(200):
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(path)
                self.sock = sock
                break
            except OSError:
                time.sleep(0.05)
        if self.sock is None:
            fail("no console socket")
        self.text = b""
        self.lock = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            with self.lock:
                if not data:
                    self.closed = True
                    self.lock.notify_all()
                    return
                self.text += data
                self.lock.notify_all()

    def wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate(self.text):
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    fail(f"console: {what} not seen within {timeout} s; "
                         f"last output {self.text[-600:]!r}")
                self.lock.wait(left)

    def command(self, line, timeout=20):
        """Sends `line`; returns its output (between the echo and the next prompt)."""
        with self.lock:
            start = len(self.text)
        self.sock.sendall(line.encode() + b"\r")
        typed = line.encode()

        def prompt_after_echo(text):
            at = text.find(typed, start)
            return at >= 0 and text.find(b"\r\n> ", at + len(typed)) >= 0

        self.wait_for(prompt_after_echo, timeout, f"output of {line!r}")
        with self.lock:
            at = self.text.find(typed, start) + len(typed)
            end = self.text.find(b"\r\n> ", at)
            return self.text[at:end].decode(errors="replace").strip("\r\n")

    def sessions_since(self, offset):
        with self.lock:
            return SESSION_LINE.findall(self.text, offset)

    def mark(self):
        with self.lock:
            return len(self.text)


def host_retransmissions():
    """TCP segments this network namespace's stack retransmitted (RetransSegs): on the tap,
    the origin's and the client's, i.e. what was lost towards the guest."""
    lines = [line.split() for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])


def stats(console):
    out = console.command("stats")
    values = dict(re.findall(r"([a-z-]+) (\d+)", out.splitlines()[0]))
    return {k: int(v) for k, v in values.items()}, out


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="socksgate-bench-")
        self.procs = []
        self.size = args.size_mib << 20
        with open(os.path.join(self.work, "blob"), "wb") as out:
            out.write(os.urandom(self.size))
        self.blob = open(os.path.join(self.work, "blob"), "rb").read()

    def spawn(self, argv, log):
        proc = subprocess.Popen(argv, stdout=open(os.path.join(self.work, log), "a"),
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []

    def log(self, name):
        path = os.path.join(self.work, name)
        return open(path, errors="replace").read() if os.path.exists(path) else ""

    # ---- the network -------------------------------------------------------------------------

    def start(self):
        a = self.args
        if a.net == "tap":
            for cmd in (["ip", "link", "set", "lo", "up"],
                        ["ip", "tuntap", "add", "tap0", "mode", "tap"],
                        ["ip", "addr", "add", f"{TAP_HOST}/24", "dev", "tap0"],
                        ["ip", "link", "set", "tap0", "up"]):
                subprocess.run(cmd, check=True)
            origin_host, origin_port = TAP_HOST, 8080
            self.url = f"http://{TAP_HOST}:{origin_port}/blob"
            self.socks = f"{GUEST}:1080"
            netdev = "tap,id=n0,ifname=tap0,script=no,downscript=no"
        else:
            origin_host, origin_port = "127.0.0.1", free_port()
            self.socks_port = free_port()
            self.url = "http://10.0.2.100/blob"
            self.socks = f"127.0.0.1:{self.socks_port}"
            netdev = (f"user,id=n0,restrict=on,"
                      f"hostfwd=tcp:127.0.0.1:{self.socks_port}-{GUEST}:1080,"
                      f"guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:{origin_port}")
        self.spawn([sys.executable, "-m", "http.server", "--bind", origin_host,
                    "--directory", self.work, str(origin_port)], "origin.log")
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((origin_host, origin_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    fail("origin did not start")
                time.sleep(0.1)
        if a.delay_ms is None:
            link = ["-netdev", netdev, "-net", "nic,model=lan9118,netdev=n0"]
        else:
            g_relay, g_qemu, s_relay, s_qemu = (free_port(socket.SOCK_DGRAM) for _ in range(4))
            self.relay = self.spawn(
                [sys.executable, os.path.join(HERE, "delay_link.py"),
                 "--guest-listen", str(g_relay), "--guest-peer", str(g_qemu),
                 "--net-listen", str(s_relay), "--net-peer", str(s_qemu),
                 "--to-guest-ms", str(a.delay_ms), "--rate-mbit", str(a.rate_mbit)],
                "delay.log")
            deadline = time.monotonic() + 10
            while "delay-link ready" not in self.log("delay.log"):
                if time.monotonic() > deadline:
                    fail("delay link did not start")
                time.sleep(0.05)
            link = ["-netdev", f"socket,id=g0,udp=127.0.0.1:{g_relay},localaddr=127.0.0.1:{g_qemu}",
                    "-net", "nic,model=lan9118,netdev=g0",
                    "-netdev", f"socket,id=s0,udp=127.0.0.1:{s_relay},localaddr=127.0.0.1:{s_qemu}",
                    "-netdev", netdev,
                    "-netdev", "hubport,id=h0,hubid=1,netdev=n0",
                    "-netdev", "hubport,id=h1,hubid=1,netdev=s0"]
        console_path = os.path.join(self.work, "console.sock")
        self.qemu = self.spawn(
            ["qemu-system-arm", "-M", "mps2-an386", "-cpu", "cortex-m4", "-display", "none",
             "-monitor", "none", "-semihosting-config", "enable=on,target=native",
             "-chardev", f"socket,id=con,path={console_path},server=on,wait=off",
             "-serial", "chardev:con", *link, "-kernel", a.firmware], "qemu.log")
        self.console = Console(console_path)
        if a.capture:
            # The host side of the link: origin <-> gateway and gateway <-> client, as the
            # host's stack sees them (before the delay towards the guest).
            self.spawn(["tcpdump", "-q", "-i", "tap0", "-s", "128", "-w", a.capture, "tcp"],
                       "tcpdump.log")
        if a.net == "tap":
            # No DHCP server on the tap: give the firmware a static address over its
            # console; it applies after `save` and `reboot` (the PSRAM record survives the
            # system reset).
            # The first prompt may have gone out before we connected: an empty line
            # brings another.
            deadline = time.monotonic() + 30
            while b"> " not in self.console.text:
                if time.monotonic() > deadline:
                    fail("no console prompt")
                self.console.sock.sendall(b"\r")
                time.sleep(0.5)
            out = self.console.command(f"set address {GUEST}/24 gateway {TAP_HOST}")
            if "error" in out:
                fail(f"set address: {out}")
            out = self.console.command("save")
            if not out.startswith("saved"):
                fail(f"save: {out}")
            self.console.sock.sendall(b"reboot\r")
            deadline = time.monotonic() + 30
            while self.log("qemu.log").count("gateway up") < 1 or \
                    f"address: {GUEST}/24" not in self.log("qemu.log"):
                if time.monotonic() > deadline or self.qemu.poll() is not None:
                    fail(f"firmware did not come up on {GUEST}:\n{self.log('qemu.log')}")
                time.sleep(0.1)
        else:
            deadline = time.monotonic() + 60
            while "gateway up" not in self.log("qemu.log"):
                if time.monotonic() > deadline or self.qemu.poll() is not None:
                    fail(f"firmware did not come up:\n{self.log('qemu.log')}")
                time.sleep(0.1)
        for line in self.log("qemu.log").splitlines():
            if line.startswith(("address:", "gateway up", "config:")):
                print(f"  firmware: {line}")

    # ---- one round of parallel downloads -----------------------------------------------------

    def round(self, n):
        before, _ = stats(self.console)
        host_before = time.monotonic()
        retrans_before = host_retransmissions() if self.args.net == "tap" else None
        mark = self.console.mark()
        curls, outs = [], []
        t0 = time.monotonic()
        for i in range(n):
            out = os.path.join(self.work, f"out.{i}")
            outs.append(out)
            curls.append(subprocess.Popen(
                ["curl", "-sS", "--fail", "--max-time", "300", "--socks5", self.socks,
                 "-o", out, "-w", "%{size_download} %{time_total} %{time_connect} %{time_starttransfer}", self.url],
                stdout=subprocess.PIPE, text=True))
        # What the console lists while the downloads run.
        time.sleep(min(1.0, 0.1 + n * 0.1))
        in_progress = self.console.command("sessions")
        curl_rates, self.curl_times = [], []
        curl_times = self.curl_times
        for curl in curls:
            text, _ = curl.communicate()
            if curl.returncode != 0:
                fail(f"curl exited {curl.returncode}")
            size, seconds, connect, first = text.split()
            curl_rates.append(int(size) / float(seconds) / 1e6)
            curl_times.append((float(connect), float(first), float(seconds)))
        wall = time.monotonic() - t0
        for out in outs:
            if open(out, "rb").read() != self.blob:
                fail(f"{out} differs from the origin's file")
        self.console.wait_for(lambda t: len(SESSION_LINE.findall(t, mark)) >= n, 20,
                              f"{n} session log lines")
        lines = self.console.sessions_since(mark)
        after, stats_text = stats(self.console)
        host_after = time.monotonic()
        # The durations are the firmware's: its clock must keep time with the host's.
        clock = (after["uptime-ms"] - before["uptime-ms"]) / 1e3 / (host_after - host_before)
        self.clock = clock
        self.retransmitted = (host_retransmissions() - retrans_before
                              if retrans_before is not None else None)
        if not 0.95 < clock < 1.05:
            fail(f"the firmware's clock ran at {clock:.3f} × the host's during the round")
        if after["log-dropped"] != before["log-dropped"]:
            fail(f"the console dropped log lines: {stats_text}")
        sessions = []
        for client, up, down, ms, end in lines:
            if end != b"finished":
                fail(f"session from {client.decode()} ended {end.decode()}")
            sessions.append((int(up), int(down), int(ms)))
        if len(sessions) != n:
            fail(f"{len(sessions)} session lines for {n} downloads")
        for key, index in (("bytes-down", 1), ("bytes-up", 0)):
            if after[key] - before[key] != sum(s[index] for s in sessions):
                fail(f"stats {key} grew by {after[key] - before[key]}, the lines add up to "
                     f"{sum(s[index] for s in sessions)}")
        for down_len in (s[1] for s in sessions):
            if down_len < self.size:
                fail(f"a session relayed {down_len} bytes down, less than the file")
        return sessions, curl_rates, wall, in_progress

    def run(self):
        a = self.args
        link = (("tap" if a.net == "tap" else "user net") +
                ("" if a.delay_ms is None else f" + delay link, +{a.delay_ms:g} ms"))
        rows = []
        try:
            self.start()
            for n in a.rounds:
                sessions, curl_rates, wall, in_progress = self.round(n)
                print(f"{a.label}, {link}, {n} session(s) of {a.size_mib} MiB, "
                      f"as the console reports them:")
                for line in in_progress.splitlines():
                    print(f"  console `sessions` during the round: {line}")
                rates = []
                for i, (up, down, ms) in enumerate(sessions):
                    rate = down / ms / 1e3
                    rates.append(rate)
                    print(f"  session {i + 1}: up {up} B, down {down} B, {ms} ms: "
                          f"{rate:.3f} MB/s down")
                print("  curl (connect included): " +
                      ", ".join(f"{r:.3f}" for r in sorted(curl_rates)) + " MB/s; "
                      "connected / first byte / done at " +
                      ", ".join(f"{c:.2f}/{f:.2f}/{t:.2f}" for c, f, t in self.curl_times) + " s")
                total = sum(s[0] + s[1] for s in sessions)
                aggregate = sum(s[1] for s in sessions) / max(s[2] for s in sessions) / 1e3
                row = (f"| {a.label} | {link} | {n} | {sum(rates) / n:.3f} | "
                       f"{min(rates):.3f} / {max(rates):.3f} | {aggregate:.3f} | "
                       f"{sum(curl_rates) / n:.3f} |")
                print(f"  {total} bytes relayed; aggregate {aggregate:.3f} MB/s down; "
                      f"round {wall:.2f} s wall; firmware clock {self.clock:.3f} × host's")
                if self.retransmitted is not None:
                    print(f"  the host's TCP retransmitted {self.retransmitted} segments")
                rows.append(row)
        finally:
            self.stop()
        if a.delay_ms is not None:
            for line in self.log("delay.log").splitlines():
                if line.startswith("delay-link ") and "ready" not in line:
                    print(f"  {line}")
        if a.table:
            with open(a.table, "a") as table:
                for row in rows:
                    table.write(row + "\n")
        for row in rows:
            print(row)


def link_test(args):
    """The delay link alone: windows of `--window` bytes in 1514-byte frames towards the
    "guest" side, one 64-byte frame back once the whole window arrived."""
    g_relay, g_peer, s_relay, s_peer = (free_port(socket.SOCK_DGRAM) for _ in range(4))
    work = tempfile.mkdtemp(prefix="socksgate-link-")
    log = os.path.join(work, "delay.log")
    relay = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "delay_link.py"),
         "--guest-listen", str(g_relay), "--guest-peer", str(g_peer),
         "--net-listen", str(s_relay), "--net-peer", str(s_peer),
         "--to-guest-ms", str(args.delay_ms), "--rate-mbit", str(args.rate_mbit)],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)
    while "ready" not in open(log).read():
        time.sleep(0.05)
    guest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    guest.bind(("127.0.0.1", g_peer))
    guest.settimeout(2)
    net = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    net.bind(("127.0.0.1", s_peer))
    net.settimeout(2)
    frame = os.urandom(1514)
    frames = max(1, args.window // 1460)
    rounds, rtts = 0, []
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        start = time.monotonic()
        for _ in range(frames):
            net.sendto(frame, ("127.0.0.1", s_relay))
        for _ in range(frames):
            guest.recv(2048)
        guest.sendto(b"a" * 64, ("127.0.0.1", g_relay))
        net.recv(2048)
        rtts.append(time.monotonic() - start)
        rounds += 1
    elapsed = time.monotonic() - t0
    relay.send_signal(signal.SIGTERM)
    relay.wait()
    payload = rounds * frames * 1460
    print(f"delay link alone, +{args.delay_ms:g} ms towards the guest, "
          f"{args.rate_mbit:g} Mbit/s pacing: {rounds} windows of {frames} frames "
          f"({frames * 1460} B payload) in {elapsed:.2f} s")
    print(f"  round trip per window: mean {sum(rtts) / len(rtts) * 1e3:.2f} ms, "
          f"max {max(rtts) * 1e3:.2f} ms")
    bound = (f"; the window alone would allow {frames * 1460 / (args.delay_ms / 1e3) / 1e6:.3f}"
             f" MB/s at {args.delay_ms:g} ms" if args.delay_ms else "")
    print(f"  {payload / elapsed / 1e6:.3f} MB/s of payload (window / round trip{bound})")
    for line in open(log).read().splitlines():
        if "ready" not in line:
            print(f"  {line}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run")
    run.add_argument("--firmware", required=True)
    run.add_argument("--label", required=True)
    run.add_argument("--net", choices=("user", "tap"), default="user")
    run.add_argument("--delay-ms", type=float)
    run.add_argument("--rate-mbit", type=float, default=100.0)
    run.add_argument("--rounds", type=lambda s: [int(n) for n in s.split(",")], default=[1, 4])
    run.add_argument("--size-mib", type=int, default=1)
    run.add_argument("--table")
    run.add_argument("--capture", help="with --net tap: tcpdump the tap into this file")
    link = sub.add_parser("link")
    link.add_argument("--delay-ms", type=float, default=20.0)
    link.add_argument("--rate-mbit", type=float, default=100.0)
    link.add_argument("--window", type=int, default=16384)
    link.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    if args.mode == "link":
        link_test(args)
    else:
        Bench(args).run()


if __name__ == "__main__":
    main()
