#!/usr/bin/env bash
# wasm/ci.sh — the browser face of the inspector. The root ci.sh runs it after the workspace
# tests. Installs its pinned tools if missing (wasm-bindgen-cli at the exact wasm-bindgen
# version of Cargo.lock; playwright-core, workerd and deno from package-lock.json — never a
# browser: Debian's /usr/bin/chromium is used), builds the page and package, runs the
# wasm-bindgen tests under Node, the end-to-end Playwright test, and the package in Node,
# Deno, Chromium and workerd (e2e/runtimes.mjs).
#
#   SOCKSGATE_CI_SOAK=1   also generate a ~200 MB capture and measure MB/s natively and in Chromium,
#                         and run the figures benchmark (e2e/bench.mjs: tshark beside the CLI,
#                         Chromium and workerd, time and memory)
set -euo pipefail
cd "$(dirname "$0")"
WASM_DIR=$PWD
ROOT=$(cd .. && pwd)
step() { printf '\n---- wasm: %s ----\n' "$*"; }

step "tools"
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WB_VERSION"; then
    # `--locked` first; if the registry mirror lacks a locked transitive version (seen:
    # webpki-roots 1.0.11 of ureq), fall back to fresh resolution of the same CLI version.
    cargo install --locked wasm-bindgen-cli --version "$WB_VERSION" \
        || cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi
echo "wasm-bindgen $WB_VERSION"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund --loglevel=error

step "build the page (wasm/www/pkg)"
./build.sh

step "wasm-bindgen tests under node"
(cd "$ROOT" && CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test --locked -p socksgate-wasm --target wasm32-unknown-unknown)

step "end-to-end (playwright-core + /usr/bin/chromium; the CLI re-opens the exported pcap)"
(cd "$ROOT" && cargo build --locked -q -p socksgate --bin socksgate)
SOCKSGATE_BIN="$ROOT/target/debug/socksgate" node e2e/e2e.mjs

step "the package in node, deno, chromium and workerd; the edge example (150 MiB streamed POST)"
SOCKSGATE_BIN="$ROOT/target/debug/socksgate" node e2e/runtimes.mjs

if [ "${SOCKSGATE_CI_SOAK:-0}" = 1 ]; then
    step "throughput on a ~200 MB synthetic capture"
    BIG=$(mktemp --suffix=.pcap)
    trap 'rm -f "$BIG"' EXIT
    (cd "$ROOT" && cargo run --locked --release -q -p socksgate-inspect --example synth -- "$BIG" 200)
    (cd "$ROOT" && cargo run --locked --release -q -p socksgate-inspect --example inspect_file -- "$BIG" --quiet)
    node e2e/e2e.mjs --bench "$BIG"
    step "figures: tshark, the CLI, Chromium and workerd on ~200 MB with payload and on 220k handshake-only connections"
    (cd "$ROOT" && cargo build --locked --release -q -p socksgate --bin socksgate)
    SOCKSGATE_BIN="$ROOT/target/release/socksgate" node e2e/bench.mjs --generate
fi
step "wasm/ci.sh: all checks passed"
