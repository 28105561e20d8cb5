#!/usr/bin/env bash
# socksgate-embedded checks, called by the root ci.sh (which installs qemu-system-arm, curl,
# netcat-openbsd, socat, dnsmasq-base, python3-socks and the thumbv7em-none-eabihf and
# thumbv6m-none-eabi targets):
#   clippy (host and firmware, -D warnings), host tests, the three firmware builds (QEMU and
#   H743 on thumbv7em, W5500-EVB-Pico on thumbv6m), and the QEMU end-to-end tests: the
#   mps2-an386 firmware behind QEMU user-mode networking restricted to loopback forwards,
#   4 parallel curl --socks5 downloads of 1 MiB each compared byte for byte; then
#   tests/qemu_e2e.py in a network namespace of its own (tap, dnsmasq for DHCP and DNS):
#   names, RFC 1929, rules, UDP ASSOCIATE, pool exhaustion, the per-client cap, the serial
#   console, link loss, the settings record across a reset, a restart and a corrupted slot;
#   last, the same firmware built with LARGE_POOL sessions, every one held open and listed
#   by the console's `sessions`.
#
#   ./ci.sh            everything
#   ./ci.sh qemu       only the QEMU test (builds the large-pool image, then the default)
#   ./ci.sh bench      QEMU throughput as the firmware's console reports it: 1 × 10 MiB, then
#                      4 × 10 MiB in parallel (tools/qemu_bench.py)
#   ./ci.sh wan        the same with and without 20 ms of added delay, 4 KiB vs 16 KiB socket
#                      buffers, on QEMU's user network and on a tap (builds both firmware
#                      variants; see the README)
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
TARGET=thumbv7em-none-eabihf
FW_DIR=../target/$TARGET/release
# The W5500-EVB-Pico (RP2040, Cortex-M0+): its own target and HAL, behind a feature.
PICO=(--target thumbv6m-none-eabi --features w5500-pico --bin socksgate-w5500-pico --release --locked)
# The QEMU image built with more than 32 sessions, for the e2e test's `sessions` listing.
LARGE_POOL=40
LARGE_POOL_IMAGE=$FW_DIR/socksgate-mps2-$LARGE_POOL-sessions
large_pool_built=""

step() { printf '\n==== embedded: %s ====\n' "$*"; }

# The QEMU image with LARGE_POOL sessions, copied aside; the caller builds the default image
# next (the variable only changes the binary, so each build relinks just it).
build_large_pool_image() {
    SOCKSGATE_MPS2_SESSIONS=$LARGE_POOL cargo build --release --target "$TARGET" \
        --bin socksgate-mps2 --locked
    cp "$FW_DIR/socksgate-mps2" "$LARGE_POOL_IMAGE"
    large_pool_built=1
}

check() {
    step "clippy (host: library, tests, bin stubs)"
    cargo clippy -p socksgate-embedded --all-targets --locked -- -D warnings
    step "clippy (firmware)"
    # The H743 image needs `defmt` (its logs go over RTT); the QEMU image builds without.
    cargo clippy -p socksgate-embedded --target "$TARGET" --bins --release --features defmt --locked -- -D warnings
    step "host tests"
    cargo test -p socksgate-embedded --locked
    step "library with defmt (thumbv7em)"
    cargo build -p socksgate-embedded --features defmt --target "$TARGET" --lib --release --locked
    step "firmware builds"
    build_large_pool_image
    cargo build --release --target "$TARGET" --bin socksgate-mps2 --locked
    cargo build --release --target "$TARGET" --bin socksgate-h743 --features defmt --locked
    step "W5500-EVB-Pico firmware (thumbv6m-none-eabi): clippy, build, size"
    cargo clippy -p socksgate-embedded "${PICO[@]}" -- -D warnings
    cargo build -p socksgate-embedded "${PICO[@]}"
    # binutils' size (already there for the host linker) reads the ARM ELF.
    size -A ../target/thumbv6m-none-eabi/release/socksgate-w5500-pico |
        grep -E '^\.(boot2|vector_table|text|rodata|data|bss) '
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
    local kernel=$FW_DIR/socksgate-mps2
    work=$(mktemp -d)
    pids=()
    trap cleanup EXIT
    local origin_port
    origin_port=$(free_port)
    head -c 1048576 /dev/urandom >"$work/blob"
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
        timeout 600 qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic -serial none \
            -semihosting-config enable=on,target=native \
            -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$socks_port-10.0.2.15:1080,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:$origin_port" \
            -net nic,model=lan9118,netdev=n0 -kernel "$kernel" \
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
    if [ -z "$large_pool_built" ]; then
        step "QEMU images: $LARGE_POOL sessions, then the default"
        build_large_pool_image
        cargo build --release --target "$TARGET" --bin socksgate-mps2 --locked
    fi
    step "QEMU mps2-an386 end-to-end"
    qemu_start
    # The firmware's default is DHCP: the lease must come from QEMU's user network (slirp's
    # built-in server hands out 10.0.2.15; with restrict=on it offers no router or DNS),
    # printed at boot.
    local lease=""
    for _ in $(seq 50); do
        lease=$(grep -m1 "^address: 10.0.2.15/24 " "$work/qemu.log" || true)
        [ -n "$lease" ] && break
        sleep 0.1
    done
    [ -n "$lease" ] || { echo "no DHCP lease from QEMU's user network in the boot log" >&2; return 1; }
    echo "DHCP from QEMU's user network: $lease"
    local round ended
    for round in 1 2 3; do
        parallel_downloads 4 blob
        echo "round $round: 4 parallel sessions, 1 MiB each, identical"
        # curl is done once it has the last byte; the gateway's session ends a moment later
        # (its FIN exchange on both sides). The gateway holds 4 sessions and refuses a fifth
        # with a reset, so the next round waits until this round's sessions have ended.
        for _ in $(seq 100); do
            ended=$(grep -c "^session .* end=" "$work/qemu.log" || true)
            [ "$ended" -ge $((4 * round)) ] && break
            sleep 0.1
        done
    done
    # Every session must have ended with FIN both ways (the firmware reports each one).
    local finished=0
    for _ in $(seq 100); do
        finished=$(grep -c "^session .* end=finished" "$work/qemu.log" || true)
        [ "$finished" -ge 12 ] && break
        sleep 0.1
    done
    grep "^session " "$work/qemu.log" | sed 's/^/  firmware: /' | head -4
    [ "$finished" -ge 12 ] || { echo "only $finished of 12 sessions closed in order" >&2; return 1; }
    echo "12 of 12 sessions closed in order (FIN both ways)"
    cleanup
    step "QEMU mps2-an386: settings, console, DHCP, DNS, auth, rules, UDP (tests/qemu_e2e.py)"
    unshare -n -- timeout 180 /usr/bin/python3 tests/qemu_e2e.py "$FW_DIR/socksgate-mps2" \
        "$LARGE_POOL_IMAGE"
}

