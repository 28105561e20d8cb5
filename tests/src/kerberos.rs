//! A real MIT Kerberos KDC for GSS-API tests: a fresh realm in a temporary directory, served
//! by Debian's `krb5kdc` on a loopback port, with principals, keytabs and users' ticket caches
//! made by the real tools (`kdb5_util`, `kadmin.local`, `kinit`).
//!
//! Nothing here touches the machine's own Kerberos setup: every program the harness or a test
//! runs gets the realm's files through [`Kdc::env`] (`KRB5_CONFIG`, `KRB5_KDC_PROFILE`), and
//! each user's tickets live in a cache file of their own (`KRB5CCNAME`). Start one KDC per test
//! file (it takes a fraction of a second) and share it between the file's tests.
//!
//! [`Realm`] is the usual set-up on top: users with tickets, service principals and a keytab,
//! and [`Realm::server`] starts a socksgate server of the realm (`[gssapi]` with that keytab,
//! a user's tickets for `[[upstream]]` chaining, a metrics listener).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::socksgate::{Server, ServerBuilder};
use crate::tmp::TempDir;
use crate::tools::{self, Output};
use crate::{TIMEOUT, free_port, wait_for_listener};

/// The programs a KDC test needs (Debian's krb5-kdc, krb5-admin-server and krb5-user).
pub const TOOLS: [&str; 4] = ["krb5kdc", "kdb5_util", "kadmin.local", "kinit"];

/// A running KDC for one realm; stopped, and its files removed, on drop.
#[derive(Debug)]
pub struct Kdc {
    realm: String,
    port: u16,
    dir: TempDir,
    child: Mutex<Child>,
}

