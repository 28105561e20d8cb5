#!/usr/bin/env bash
# socksgate-embedded checks, called by the root ci.sh (which installs qemu-system-arm, curl,
# netcat-openbsd, socat and the thumbv7em-none-eabihf target):
#   clippy (host and firmware, -D warnings), host tests, both firmware builds, and the QEMU
#   end-to-end test: the mps2-an386 firmware behind QEMU user-mode networking restricted to
#   loopback forwards, 4 parallel curl --socks5 downloads of 1 MiB each compared byte for byte.
#
#   ./ci.sh            everything
#   ./ci.sh qemu       only the QEMU test (after a firmware build)
#   ./ci.sh bench      QEMU throughput: 1 × 10 MiB, then 4 × 10 MiB in parallel
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
TARGET=thumbv7em-none-eabihf
FW_DIR=../target/$TARGET/release

step() { printf '\n==== embedded: %s ====\n' "$*"; }

check() {
    step "clippy (host: library, tests, bin stubs)"
    cargo clippy -p socksgate-embedded --all-targets --locked -- -D warnings
    step "clippy (firmware)"
    cargo clippy -p socksgate-embedded --target "$TARGET" --bins --release --locked -- -D warnings
    step "host tests"
    cargo test -p socksgate-embedded --locked
    step "library with defmt (thumbv7em)"
    cargo build -p socksgate-embedded --features defmt --target "$TARGET" --lib --release --locked
    step "firmware builds"
    for bin in socksgate-mps2 socksgate-h743; do
        cargo build --release --target "$TARGET" --bin "$bin" --locked
    done
}

work=""
socks_port=""
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
    [ -z "$work" ] || rm -rf "$work"
    work=""
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Boots the firmware behind QEMU user-mode networking restricted to loopback forwards:
# a local HTTP origin serves $work (reached by the guest as 10.0.2.100:80 through one socat
# per connection), the SOCKS port is forwarded to 127.0.0.1:$socks_port.
qemu_start() {
    work=$(mktemp -d)
    pids=()
    trap cleanup EXIT
    local origin_port
    origin_port=$(free_port)
    head -c 1048576 /dev/urandom >"$work/blob"
    head -c 10485760 /dev/urandom >"$work/blob10"
    python3 -m http.server --bind 127.0.0.1 --directory "$work" "$origin_port" \
        >"$work/origin.log" 2>&1 &
    pids+=($!)
    # The origin must listen before the first guest connection: slirp runs the guestfwd
    # command with the connection as stdin/stdout/stderr, so a failing socat's error text
    # would reach the client as a response.
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$origin_port/blob" && break
        sleep 0.1
    done
    # guestfwd: one socat per upstream connection; socat passes the origin's FIN on
    # (netcat-openbsd would keep the guest connection open after the origin closed).
    # The forward port is picked free but may be taken meanwhile on a shared machine: retry.
    local attempt qemu_pid
    for attempt in 1 2 3; do
        socks_port=$(free_port)
        timeout 300 qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic \
            -semihosting-config enable=on,target=native \
            -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$socks_port-10.0.2.15:1080,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:$origin_port" \
            -net nic,model=lan9118,netdev=n0 -kernel "$FW_DIR/socksgate-mps2" \
            >"$work/qemu.log" 2>&1 &
        qemu_pid=$!
        pids+=("$qemu_pid")
        for _ in $(seq 100); do
            grep -q "gateway up" "$work/qemu.log" && break
            kill -0 "$qemu_pid" 2>/dev/null || break
            sleep 0.1
        done
        grep -q "gateway up" "$work/qemu.log" && break
        cat "$work/qemu.log"
        kill "$qemu_pid" 2>/dev/null || true
        echo "QEMU start attempt $attempt failed" >&2
    done
    grep -q "gateway up" "$work/qemu.log" || { echo "firmware did not come up" >&2; return 1; }
    cat "$work/qemu.log"
}

# $1 parallel downloads of file $2 through the gateway, each compared byte for byte.
parallel_downloads() {
    local n=$1 file=$2 i curls=()
    for i in $(seq "$n"); do
        curl -sS --fail --max-time 60 --socks5 "127.0.0.1:$socks_port" -o "$work/out.$i" \
            -w "  session $i: %{size_download} bytes in %{time_total} s (%{speed_download} B/s)\n" \
            "http://10.0.2.100/$file" &
        curls+=($!)
    done
    for i in "${!curls[@]}"; do wait "${curls[$i]}"; done
    for i in $(seq "$n"); do cmp "$work/$file" "$work/out.$i"; done
}

qemu_e2e() {
    step "QEMU mps2-an386 end-to-end"
    qemu_start
    local round
    for round in 1 2 3; do
        parallel_downloads 4 blob
        echo "round $round: 4 parallel sessions, 1 MiB each, identical"
    done
    # Every session must have ended with FIN both ways (the firmware reports each one).
    local finished=0
    for _ in $(seq 100); do
        finished=$(grep -c "session: Relayed(Finished)" "$work/qemu.log" || true)
        [ "$finished" -ge 12 ] && break
        sleep 0.1
    done
    sed -n 's/^session: /  firmware: session /p' "$work/qemu.log" | sort | uniq -c
    [ "$finished" -ge 12 ] || { echo "only $finished of 12 sessions closed in order" >&2; return 1; }
    echo "12 of 12 sessions closed in order (FIN both ways)"
    cleanup
}

# Throughput figures for the README (not part of `all`).
qemu_bench() {
    step "QEMU mps2-an386 throughput"
    qemu_start
    local t0 t1
    echo "1 session, 10 MiB:"
    parallel_downloads 1 blob10
    echo "4 sessions, 10 MiB each:"
    t0=$(date +%s.%N)
    parallel_downloads 4 blob10
    t1=$(date +%s.%N)
    python3 -c "print(f'  aggregate: {4 * 10485760 / ($t1 - $t0) / 1e6:.2f} MB/s over {$t1 - $t0:.2f} s')"
    cleanup
}

case "${1:-all}" in
    all) check; qemu_e2e ;;
    qemu) qemu_e2e ;;
    bench) qemu_bench ;;
    *) echo "usage: $0 [all|qemu|bench]" >&2; exit 2 ;;
esac
