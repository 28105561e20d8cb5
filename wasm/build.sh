#!/usr/bin/env bash
# Builds the npm package socksgate-wasm into wasm/www/pkg — the page loads it from there, and
# the same directory runs in workerd, Node 20+ and Deno (see wasm/README.md, "Package"):
# release wasm, `wasm-bindgen --target web` (with TypeScript declarations), then the runtime
# entries, the stream helper and package.json from wasm/package/.
# Needs wasm-bindgen-cli at the version of wasm-bindgen in Cargo.lock (wasm/ci.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -p socksgate-wasm --target wasm32-unknown-unknown
OUT=wasm/www/pkg
rm -rf "$OUT"
wasm-bindgen --target web --out-dir "$OUT" \
    target/wasm32-unknown-unknown/release/socksgate_wasm.wasm
cp wasm/package/node.js wasm/package/workerd.js wasm/package/ready.d.ts \
    wasm/package/stream.js wasm/package/stream.d.ts "$OUT/"
VERSION=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version/ { print $2; exit }' Cargo.toml)
LICENSE=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^license/ { print $2; exit }' Cargo.toml)
sed -e "s/@VERSION@/$VERSION/" -e "s/@LICENSE@/$LICENSE/" wasm/package/package.json > "$OUT/package.json"
ls -l "$OUT"