# Throughput figures for the README (not part of `all`): tools/qemu_bench.py reads each
# session's bytes and duration from the firmware's console (its session log lines and
# `stats`), every download compared byte for byte.
bench_header() {
    echo
    echo "| socket buffers | link | sessions | per session, mean (MB/s) | slowest / fastest | aggregate (MB/s) | curl's figure, mean (MB/s) |"
    echo "|---|---|---|---|---|---|---|"
}

qemu_bench() {
    step "QEMU mps2-an386 throughput, as the console reports it"
    local table
    table=$(mktemp)
    python3 tools/qemu_bench.py run --firmware "$FW_DIR/socksgate-mps2" --label "4 KiB" \
        --rounds 1,4 --size-mib 10 --table "$table"
    bench_header
    cat "$table"
    rm -f "$table"
}

# Socket-buffer (window) sizes against link delay, for the README (not part of `all`): the
# QEMU firmware built with 4 KiB and with 16 KiB socket buffers, each on QEMU's user network
# (libslirp) directly, through the delay link at 0 ms (its own cost) and at 20 ms, and on a
# tap in a namespace of its own (the host's TCP stack instead of libslirp's) directly and at
# 20 ms; 1 and 4 parallel downloads (10 MiB each on direct links, 1 MiB on delayed ones).
# First the delay link alone, between two host sockets.
qemu_wan_bench() {
    step "the delay link alone (tools/qemu_bench.py link)"
    python3 tools/qemu_bench.py link --delay-ms 20 --window 16384
    python3 tools/qemu_bench.py link --delay-ms 20 --window 4096
    step "QEMU mps2-an386: socket buffers against 20 ms of added delay"
    local images buf table
    images=$(mktemp -d)
    table=$images/table
    # The default (4 KiB) last and without the variable: the build directory ends up holding
    # the ordinary image again.
    for buf in 16384 default; do
        if [ "$buf" = default ]; then
            cargo build --release --target "$TARGET" --bin socksgate-mps2 --locked
            buf=4096
        else
            SOCKSGATE_MPS2_SOCKET_BUF=$buf cargo build --release --target "$TARGET" \
                --bin socksgate-mps2 --locked
        fi
        cp "$FW_DIR/socksgate-mps2" "$images/socksgate-mps2-$buf"
    done
    local run=(python3 tools/qemu_bench.py run --table "$table")
    for buf in 4096 16384; do
        local fw=(--firmware "$images/socksgate-mps2-$buf" --label "$((buf / 1024)) KiB")
        "${run[@]}" "${fw[@]}" --size-mib 10
        "${run[@]}" "${fw[@]}" --size-mib 1 --delay-ms 0
        "${run[@]}" "${fw[@]}" --size-mib 1 --delay-ms 20
        unshare -n -- "${run[@]}" "${fw[@]}" --net tap --size-mib 10
        unshare -n -- "${run[@]}" "${fw[@]}" --net tap --size-mib 1 --delay-ms 20
    done
    bench_header
    cat "$table"
    rm -rf "$images"
}

case "${1:-all}" in
    all) check; qemu_e2e ;;
    qemu) qemu_e2e ;;
    bench) qemu_bench ;;
    wan) qemu_wan_bench ;;
    *) echo "usage: $0 [all|qemu|bench|wan]" >&2; exit 2 ;;
esac
