//! RFC 1929 password checks: the client's back-off first (see `throttle`), then Argon2 on a
//! blocking thread, a few at a time.

use std::net::IpAddr;
use std::sync::Arc;

use tracing::{debug, warn};

use crate::shared::Shared;
use crate::throttle::Verdict;

/// Password checks (Argon2) allowed to run at the same time.
static AUTH_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Checks credentials after the client's back-off: a client that keeps failing waits longer
/// before each check, or is refused unchecked. The password is never logged.
pub(crate) async fn check_password(
    shared: &Shared,
    client: IpAddr,
    username: &[u8],
    password: &[u8],
) -> bool {
    let throttle = &shared.auth_throttle;
    let max_wait = throttle.cap().min(shared.config.timeouts.handshake() / 2);
    // The client network, as the session limits key it.
    let client = shared.config.limits.prefixes().key(client);
    match throttle.admit(client, max_wait) {
        Verdict::Refuse => {
            shared.metrics.auth_throttled(true);
            warn!(
                user = %String::from_utf8_lossy(username),
                "too many failed logins from this client: refused without checking"
            );
            false
        }
        Verdict::Check(wait) => {
            let pending = throttle.pending(client);
            if !wait.is_zero() {
                shared.metrics.auth_throttled(false);
                debug!(?wait, "failed logins from this client: delaying the check");
                tokio::time::sleep(wait).await;
            }
            let ok = match &shared.users {
                Some(users) => {
                    // Each Argon2 check takes ~19 MiB and a core for tens of ms: bound how
                    // many run at once, so a flood of bogus logins queues instead of
                    // exhausting memory.
                    let _slot = AUTH_SLOTS.acquire().await;
                    let users = Arc::clone(users);
                    let username = username.to_vec();
                    // Inline octets, not a heap copy of the password.
                    let password =
                        socksgate_core::server::Octets::from_slice(password).unwrap_or_default();
                    tokio::task::spawn_blocking(move || users.verify(&username, &password))
                        .await
                        .unwrap_or(false)
                }
                None => false,
            };
            pending.finish(ok);
            ok
        }
    }
}
