//! The gateway on run-time settings ([`SharedSettings`]): changes apply to the next session
//! without a restart, the per-client session cap, the failed-login throttle, and the
//! monitor's counters and session records.

mod common;

use common::{
    CONNECT_ECHO_V4, Client, SESSIONS, assert_success_v4, connect_echo,
    expect_connect_general_failure, run_monitored,
};
use embassy_time::Timer;
use socksgate_core::rules::Action;
use socksgate_embedded::Refusal;
use socksgate_embedded::live::SharedSettings;
use socksgate_embedded::monitor::Monitor;
use socksgate_embedded::password::PasswordHash;
use socksgate_embedded::settings::Settings;

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn settings(f: impl FnOnce(&mut Settings)) -> &'static SharedSettings {
    let mut settings = Settings::new(common::SOCKS_PORT, Action::Allow);
    f(&mut settings);
    leak(SharedSettings::new(settings))
}

/// A cheap hash: the host tests run unoptimised.
fn hash(password: &[u8]) -> PasswordHash {
    PasswordHash::with_iterations(password, [9; 16], 64)
}

#[test]
fn users_and_rules_changed_at_run_time_apply_to_the_next_session() {
    let live = settings(|_| {});
    let monitor = leak(Monitor::new());
    run_monitored(live, monitor, |stack| async move {
        // No users: no authentication.
        let mut open = connect_echo(stack).await;
        open.echo(b"before").await;

        // A user appears: the next client must log in; the running session goes on.
        live.update(|s| s.set_user("carol", hash(b"pw"))).unwrap();
        let mut next = Client::connect(stack).await;
        next.send(&[5, 1, 0]).await;
        assert_eq!(next.recv(2).await, [5, 0xff], "no acceptable method now");
        next.expect_eof().await;
        next.close().await;
        open.echo(b"still relaying").await;
        open.close().await;

        let mut authed = Client::connect(stack).await;
        assert_eq!(authed.login(b"carol", b"pw").await, 0);
        assert_success_v4(&authed.request(&CONNECT_ECHO_V4).await);
        authed.echo(b"as carol").await;
        authed.close().await;

        // A rule denying the echo server: REP 2 for the next request.
        live.update(|s| s.add_rule("deny dst 10.0.0.2 port 7"))
            .unwrap();
        let mut denied = Client::connect(stack).await;
        assert_eq!(denied.login(b"carol", b"pw").await, 0);
        let reply = denied.request(&CONNECT_ECHO_V4).await;
        assert_eq!(reply[..2], [5, 2], "not allowed by ruleset");
        denied.expect_eof().await;
        denied.close().await;
        Timer::after_millis(50).await;

        let counters = monitor.counters();
        assert_eq!(counters.sessions, 4);
        assert_eq!(counters.relayed, 2);
        assert_eq!(counters.refused[Refusal::Denied.index()], 1);
        assert_eq!(counters.dropped, 1, "the client without a method");
        assert!(counters.bytes_up >= 22 && counters.bytes_down >= 22);
    });
}

#[test]
fn one_client_cannot_hold_more_than_its_share() {
    const { assert!(SESSIONS >= 2) };
    let live = settings(|s| s.per_client = 1);
    let monitor = leak(Monitor::new());
    run_monitored(live, monitor, |stack| async move {
        let mut first = connect_echo(stack).await;

        // A free slot remains, but this client already holds its one session.
        expect_connect_general_failure(stack, "general failure: the client holds its share").await;
        let mut listed = Vec::new();
        monitor.for_each_active(|a| listed.push((a.slot, a.destination.to_string())));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1, "10.0.0.2:7");

        first.echo(b"unaffected").await;
        first.close().await;
        Timer::after_millis(50).await;
        // Its session over, the client gets one again.
        let third = connect_echo(stack).await;
        third.close().await;
        Timer::after_millis(50).await;
        assert_eq!(monitor.counters().refused[Refusal::ClientCap.index()], 1);
    });
}

