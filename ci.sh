#!/usr/bin/env bash
# socksgate's one test command: README and .ci/run call it.
#
# On a fresh Debian 12 machine (as root) it first installs what is missing, then runs:
# formatting, clippy, rustdoc with warnings denied, every test (unit, property, doc,
# interop), the core's no_std builds (thumbv7em-none-eabihf, wasm32) with a proof that
# `alloc` is unreachable from it, the front ends' own checks (wasm/ci.sh, embedded/ci.sh,
# tests/ci.sh, native/ci.sh: the Debian package installed, run and purged) and a fuzz smoke
# run.
#
#   ./ci.sh                 everything above
#   SOCKSGATE_FUZZ_SECS=N   seconds per fuzz target (default 20; 0 skips fuzzing)
#   SOCKSGATE_CI_SOAK=1     also the long soak/benchmark variants (front-end scripts read it)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
export CARGO_TERM_COLOR=never
export FUZZ_SECS=${SOCKSGATE_FUZZ_SECS:-20}

CARGO_FUZZ_VERSION=0.13.2
APT_PACKAGES=(curl python3 python3-socks ncat proxychains4 dante-server dante-client microsocks
    tshark iperf3 qemu-system-arm socat netcat-openbsd chromium procps iproute2 util-linux perl
    haproxy iptables adduser systemd stunnel4 openssl tcpdump zstd dnsmasq-base wget openssh-client
    openssh-server bind9-dnsutils tnftp python3-pyftpdlib
    # GSS-API: the tests' KDC, kadmin.local and kinit, the python3-gssapi client; the binding's
    # build (libgssapi-sys) needs the krb5 headers and bindgen's libclang.
    krb5-kdc krb5-user krb5-admin-server libkrb5-dev python3-gssapi libclang-dev pkg-config)

step() { printf '\n==== %s ====\n' "$*"; }

install_missing() {
    step "install"
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "apt: installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    # Node 20 and npm come with the machine image (Debian's npm conflicts with its nodejs).
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "error: node and npm are required (the wasm page's end-to-end test)" >&2
        exit 1
    fi
    install_backports_curl
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
    rustup target add wasm32-unknown-unknown thumbv7em-none-eabihf thumbv6m-none-eabi
    if rustup toolchain list | grep -q '^nightly'; then
        rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || true
    fi
    if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
    fi
}

# Debian's bookworm-backports curl 8.14.1 beside the system's 7.88.1: tests/tests/gssapi.rs
# shows that both refuse a proxy that selects GSS-API (same SOCKS5 code). Its curl and
# libcurl4 packages are unpacked (dpkg -x) into BACKPORTS_CURL_ROOT and run with
# LD_LIBRARY_PATH pointing at that libcurl, so /usr/bin/curl stays the system's 7.88.1. apt reads
# a private sources list and state directory: the machine's apt configuration is not changed.
BACKPORTS_CURL_ROOT=/opt/socksgate-tests/curl-bookworm-backports
BACKPORTS_CURL_VERSION=8.14.1
install_backports_curl() {
    local lib="$BACKPORTS_CURL_ROOT/usr/lib/x86_64-linux-gnu"
    local curl="$BACKPORTS_CURL_ROOT/usr/bin/curl"
    if [ -x "$curl" ] && LD_LIBRARY_PATH="$lib" "$curl" --version 2>/dev/null \
            | grep -q "^curl $BACKPORTS_CURL_VERSION .*libcurl/$BACKPORTS_CURL_VERSION"; then
        return 0
    fi
    echo "curl $BACKPORTS_CURL_VERSION: fetching bookworm-backports' curl and libcurl4"
    local work
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
        "http://deb.debian.org/debian bookworm-backports main" >"$work/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
        -o APT::Sandbox::User=root)   # the private directory is root's only
    apt-get "${apt_opts[@]}" update -qq
    local version
    version=$(apt-cache "${apt_opts[@]}" show --no-all-versions libcurl4 \
        | sed -n 's/^Version: //p' | head -n1)
    case "$version" in
        "$BACKPORTS_CURL_VERSION"-*) ;;
        *)
            echo "error: bookworm-backports has libcurl4 '$version', the tests expect" \
                "$BACKPORTS_CURL_VERSION (its GSS-API messages are asserted)" >&2
            exit 1
            ;;
    esac
    (cd "$work/debs" && apt-get "${apt_opts[@]}" download "curl=$version" "libcurl4=$version")
    for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
    # Its libraries (OpenSSL, MIT krb5's GSS-API, nghttp2, ...) are bookworm's, installed with
    # the system curl; a missing one fails here rather than in a test.
    if LD_LIBRARY_PATH="$work/root/usr/lib/x86_64-linux-gnu" ldd "$work/root/usr/bin/curl" \
            | grep "not found"; then
        echo "error: bookworm-backports curl: libraries missing (above)" >&2
        exit 1
    fi
    rm -rf "$BACKPORTS_CURL_ROOT"
    mkdir -p "$(dirname "$BACKPORTS_CURL_ROOT")"
    mv "$work/root" "$BACKPORTS_CURL_ROOT"
    rm -rf "$work"
    LD_LIBRARY_PATH="$lib" "$curl" --version | head -n1
}

check_style() {
    step "fmt"
    cargo fmt --all --check
    step "clippy"
    cargo clippy --all-targets --locked -- -D warnings   # default-members; embedded/ci.sh covers firmware
    step "rustdoc"
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked   # broken links in doc comments
}

test_workspace() {
    step "test"
    cargo test --locked                                   # default-members
}

check_core_no_std() {
    step "core: no_std builds"
    cargo build -p socksgate-core --locked --target thumbv7em-none-eabihf
    cargo build -p socksgate-core --locked --target thumbv7em-none-eabihf --features defmt
    cargo build -p socksgate-core --locked --target wasm32-unknown-unknown
    step "core: alloc is unreachable"
    # Build core against a sysroot that contains only `core`: any crate in its dependency
    # tree that links `alloc` (under any feature we enable) fails to compile here.
    if rustup component list --toolchain nightly --installed 2>/dev/null | grep -q rust-src; then
        cargo +nightly build -p socksgate-core --locked --target thumbv7em-none-eabihf \
            -Zbuild-std=core --target-dir target/core-only-sysroot
        echo "socksgate-core builds with a core-only sysroot: no alloc"
    else
        echo "error: the nightly toolchain with rust-src is required for the alloc check" >&2
        exit 1
    fi
}

run_frontend_scripts() {
    # native/ci.sh after tests/ci.sh: it packages the release build that one makes.
    for script in wasm/ci.sh embedded/ci.sh tests/ci.sh native/ci.sh; do
        if [ -x "$script" ]; then
            step "$script"
            "$ROOT/$script"
        fi
    done
}

fuzz_smoke() {
    [ "$FUZZ_SECS" != 0 ] || { echo "fuzzing skipped"; return; }
    step "fuzz smoke (${FUZZ_SECS}s per target)"
    for dir in core/fuzz inspect/fuzz; do
        (cd "$dir" && for target in $(cargo +nightly fuzz list); do
            echo "-- $dir: $target"
            cargo +nightly fuzz run "$target" -- -max_total_time="$FUZZ_SECS" -rss_limit_mb=2048 \
                2>&1 | tail -n 3
            test "${PIPESTATUS[0]}" -eq 0
        done)
    done
}

install_missing
check_style
test_workspace
check_core_no_std
run_frontend_scripts
fuzz_smoke
step "ci.sh: all checks passed"
