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
#   console, link loss, the settings record across a reset, a restart and a corrupted slot.
#
#   ./ci.sh            everything
#   ./ci.sh qemu       only the QEMU test (after a firmware build)
#   ./ci.sh bench      QEMU throughput: 1 × 10 MiB, then 4 × 10 MiB in parallel
#   ./ci.sh wan        QEMU throughput over a link with 20 ms of added delay, 4 KiB vs 16 KiB
#                      socket buffers (builds both firmware variants; see the README)
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
TARGET=thumbv7em-none-eabihf
FW_DIR=../target/$TARGET/release
# The W5500-EVB-Pico (RP2040, Cortex-M0+): its own target and HAL, behind a feature.
PICO=(--target thumbv6m-none-eabi --features w5500-pico --bin socksgate-w5500-pico --release --locked)

step() { printf '\n==== embedded: %s ====\n' "$*"; }

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
relay_pid=""
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

free_udp_port() {
    python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Boots the firmware behind QEMU user-mode networking restricted to loopback forwards:
# a local HTTP origin serves $work (reached by the guest as 10.0.2.100:80 through one socat
# per connection), the SOCKS port is forwarded to 127.0.0.1:$socks_port.
#   $1: firmware image (default: the socksgate-mps2 build)
#   $2: if set, milliseconds of delay added to every frame towards the guest: the NIC and
#       the user network are then two UDP socket netdevs joined by tools/delay_link.py
#       (this kernel has no sch_netem for `tc netem`); its hold-time report goes to
#       $work/delay.log when the QEMU is stopped.
qemu_start() {
    local kernel=${1:-$FW_DIR/socksgate-mps2} delay_ms=${2:-}
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
    local attempt qemu_pid link=()
    for attempt in 1 2 3; do
        socks_port=$(free_port)
        if [ -n "$delay_ms" ]; then
            # NIC <-> socket g0 <-> delay_link.py <-> socket s0 <-> hub 1 <-> user network n0
            local g_relay g_qemu s_relay s_qemu
            g_relay=$(free_udp_port) g_qemu=$(free_udp_port)
            s_relay=$(free_udp_port) s_qemu=$(free_udp_port)
            python3 tools/delay_link.py --guest-listen "$g_relay" --guest-peer "$g_qemu" \
                --net-listen "$s_relay" --net-peer "$s_qemu" --to-guest-ms "$delay_ms" \
                >"$work/delay.log" 2>&1 &
            relay_pid=$!
            pids+=("$relay_pid")
            for _ in $(seq 50); do
                grep -q "delay-link ready" "$work/delay.log" && break
                sleep 0.1
            done
            link=(-netdev "socket,id=g0,udp=127.0.0.1:$g_relay,localaddr=127.0.0.1:$g_qemu"
                -net nic,model=lan9118,netdev=g0
                -netdev "socket,id=s0,udp=127.0.0.1:$s_relay,localaddr=127.0.0.1:$s_qemu"
                -netdev hubport,id=h0,hubid=1,netdev=n0 -netdev hubport,id=h1,hubid=1,netdev=s0)
        else
            link=(-net nic,model=lan9118,netdev=n0)
        fi
        timeout 600 qemu-system-arm -M mps2-an386 -cpu cortex-m4 -nographic -serial none \
            -semihosting-config enable=on,target=native \
            -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$socks_port-10.0.2.15:1080,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:$origin_port" \
            "${link[@]}" -kernel "$kernel" \
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
        finished=$(grep -c "^session .* end=finished" "$work/qemu.log" || true)
        [ "$finished" -ge 12 ] && break
        sleep 0.1
    done
    grep "^session " "$work/qemu.log" | sed 's/^/  firmware: /' | head -4
    [ "$finished" -ge 12 ] || { echo "only $finished of 12 sessions closed in order" >&2; return 1; }
    echo "12 of 12 sessions closed in order (FIN both ways)"
    cleanup
    step "QEMU mps2-an386: settings, console, DHCP, DNS, auth, rules, UDP (tests/qemu_e2e.py)"
    unshare -n -- timeout 120 /usr/bin/python3 tests/qemu_e2e.py "$FW_DIR/socksgate-mps2"
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

# $1 parallel downloads of file $2 (each compared byte for byte); appends one table row to
# $4: label $3, per-session throughput (mean, slowest, fastest) and the aggregate, in MB/s.
wan_row() {
    local n=$1 file=$2 label=$3 table=$4 t0 t1
    t0=$(date +%s.%N)
    parallel_downloads "$n" "$file" | tee "$work/speeds"
    t1=$(date +%s.%N)
    python3 - "$n" "$label" "$t0" "$t1" "$work/speeds" >>"$table" <<'PY'
import re, sys
n, label, t0, t1, path = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rows = [re.search(r"(\d+) bytes in ([\d.]+) s", line) for line in open(path)]
rates = [int(m[1]) / float(m[2]) / 1e6 for m in rows if m]
assert len(rates) == n, rates
total = sum(int(m[1]) for m in rows if m)
print(f"| {label} | {n} | {sum(rates) / n:.3f} | {min(rates):.3f} / {max(rates):.3f} "
      f"| {total / (t1 - t0) / 1e6:.3f} |", flush=True)
PY
}

# Socket-buffer (window) sizes against link delay, for the README (not part of `all`): the
# QEMU firmware built with 4 KiB and with 16 KiB socket buffers, each run on the plain
# user network, through the delay relay at 0 ms (its own cost) and at 20 ms, with 1 and 4
# parallel downloads (1 MiB each on the delayed links, 10 MiB on the plain one).
qemu_wan_bench() {
    step "QEMU mps2-an386: socket buffers against 20 ms of added delay"
    local images buf delay file n label
    images=$(mktemp -d)
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
    for buf in 4096 16384; do
        for delay in none 0 20; do
            if [ "$delay" = none ]; then
                qemu_start "$images/socksgate-mps2-$buf"
                file=blob10
            else
                qemu_start "$images/socksgate-mps2-$buf" "$delay"
                file=blob
            fi
            for n in 1 4; do
                label="$((buf / 1024)) KiB | $([ "$delay" = none ] && echo "direct" || echo "relay, +$delay ms")"
                wan_row "$n" "$file" "$label" "$images/table"
                tail -1 "$images/table"
            done
            if [ -n "$relay_pid" ]; then
                kill "$relay_pid" 2>/dev/null || true
                wait "$relay_pid" 2>/dev/null || true
                relay_pid=""
                sed 's/^/  /' "$work/delay.log"
            fi
            cleanup
        done
    done
    echo
    echo "| socket buffers | link | sessions | per session, mean (MB/s) | slowest / fastest | aggregate (MB/s) |"
    echo "|---|---|---|---|---|---|"
    cat "$images/table"
    rm -rf "$images"
}

case "${1:-all}" in
    all) check; qemu_e2e ;;
    qemu) qemu_e2e ;;
    bench) qemu_bench ;;
    wan) qemu_wan_bench ;;
    *) echo "usage: $0 [all|qemu|bench|wan]" >&2; exit 2 ;;
esac