impl Kdc {
    /// Creates realm `realm` (upper case by convention) with a fresh database and starts
    /// `krb5kdc` for it on a free loopback port (UDP and TCP). `None` if the tools are
    /// missing and `SOCKSGATE_ALLOW_SKIP=1`; panics if they are missing otherwise.
    #[track_caller]
    pub fn start(test: &str, realm: &str) -> Option<Self> {
        tools::require(test, &TOOLS)?;
        let dir = TempDir::new();
        // The database does not depend on the port: made once, whatever port the KDC gets.
        write_config(&dir, realm, 0);
        let master = ["create", "-s", "-r", realm, "-P", "master-key-pw", "-W"];
        kdc_tool(&dir, "kdb5_util", &master).assert_success("kdb5_util create");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            write_config(&dir, realm, port);
            let log = std::fs::File::create(dir.join("krb5kdc.out")).expect("kdc log");
            // Under a watchdog shell: a KDC kept in a static (shared by a test file's tests) is
            // never dropped, so the shell ends it once the test process is gone.
            let kdc = tools::which("krb5kdc").expect("krb5kdc");
            let watchdog = format!(
                "{} -n -r {realm} -P {} & k=$!; while kill -0 {} 2>/dev/null && kill -0 $k 2>/dev/null; do sleep 0.2; done; kill $k 2>/dev/null; wait",
                kdc.display(),
                dir.join("krb5kdc.pid").display(),
                std::process::id()
            );
            let mut child = Command::new("sh")
                .args(["-c", &watchdog])
                .envs(env_of(&dir))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn krb5kdc");
            let listening =
                wait_for_listener((core::net::Ipv4Addr::LOCALHOST, port).into(), TIMEOUT);
            if listening && matches!(child.try_wait(), Ok(None)) {
                return Some(Self {
                    realm: realm.into(),
                    port,
                    dir,
                    child: Mutex::new(child),
                });
            }
            kill_kdc(&dir);
            let _ = child.kill();
            let _ = child.wait();
            last =
                tools::read_log(&dir.join("krb5kdc.out")) + &tools::read_log(&dir.join("kdc.log"));
        }
        panic!("krb5kdc did not start:\n{last}");
    }

    /// The realm's name.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The KDC's loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the realm's files (config, database, keytabs, caches).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `krb5.conf` clients and servers of this realm use.
    pub fn krb5_config(&self) -> PathBuf {
        self.dir.join("krb5.conf")
    }

    /// The environment every Kerberos program of this realm needs: the realm's `krb5.conf`
    /// and KDC profile, and no replay cache files outside the realm's directory.
    pub fn env(&self) -> Vec<(String, String)> {
        env_of(&self.dir)
    }

    /// `fully qualified name@REALM`.
    pub fn principal(&self, name: &str) -> String {
        format!("{name}@{}", self.realm)
    }

    /// Adds user principal `name` with `password`.
    #[track_caller]
    pub fn add_user(&self, name: &str, password: &str) {
        self.kadmin(&format!("addprinc -pw {password} {name}"));
    }

    /// Adds service principal `name` (e.g. `rcmd/localhost`) with a random key.
    #[track_caller]
    pub fn add_service(&self, name: &str) {
        self.kadmin(&format!("addprinc -randkey {name}"));
    }

    /// Writes the keys of `principals` into keytab file `file` (in the realm's directory) and
    /// returns its path. Each call gives the principals new keys (a new kvno), which
    /// invalidates earlier keytabs and tickets for them.
    #[track_caller]
    pub fn keytab(&self, file: &str, principals: &[&str]) -> PathBuf {
        let path = self.dir.join(file);
        for p in principals {
            self.kadmin(&format!("ktadd -k {} {p}", path.display()));
        }
        path
    }

    /// Runs one `kadmin.local` query, panicking with its output if it fails.
    #[track_caller]
    pub fn kadmin(&self, query: &str) -> Output {
        let out = kdc_tool(&self.dir, "kadmin.local", &["-r", &self.realm, "-q", query]);
        out.assert_success(&format!("kadmin.local -q {query:?}"));
        // kadmin.local exits 0 even when the query fails; it says so on stderr.
        let err = out.stderr_text();
        assert!(
            !err.contains("while ") && !err.to_lowercase().contains("error"),
            "kadmin.local -q {query:?}: {err}"
        );
        out
    }

    /// `kinit user` with `password` into a new cache file `<user>-<tag>.cc`; returns the
    /// cache's `KRB5CCNAME` value. `lifetime` (`kinit -l`, e.g. `"10h"`, `"5s"`) bounds the
    /// tickets.
    #[track_caller]
    pub fn kinit(&self, user: &str, password: &str, tag: &str, lifetime: &str) -> String {
        let cache = format!(
            "FILE:{}",
            self.dir.join(&format!("{user}-{tag}.cc")).display()
        );
        let kinit = tools::which("kinit").expect("kinit");
        let out = tools::run(
            Command::new(kinit)
                .args(["-l", lifetime, user])
                .envs(self.env())
                .env("KRB5CCNAME", &cache),
            format!("{password}\n").as_bytes(),
            TIMEOUT,
        );
        out.assert_success(&format!("kinit {user}"));
        cache
    }

    /// A `KRB5CCNAME` value naming a cache that does not exist (a user without tickets).
    pub fn empty_cache(&self, tag: &str) -> String {
        format!(
            "FILE:{}",
            self.dir.join(&format!("none-{tag}.cc")).display()
        )
    }

    /// The KDC's log (requests issued and refused).
    pub fn log(&self) -> String {
        tools::read_log(&self.dir.join("kdc.log")) + &tools::read_log(&self.dir.join("krb5kdc.out"))
    }

    fn stop(&self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kill_kdc(&self.dir);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ends the KDC of the realm in `dir` by its pid file (the watchdog shell is killed apart).
fn kill_kdc(dir: &TempDir) {
    if let Ok(pid) = std::fs::read_to_string(dir.join("krb5kdc.pid")) {
        let _ = Command::new("kill")
            .arg(pid.trim())
            .stderr(Stdio::null())
            .status();
    }
}

/// The environment of the realm in `dir`.
fn env_of(dir: &TempDir) -> Vec<(String, String)> {
    let path = |name: &str| dir.join(name).display().to_string();
    vec![
        ("KRB5_CONFIG".into(), path("krb5.conf")),
        ("KRB5_KDC_PROFILE".into(), path("kdc.conf")),
        // Replay caches in the realm's directory rather than /var/tmp.
        ("KRB5RCACHEDIR".into(), dir.path().display().to_string()),
        // No trace unless a test sets it (KRB5_TRACE=/dev/stderr helps when one fails).
    ]
}

/// Runs a KDC-side tool (`kdb5_util`, `kadmin.local`) on the realm in `dir`.
#[track_caller]
fn kdc_tool(dir: &TempDir, tool: &str, args: &[&str]) -> Output {
    let exe = tools::which(tool).unwrap_or_else(|| panic!("{tool} is not installed"));
    tools::run(Command::new(exe).args(args).envs(env_of(dir)), b"", TIMEOUT)
}

/// Writes the realm's `krb5.conf` (clients: where the KDC is, no DNS) and `kdc.conf` (the
/// KDC: database, ports, log) for a KDC on loopback port `port`.
fn write_config(dir: &TempDir, realm: &str, port: u16) {
    let d = dir.path().display();
    // No DNS anywhere: host-based service names (`rcmd@localhost`) map to `rcmd/localhost`
    // as written, and `localhost` belongs to the realm.
    dir.write(
        "krb5.conf",
        format!(
            "[libdefaults]
 default_realm = {realm}
 dns_lookup_kdc = false
 dns_lookup_realm = false
 dns_canonicalize_hostname = false
 rdns = false
 udp_preference_limit = 1
 ticket_lifetime = 10h
[realms]
 {realm} = {{
  kdc = 127.0.0.1:{port}
 }}
[domain_realm]
 localhost = {realm}
 .localhost = {realm}
[logging]
 default = FILE:{d}/krb5.log
"
        ),
    );
    dir.write(
        "kdc.conf",
        format!(
            "[kdcdefaults]
 kdc_listen = 127.0.0.1:{port}
 kdc_tcp_listen = 127.0.0.1:{port}
[realms]
 {realm} = {{
  database_name = {d}/principal
  key_stash_file = {d}/stash
  acl_file = {d}/kadm5.acl
  max_life = 10h
  max_renewable_life = 0
  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
 }}
[logging]
 kdc = FILE:{d}/kdc.log
"
        ),
    );
}

/// A realm set up for Kerberos-backed socksgate servers: the KDC, users with ticket caches
/// and the servers' keytab, made once (per test file) and shared. Each user's password is
/// `<user>-pw`; each gets a 10-hour ticket cache.
#[derive(Debug)]
pub struct Realm {
    /// The running KDC.
    pub kdc: Kdc,
    /// The keytab the servers accept with.
    pub keytab: PathBuf,
    caches: Vec<(String, String)>,
}

impl Realm {
    /// Starts a KDC for `realm` (see [`Kdc::start`]) with `users` and service principals
    /// `services` (e.g. `rcmd/localhost`); the keys of `in_keytab` go into the servers'
    /// keytab. `None` where [`Kdc::start`] skips.
    #[track_caller]
    pub fn start(
        test: &str,
        realm: &str,
        users: &[&str],
        services: &[&str],
        in_keytab: &[&str],
    ) -> Option<Self> {
        let kdc = Kdc::start(test, realm)?;
        for user in users {
            kdc.add_user(user, &format!("{user}-pw"));
        }
        for service in services {
            kdc.add_service(service);
        }
        let keytab = kdc.keytab("socksgate.keytab", in_keytab);
        let caches = users
            .iter()
            .map(|u| {
                (
                    (*u).to_owned(),
                    kdc.kinit(u, &format!("{u}-pw"), "main", "10h"),
                )
            })
            .collect();
        Some(Self {
            kdc,
            keytab,
            caches,
        })
    }

    /// The `KRB5CCNAME` of `user`'s ticket cache.
    #[track_caller]
    pub fn cache(&self, user: &str) -> &str {
        self.caches
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, c)| c.as_str())
            .unwrap_or_else(|| panic!("{user} is not a user of this realm"))
    }

    /// `user@REALM`.
    pub fn principal(&self, user: &str) -> String {
        self.kdc.principal(user)
    }

    /// A socksgate server of this realm, to configure and start.
    pub fn server(&self) -> KerberosServerBuilder<'_> {
        KerberosServerBuilder {
            realm: self,
            gssapi: None,
            config: String::new(),
            tickets: None,
            env: Vec::new(),
            builder: Server::builder(),
        }
    }
}

