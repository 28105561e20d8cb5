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
    install_debian_curls
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
    rustup target add wasm32-unknown-unknown thumbv7em-none-eabihf thumbv6m-none-eabi
    if rustup toolchain list | grep -q '^nightly'; then
        rustup component add rust-src --toolchain nightly >/dev/null 2>&1 || true
    fi
    if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
    fi
}

# Two more Debian curls beside the system's 7.88.1 (/usr/bin/curl, untouched), for the GSS-API
# tests (tests/tests/gssapi.rs, tests/src/tools.rs `debian_curl`): bookworm-backports' 8.14.1,
# which refuses a proxy that selects GSS-API like 7.88.1, and trixie-backports' (8.17.0 or
# later), which gets through. Each is unpacked (dpkg -x) into its own directory: 8.14.1's curl and libcurl4
# run on bookworm's libraries (LD_LIBRARY_PATH), the newer one comes with every library it needs
# from trixie, glibc included (run through that glibc's loader). apt reads a private sources
# list, state and cache directory: the machine's apt configuration is not changed.
# VERSION is the upstream version the tests assert: exactly it, or it or later with or-later
# (a suite that follows curl's releases).
curl_version_fits() { # HAVE VERSION exact|or-later
    if [ "$3" = or-later ]; then
        dpkg --compare-versions "$1" ge "$2"
    else
        [ "$1" = "$2" ]
    fi
}
debian_curl_version_ok() { # ROOT VERSION exact|or-later
    local lib="$1/usr/lib/x86_64-linux-gnu" run=("$1/usr/bin/curl")
    [ -x "$1/usr/bin/curl" ] || return 1
    if [ -e "$lib/ld-linux-x86-64.so.2" ]; then
        run=("$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$1/usr/bin/curl")
    fi
    local out   # whole, not piped into grep -q (an early exit would be SIGPIPE under pipefail)
    out=$(LD_LIBRARY_PATH="$lib" "${run[@]}" --version 2>/dev/null) || return 1
    local have
    have=$(sed -n '1s/^curl \([0-9.]*\) .* libcurl\/\1 .*/\1/p' <<<"$out")
    [ -n "$have" ] && curl_version_fits "$have" "$2" "$3"
}
install_debian_curl() { # ROOT VERSION exact|or-later SUITE with_deps(yes|no) SOURCES_SUITES...
    local root=$1 version=$2 match=$3 suite=$4 with_deps=$5
    shift 5
    debian_curl_version_ok "$root" "$version" "$match" && return 0
    echo "curl $version: fetching it from $suite"
    local work
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/root"
    : >"$work/status"
    for s in "$@"; do
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
            "http://deb.debian.org/debian $s main"
    done >"$work/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
        -o "APT::Default-Release=$suite"
        -o APT::Sandbox::User=root)   # the private directory is root's only
    apt-get "${apt_opts[@]}" update -qq
    local have
    have=$(apt-cache "${apt_opts[@]}" policy curl | sed -n 's/^ *Candidate: //p')
    if ! curl_version_fits "${have%%-*}" "$version" "$match"; then
        echo "error: $suite has curl '$have', the tests expect $version ($match; its" \
            "messages are asserted)" >&2
        exit 1
    fi
    if [ "$with_deps" = yes ]; then
        # Every package curl needs, as if on an empty system (private, empty dpkg status).
        apt-get "${apt_opts[@]}" -o "Dir::State::status=$work/status" -o Debug::NoLocking=1 \
            install -y -qq --download-only --no-install-recommends "curl=$have"
    else
        (cd "$work/cache/archives" && apt-get "${apt_opts[@]}" download "curl=$have" "libcurl4=$have")
    fi
    for deb in "$work"/cache/archives/*.deb; do dpkg -x "$deb" "$work/root"; done
    rm -rf "$root"
    mkdir -p "$(dirname "$root")"
    mv "$work/root" "$root"
    rm -rf "$work"
    # A missing library fails here rather than in a test.
    if ! debian_curl_version_ok "$root" "$version" "$match"; then
        echo "error: $root/usr/bin/curl does not run as curl $version:" >&2
        LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu" ldd "$root/usr/bin/curl" >&2 || true
        exit 1
    fi
}
install_debian_curls() {
    install_debian_curl /opt/socksgate-tests/curl-bookworm-backports 8.14.1 exact \
        bookworm-backports no bookworm-backports
    # From 8.17.0 on: curl's reworked SOCKS5 code (8.21.0 when the tests were written).
    install_debian_curl /opt/socksgate-tests/curl-trixie-backports 8.17.0 or-later \
        trixie-backports yes trixie trixie-backports
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
