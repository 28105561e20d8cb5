//! `serve --user NAME` (config `user = "NAME"`): give up root once the sockets are open.
//!
//! `serve` looks the user up before doing anything else (an unknown name is an error at
//! once), reads the users file and the configuration, binds every listener and the metrics
//! listener (ports below 1024 need root), and only then calls [`drop_to`]: supplementary
//! groups cleared (`setgroups([])`), then `setgid`, then `setuid`, through the C library's
//! wrappers, which apply to every thread of the process. The result is checked (real and
//! effective IDs are the target's, and getting root back fails); any failure stops the
//! server instead of running with more privileges than asked for.
//!
//! Anything opened later runs as NAME: BIND and UDP relay sockets (so `[udp] ports` must be
//! ≥ 1024), and re-reading the users file (a reload would need NAME to be able to read it).

use nix::unistd::{Gid, Uid, User, getegid, geteuid, getgid, getuid, setgid, setgroups, setuid};

/// Why the privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// No such user.
    #[error("--user {0}: no such user")]
    Unknown(String),
    /// The user database could not be read.
    #[error("--user {name}: cannot look the user up: {source}")]
    Lookup {
        /// The user name.
        name: String,
        /// The cause.
        source: nix::Error,
    },
    /// A system call failed.
    #[error("--user {name}: {step} failed: {source} (switching users needs root)")]
    Switch {
        /// The user name.
        name: String,
        /// `setgroups`, `setgid` or `setuid`.
        step: &'static str,
        /// The cause.
        source: nix::Error,
    },
    /// The IDs after the switch are not the target's, or root can be regained.
    #[error("--user {name}: privileges were not dropped ({detail})")]
    Verify {
        /// The user name.
        name: String,
        /// What the check found.
        detail: String,
    },
}

/// The account to run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// Its user ID.
    pub uid: u32,
    /// Its primary group ID.
    pub gid: u32,
}

/// Looks `name` up in the user database (`getpwnam`).
pub fn lookup(name: &str) -> Result<Account, PrivError> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Account {
            name: name.to_owned(),
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }),
        Ok(None) => Err(PrivError::Unknown(name.to_owned())),
        Err(source) => Err(PrivError::Lookup {
            name: name.to_owned(),
            source,
        }),
    }
}

/// Switches the whole process to `account` (groups, then group, then user) and checks it.
/// Running as that account already (without root) is not an error.
pub fn drop_to(account: &Account) -> Result<(), PrivError> {
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    let already = getuid() == uid && geteuid() == uid && getgid() == gid && getegid() == gid;
    // Root always switches (clearing supplementary groups); another user already running as
    // the target has nothing to drop.
    if !already || uid.is_root() {
        let switch = |step, source| PrivError::Switch {
            name: account.name.clone(),
            step,
            source,
        };
        setgroups(&[]).map_err(|e| switch("setgroups", e))?;
        setgid(gid).map_err(|e| switch("setgid", e))?;
        setuid(uid).map_err(|e| switch("setuid", e))?;
    }
    verify(account)
}

fn verify(account: &Account) -> Result<(), PrivError> {
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    let fail = |detail: String| PrivError::Verify {
        name: account.name.clone(),
        detail,
    };
    if getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid {
        return Err(fail(format!(
            "uid {} euid {} gid {} egid {}",
            getuid(),
            geteuid(),
            getgid(),
            getegid()
        )));
    }
    if !uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        return Err(fail("setuid(0) still succeeds".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_user_is_a_clear_error() {
        let e = lookup("no-such-user-socksgate").unwrap_err().to_string();
        assert_eq!(e, "--user no-such-user-socksgate: no such user");
    }

    #[test]
    fn root_is_found() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
    }
}
