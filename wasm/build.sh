#!/usr/bin/env bash
# Builds the inspector page into wasm/www/pkg (release wasm + wasm-bindgen --target web).
# Needs wasm-bindgen-cli at the version of wasm-bindgen in Cargo.lock (wasm/ci.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -p socksgate-wasm --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir wasm/www/pkg \
    target/wasm32-unknown-unknown/release/socksgate_wasm.wasm
ls -l wasm/www/pkg