#[test]
fn the_session_limit_set_at_run_time_holds_below_the_pool() {
    const { assert!(SESSIONS >= 2) };
    let live = settings(|s| s.max_sessions = 1);
    let monitor = leak(Monitor::new());
    run_monitored(live, monitor, |stack| async move {
        let mut first = connect_echo(stack).await;

        // A slot is free, but the limit is one session: answered as when the pool is full.
        expect_connect_general_failure(stack, "general failure: the session limit is reached")
            .await;

        // Raised at run time: the next client is served beside the first.
        live.update(|s| s.max_sessions = 0);
        let mut third = connect_echo(stack).await;
        first.echo(b"first").await;
        third.echo(b"third").await;
        let mut listed = 0;
        monitor.for_each_active(|_| listed += 1);
        assert_eq!(listed, 2);
        first.close().await;
        third.close().await;
        Timer::after_millis(50).await;
        let counters = monitor.counters();
        assert_eq!(counters.refused[Refusal::PoolFull.index()], 1);
        assert_eq!(counters.relayed, 2);
    });
}

#[test]
fn failed_logins_lock_the_client_out() {
    let live = settings(|s| {
        s.set_user("dave", hash(b"right")).unwrap();
        s.login_throttle.failures = 2;
        s.login_throttle.lockout_secs = 60;
    });
    let monitor = leak(Monitor::new());
    run_monitored(live, monitor, |stack| async move {
        for _ in 0..2 {
            let mut client = Client::connect(stack).await;
            assert_ne!(client.login(b"dave", b"wrong").await, 0);
            client.expect_eof().await;
            client.close().await;
        }
        // Locked out: even the right password fails now.
        let mut client = Client::connect(stack).await;
        assert_ne!(client.login(b"dave", b"right").await, 0);
        client.expect_eof().await;
        client.close().await;
        Timer::after_millis(50).await;
        let counters = monitor.counters();
        assert_eq!(counters.login_failures, 3);
        assert_eq!(counters.refused[Refusal::Authentication.index()], 2);
        assert_eq!(counters.refused[Refusal::Throttled.index()], 1);
        // Lifting the throttle (as the console's `set login-throttle 0 60` does) lets the
        // right password through again.
        live.update(|s| s.login_throttle.failures = 0);
        let mut client = Client::connect(stack).await;
        assert_eq!(client.login(b"dave", b"right").await, 0);
        client.close().await;
    });
}

/// The bytes a session in `monitor` has moved each way so far, waiting (briefly) until they
/// reach `want` (the gateway publishes them as it relays, a chunk at a time).
async fn live_bytes(monitor: &Monitor<SESSIONS>, want: (u64, u64)) -> (u64, u64) {
    let mut seen = (0, 0);
    for _ in 0..100 {
        let mut listed = Vec::new();
        monitor.for_each_active(|a| listed.push((a.up, a.down)));
        assert_eq!(listed.len(), 1, "one session in progress");
        seen = listed[0];
        if seen == want {
            break;
        }
        Timer::after_millis(10).await;
    }
    seen
}

#[test]
fn a_session_in_progress_shows_its_bytes_so_far() {
    let live = settings(|_| {});
    let monitor = leak(Monitor::new());
    run_monitored(live, monitor, |stack| async move {
        let mut client = connect_echo(stack).await;
        assert_eq!(
            live_bytes(monitor, (0, 0)).await,
            (0, 0),
            "nothing relayed yet"
        );

        // The client pauses between transfers: the counts are there while it runs, and grow.
        client.echo(&[7; 3000]).await;
        assert_eq!(live_bytes(monitor, (3000, 3000)).await, (3000, 3000));
        let mut moved = None;
        monitor.for_each_active(|a| moved = Some(a.moved));
        let before = moved.unwrap();
        Timer::after_millis(20).await;
        client.echo(&[9; 10_000]).await;
        assert_eq!(
            live_bytes(monitor, (13_000, 13_000)).await,
            (13_000, 13_000)
        );
        monitor.for_each_active(|a| moved = Some(a.moved));
        assert!(
            moved.unwrap() > before,
            "the time bytes last moved advanced"
        );

        client.close().await;
        Timer::after_millis(50).await;
        let mut listed = 0;
        monitor.for_each_active(|_| listed += 1);
        assert_eq!(listed, 0, "the session left the table");
        let counters = monitor.counters();
        assert_eq!((counters.bytes_up, counters.bytes_down), (13_000, 13_000));
    });
}
