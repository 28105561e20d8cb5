#!/usr/bin/env bash
# native/ front-end checks, run by the root ci.sh after tests/ci.sh (whose release build of
# socksgate this reuses).
#
# The Debian package, for real on this machine (as root, with dpkg): builds it with the
# pinned cargo-deb (man pages and completions from `--example gen-docs`), installs it with
# `dpkg -i`, checks what it put where (binary, units, conffile and its permissions, man
# pages, completions, the system user), runs `systemd-analyze verify` on the units, runs the
# packaged `check-config` on the packaged config (and on it with every commented example
# enabled), starts the packaged binary with it as user socksgate (no systemd needed),
# proxies one curl request to a loopback origin (and one `socksify curl`), stops it; then reinstalls it (as an upgrade
# would), removes it (the config stays), purges it and checks that nothing it made is left. The packaged config listens on 127.0.0.1:1080: that port
# must be free. A socksgate package already installed on this machine is purged first.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CONFIG=/etc/socksgate/socksgate.toml
UNITS=/usr/lib/systemd/system
PROXY=127.0.0.1:1080

step() { printf '\n==== native/ci.sh: %s ====\n' "$*"; }
fail() {
    echo "native/ci.sh: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    fail "must run as root (it installs and purges the package)"
fi
for tool in dpkg adduser curl python3 setpriv systemd-analyze ss; do
    command -v "$tool" >/dev/null || fail "$tool is required"
done
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

step "build the package"
cargo build --release --locked -p socksgate --bin socksgate
cargo build --release --locked -p socksgate-socksify   # the library socksify preloads
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo run --locked -q -p socksgate --example gen-docs -- "$target_dir/release/docs"
deb=$(cargo deb -p socksgate --no-build --locked --output "$target_dir/debian/" | tail -n 1)
[ -f "$deb" ] || fail "cargo deb printed no package path: $deb"
echo "$deb"

step "install"
if dpkg-query -W -f='${Status}' socksgate 2>/dev/null | grep -q installed; then
    echo "purging the socksgate package left from an earlier run"
    dpkg --purge socksgate
fi
dpkg -i "$deb"
for f in /usr/bin/socksgate /usr/lib/socksgate/libsocksgate_socksify.so "$CONFIG" "$UNITS/socksgate.service" "$UNITS/socksgate.socket" \
    /usr/share/doc/socksgate/README.md /usr/share/man/man1/socksgate.1.gz \
    /usr/share/man/man1/socksgate-serve.1.gz /usr/share/man/man1/socksgate-check-config.1.gz \
    /usr/share/bash-completion/completions/socksgate /usr/share/zsh/vendor-completions/_socksgate \
    /usr/share/fish/vendor_completions.d/socksgate.fish; do
    [ -f "$f" ] || fail "the package did not install $f"
done
dpkg-query -W -f='${Conffiles}\n' socksgate | grep -q "^ $CONFIG " ||
    fail "$CONFIG is not a conffile"
account=$(getent passwd socksgate) || fail "no socksgate user"
uid=$(echo "$account" | cut -d: -f3)
[ "$uid" -lt 1000 ] || fail "socksgate is not a system user: $account"
case $account in
*:/nonexistent:/usr/sbin/nologin) ;;
*) fail "socksgate has a home or a login shell: $account" ;;
esac
getent group socksgate >/dev/null || fail "no socksgate group"
[ "$(stat -c '%U:%G %a' "$CONFIG")" = "root:socksgate 640" ] ||
    fail "$CONFIG: $(stat -c '%U:%G %a' "$CONFIG"), expected root:socksgate 640"
zcat /usr/share/man/man1/socksgate.1.gz | grep -q 'socksgate\\-serve' ||
    fail "socksgate.1 does not list socksgate-serve"
zcat /usr/share/man/man1/socksgate-serve.1.gz | grep -q '\\-\\-config' ||
    fail "socksgate-serve.1 does not document --config"
bash -c 'source /usr/share/bash-completion/completions/socksgate && complete -p socksgate' ||
    fail "the bash completion does not register for socksgate"

step "systemd-analyze verify"
# The units as installed, with the packaged binary and account in place. It exits 0 on
# warnings such as an unknown directive: any output fails.
verify=$(systemd-analyze verify "$UNITS/socksgate.service" "$UNITS/socksgate.socket" 2>&1) ||
    fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"

