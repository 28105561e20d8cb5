#!/usr/bin/env bash
# tests/ front-end checks, run by the root ci.sh after the workspace tests.
#
# Benchmark smoke run: builds socksgate and socksbench in release mode and runs
# `socksbench --quick` (a few seconds of each measurement against a direct connection,
# Dante and microsocks). It fails only if a measurement breaks (wrong bytes, a SOCKS
# failure, a proxy exiting), not when a performance target is missed. As root it runs in a
# network namespace of its own with TCP congestion control cubic (reno where the host does
# not allow cubic in namespaces); where it cannot create one, it says so and measures on the
# host's loopback instead. The full benchmark and its latest table are in tests/README.md
# ("Benchmark").
set -euo pipefail
cd "$(dirname "$0")/.."

printf '\n==== tests/ci.sh: socksbench --quick ====\n'
cargo build --release --locked -p socksgate --bin socksgate
cargo build --release --locked -p socksgate-tests --bin socksbench
# In its own process group, so a timeout takes the proxies it started down with it.
setsid target/release/socksbench --quick &
bench=$!
for _ in $(seq 180); do
    kill -0 "$bench" 2>/dev/null || break
    sleep 1
done
if kill -0 "$bench" 2>/dev/null; then
    echo "socksbench --quick: still running after 180 s; stopping it and its proxies" >&2
    kill -TERM -- "-$bench" 2>/dev/null || true
fi
wait "$bench"
