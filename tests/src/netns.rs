//! Network namespaces for tests that need more than loopback (veth links, routes, several
//! addresses, their own `/etc/hosts`): created with names no other test run uses, deleted
//! with their `/etc/netns` files on drop. Needs root and iproute2's `ip`.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs a command that must succeed; fails the test with its stderr otherwise.
#[track_caller]
pub fn sh(args: &[&str]) {
    let (program, rest) = args.split_first().expect("a command");
    let out = Command::new(program)
        .args(rest)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (these tests need root and iproute2)"));
    assert!(
        out.status.success(),
        "{args:?} failed (these tests need root and iproute2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with its loopback up; deleted, with its `/etc/netns` directory, on
/// drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `sg-{tag}-{pid}-{n}`; `tag` says which test and role it is for.
    #[track_caller]
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let ns = Self {
            name: format!(
                "sg-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        };
        sh(&["ip", "netns", "add", &ns.name]);
        ns.ip("link set lo up");
        ns
    }

    /// The name for `ip netns exec` and `ip -n`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME` with the whitespace-separated `command`, which must succeed.
    #[track_caller]
    pub fn ip(&self, command: &str) {
        let mut args = vec!["ip", "-n", &self.name];
        args.extend(command.split_whitespace());
        sh(&args);
    }

    /// Runs `program` inside the namespace (`ip netns exec`); it must succeed.
    #[track_caller]
    pub fn exec(&self, program: &[&str]) {
        let mut args = vec!["ip", "netns", "exec", &self.name];
        args.extend(program);
        sh(&args);
    }

    /// Links this namespace's interface `here` to `there`'s interface `theirs` with a veth
    /// pair (both down, no addresses).
    #[track_caller]
    pub fn veth(&self, here: &str, there: &Self, theirs: &str) {
        self.ip(&format!(
            "link add {here} type veth peer name {theirs} netns {}",
            there.name
        ));
    }

    /// Writes `/etc/netns/NAME/FILE`, which `ip netns exec` mounts over `/etc/FILE` (e.g.
    /// `hosts`, `resolv.conf`) for the programs it starts.
    pub fn etc(&self, file: &str, text: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens, and threads it starts,
    /// belong there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}