step "check-config"
/usr/bin/socksgate check-config "$CONFIG"
# Every commented example in the packaged config is valid once enabled, with a users file
# and a certificate (which also serves as the client CA) in place of the ones it names, and
# the TLS example's listener added to `listen`.
socksgate passwd --users "$work/users" alice <<<"ci-password" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$work/server.key" -out "$work/server.pem" 2>/dev/null
sed -e 's/^#\([a-z[]\)/\1/' \
    -e "s|^users = \".*\"\$|users = \"$work/users\"|" \
    -e 's|^listen = \["127.0.0.1:1080"\]|listen = ["127.0.0.1:1080", "0.0.0.0:1443"]|' \
    -e "s|/etc/socksgate/server.pem|$work/server.pem|;s|/etc/socksgate/server.key|$work/server.key|" \
    -e "s|/etc/socksgate/clients-ca.pem|$work/server.pem|" "$CONFIG" >"$work/examples.toml"
/usr/bin/socksgate check-config "$work/examples.toml" >/dev/null

step "serve as user socksgate, one request through it"
if ss -Htln "sport = :1080" | grep -q .; then
    fail "$PROXY is in use; the packaged config listens there"
fi
mkdir "$work/www"
echo "through the packaged socksgate" >"$work/www/hello.txt"
origin_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$origin_port" \
    >"$work/origin.log" 2>&1 &
pids+=($!)
# As the unit would run it: unprivileged, no new privileges, the packaged config.
env -u JOURNAL_STREAM setpriv --reuid socksgate --regid socksgate --init-groups --no-new-privs \
    /usr/bin/socksgate serve --config "$CONFIG" 2>"$work/serve.log" &
server=$!
pids+=("$server")
for _ in $(seq 100); do
    grep -q ready "$work/serve.log" && break
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; fail "serve exited"; }
    sleep 0.1
done
grep -q ready "$work/serve.log" || { cat "$work/serve.log"; fail "serve did not become ready"; }
[ "$(ps -o uid= -p "$server" | tr -d ' ')" = "$uid" ] || fail "serve does not run as socksgate"
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$origin_port/" && break
    sleep 0.1
done
body=$(curl -sS --max-time 10 --socks5-hostname "$PROXY" "http://127.0.0.1:$origin_port/hello.txt")
[ "$body" = "through the packaged socksgate" ] || fail "wrong body through the proxy: $body"
# socksify finds the packaged library in /usr/lib/socksgate and takes an unmodified curl there.
body=$(env -u SOCKSGATE_SOCKSIFY_LIBRARY /usr/bin/socksgate socksify --proxy "socks5h://$PROXY" \
    --direct none -- curl -sS --max-time 10 "http://127.0.0.1:$origin_port/hello.txt")
[ "$body" = "through the packaged socksgate" ] || fail "wrong body through socksify: $body"
kill -TERM "$server"
wait "$server" || { cat "$work/serve.log"; fail "serve did not exit cleanly on SIGTERM"; }
cat "$work/serve.log"
grep -q 'outcome="succeeded"' "$work/serve.log" || fail "no access line for the request"
if grep -q $'\x1b' "$work/serve.log"; then
    fail "ANSI escape codes in the log"
fi

step "reinstall, remove, purge"
# As an upgrade would: the account and the permission override are kept.
dpkg -i "$deb"
[ "$(id -u socksgate)" = "$uid" ] || fail "reinstalling changed the socksgate user"
[ "$(stat -c '%U:%G %a' "$CONFIG")" = "root:socksgate 640" ] ||
    fail "$CONFIG after reinstalling: $(stat -c '%U:%G %a' "$CONFIG")"
dpkg -r socksgate
[ ! -e /usr/bin/socksgate ] || fail "dpkg -r left /usr/bin/socksgate"
[ -f "$CONFIG" ] || fail "dpkg -r removed the conffile $CONFIG"
dpkg --purge socksgate
for f in /usr/bin/socksgate /usr/lib/socksgate "$CONFIG" /etc/socksgate "$UNITS/socksgate.service" \
    "$UNITS/socksgate.socket" /usr/share/man/man1/socksgate.1.gz /usr/share/doc/socksgate; do
    [ ! -e "$f" ] || fail "$f is left after purge"
done
! getent passwd socksgate >/dev/null || fail "the socksgate user is left after purge"
! getent group socksgate >/dev/null || fail "the socksgate group is left after purge"
! dpkg-statoverride --list "$CONFIG" >/dev/null || fail "the permission override is left"
echo "native/ci.sh: the package installs, serves and purges cleanly"