/// How to start a [`KerberosServer`]: [`Realm::server`].
#[derive(Debug)]
pub struct KerberosServerBuilder<'r> {
    realm: &'r Realm,
    gssapi: Option<String>,
    config: String,
    tickets: Option<String>,
    env: Vec<(String, String)>,
    builder: ServerBuilder,
}

impl KerberosServerBuilder<'_> {
    /// Accepts GSS-API: a `[gssapi]` table with the realm's keytab and these lines (e.g.
    /// `protection = ["integrity"]`).
    pub fn gssapi(mut self, lines: &str) -> Self {
        self.gssapi = Some(lines.into());
        self
    }

    /// More configuration (top-level keys first, then tables), before `[gssapi]`.
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    /// The server initiates GSS-API (an `[[upstream]]` that asks for it) with `user`'s
    /// tickets.
    pub fn tickets_of(mut self, user: &str) -> Self {
        self.tickets = Some(self.realm.cache(user).to_owned());
        self
    }

    /// Sets `key` in the server's environment, over the realm's own (e.g. a `KRB5_CONFIG`
    /// that adds a file of settings in front of the realm's `krb5.conf`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// A username/password user as well (`socksgate passwd`).
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.builder = self.builder.user(name, password);
        self
    }

    /// Starts the server, with a metrics listener, in the realm's environment.
    #[track_caller]
    pub fn start(self) -> KerberosServer {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut config = format!("metrics = \"{metrics}\"\n{}", self.config);
        if let Some(lines) = &self.gssapi {
            config.push_str(&format!(
                "\n[gssapi]\nkeytab = \"{}\"\n{lines}\n",
                self.realm.keytab.display()
            ));
        }
        let mut env = self.realm.kdc.env();
        if let Some(cache) = self.tickets {
            env.push(("KRB5CCNAME".into(), cache));
        }
        env.extend(self.env);
        let server = self.builder.config(&config).envs(env).start();
        KerberosServer { server, metrics }
    }
}

/// A running socksgate server of a [`Realm`] (a [`Server`] by `Deref`), with its metrics.
#[derive(Debug)]
pub struct KerberosServer {
    server: Server,
    metrics: String,
}

impl std::ops::Deref for KerberosServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl KerberosServer {
    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics).expect("metrics listener");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .expect("metrics request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("metrics response");
        out
    }

    /// Waits until the metrics show `line` (sessions finish a moment after the client).
    #[track_caller]
    pub fn wait_metric(&self, line: &str) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let m = self.metrics();
            if m.lines().any(|l| l == line) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{line} never showed:\n{m}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits until the log has a line containing all of `needles`; returns it.
    #[track_caller]
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let log = self.server.log();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with {needles:?}:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
