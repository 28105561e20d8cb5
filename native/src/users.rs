//! The users file: one `name:$argon2id$…` line per user (PHC strings with a random salt).
//!
//! `socksgate passwd --users FILE USER` adds or replaces a line; blank lines and lines
//! starting with `#` are kept as they are. Passwords are never stored, logged or printed.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use argon2::Argon2;
use password_hash::rand_core::OsRng;
use password_hash::{PasswordHash, PasswordHasher, SaltString};

/// Why a users file or an entry cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `name:PHC-hash`.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The user name cannot be used with RFC 1929 or in this file.
    #[error("invalid user name: {0}")]
    BadName(&'static str),
    /// The password cannot be used with RFC 1929.
    #[error("invalid password: {0}")]
    BadPassword(&'static str),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(password_hash::Error),
}

/// Checks a user name: 1–255 bytes (RFC 1929 ULEN), no `:`, no line breaks, no NUL.
pub fn check_name(name: &str) -> Result<(), UsersError> {
    if name.is_empty() {
        Err(UsersError::BadName("empty"))
    } else if name.len() > 255 {
        Err(UsersError::BadName(
            "longer than 255 bytes (the RFC 1929 limit)",
        ))
    } else if name.contains([':', '\n', '\r', '\0']) {
        Err(UsersError::BadName(
            "must not contain ':', line breaks or NUL",
        ))
    } else if name.starts_with('#') {
        Err(UsersError::BadName("must not start with '#'"))
    } else {
        Ok(())
    }
}

/// Checks a password: 1–255 bytes (RFC 1929 PLEN).
pub fn check_password(password: &[u8]) -> Result<(), UsersError> {
    if password.is_empty() {
        Err(UsersError::BadPassword("empty"))
    } else if password.len() > 255 {
        Err(UsersError::BadPassword(
            "longer than 255 bytes (the RFC 1929 limit)",
        ))
    } else {
        Ok(())
    }
}

/// Hashes a password with Argon2id (default parameters) and a fresh random salt.
pub fn hash_password(password: &[u8]) -> Result<String, UsersError> {
    check_password(password)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(UsersError::Hash)
}

/// The loaded users: name → PHC hash string.
#[derive(Clone, Default)]
pub struct Users {
    entries: HashMap<Vec<u8>, String>,
    /// Verified against when the user does not exist, so that a wrong name costs as much time
    /// as a wrong password.
    dummy: String,
}

impl core::fmt::Debug for Users {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Parses the file's text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, UsersError> {
        let mut entries = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let syntax = |message: String| UsersError::Syntax {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(syntax("expected `name:$argon2id$...`".into()));
            };
            check_name(name).map_err(|e| syntax(e.to_string()))?;
            let parsed = PasswordHash::new(hash)
                .map_err(|e| syntax(format!("user {name:?}: not a PHC hash string: {e}")))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(syntax(format!(
                    "user {name:?}: unsupported algorithm {}",
                    parsed.algorithm
                )));
            }
            entries.insert(name.as_bytes().to_vec(), hash.to_owned());
        }
        let dummy = dummy_hash(entries.values().next().map(String::as_str));
        Ok(Self { entries, dummy })
    }

    /// Reads and parses a users file.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = fs::read_to_string(path).map_err(|source| UsersError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a username/password pair. CPU-heavy (Argon2): call it off the async runtime
    /// (`spawn_blocking`).
    ///
    /// Timing: every call runs exactly one Argon2 computation, with the same parameters
    /// whether the user exists or not (an unknown name is checked against a dummy hash made
    /// with a real entry's parameters), and the result is decided only after it. Argon2's
    /// final comparison is constant-time (`password_hash::Output` compares with `subtle`).
    /// What differs between the two paths is the map lookup (SipHash with a per-process
    /// random key, then a byte comparison of the name): nanoseconds, next to the tens of
    /// milliseconds of the hash, so neither the existence of a name nor its prefix shows in
    /// the response time. There is no early return before the hash.
    pub fn verify(&self, username: &[u8], password: &[u8]) -> bool {
        let (hash, known) = match self.entries.get(username) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = verify_with_pooled_memory(password, &parsed);
        ok & known
    }
}

/// Argon2 working memory kept for reuse (at most [`MEMORY_POOL_MAX`] buffers).
///
/// Each check needs the hash's memory cost (19 MiB by default). Allocated and freed per
/// login, glibc keeps it resident in the arena of whichever blocking-pool thread ran the
/// check, so RSS grew by that much per new thread; reusing a few buffers bounds it.
static MEMORY_POOL: std::sync::Mutex<Vec<Vec<argon2::Block>>> = std::sync::Mutex::new(Vec::new());
/// The number of password checks the server runs at once (see `login::AUTH_SLOTS`).
const MEMORY_POOL_MAX: usize = 4;

/// Recomputes the hash of `password` with `hash`'s algorithm, parameters and salt in pooled
/// memory, and compares the outputs in constant time (`password_hash::Output`'s `Eq`).
fn verify_with_pooled_memory(password: &[u8], hash: &PasswordHash<'_>) -> bool {
    let (Some(argon), Some(salt), Some(expected)) = (argon2_of(hash), hash.salt, hash.hash) else {
        return false;
    };
    let mut salt_buf = [0u8; password_hash::Salt::MAX_LENGTH];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = [0u8; password_hash::Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let taken = MEMORY_POOL.lock().map(|mut p| p.pop()).unwrap_or_default();
    let mut blocks = taken.unwrap_or_default();
    blocks.resize(argon.params().block_count(), argon2::Block::new());
    let ok = argon
        .hash_password_into_with_memory(password, salt, out, &mut blocks)
        .is_ok()
        && password_hash::Output::new(out).is_ok_and(|o| o == expected);
    if let Ok(mut pool) = MEMORY_POOL.lock()
        && pool.len() < MEMORY_POOL_MAX
    {
        pool.push(blocks);
    }
    ok
}

/// The Argon2 instance (algorithm, version, parameters) a PHC hash string was made with.
fn argon2_of(p: &PasswordHash<'_>) -> Option<Argon2<'static>> {
    let algorithm = argon2::Algorithm::try_from(p.algorithm).ok()?;
    let version = match p.version {
        Some(v) => argon2::Version::try_from(v).ok()?,
        None => argon2::Version::default(),
    };
    let params = argon2::Params::try_from(p).ok()?;
    Some(Argon2::new(algorithm, version, params))
}

/// A hash of a fixed password with the parameters (algorithm, version, memory, time,
/// parallelism) of `like`, a real entry, or the defaults when there is none or it cannot be
/// reproduced; verifying against it costs what verifying a real user costs.
fn dummy_hash(like: Option<&str>) -> String {
    let same_params = like.and_then(|h| argon2_of(&PasswordHash::new(h).ok()?));
    let salt = SaltString::generate(&mut OsRng);
    same_params
        .unwrap_or_default()
        .hash_password(b"socksgate-dummy-password", &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

/// Adds or replaces `name` in the users file at `path` (created if missing, mode 0600),
/// writing a temporary file next to it and renaming it over the old one.
pub fn set_password(path: &Path, name: &str, password: &[u8]) -> Result<(), UsersError> {
    check_name(name)?;
    let hash = hash_password(password)?;
    let io = |source| UsersError::Io {
        path: path.to_owned(),
        source,
    };
    let old = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    // Validate the existing file first, so a broken file is not silently rewritten.
    Users::parse(&old, path)?;
    let mut out = String::with_capacity(old.len() + hash.len() + name.len() + 2);
    let mut replaced = false;
    for line in old.lines() {
        let is_entry =
            !line.starts_with('#') && line.split_once(':').is_some_and(|(n, _)| n == name);
        if is_entry {
            if !replaced {
                out.push_str(&format!("{name}:{hash}\n"));
                replaced = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!("{name}:{hash}\n"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        fs::create_dir_all(dir)?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(e)
    })
}

/// Reads a password from `input`: the first line, without its line ending.
pub fn read_password(mut input: impl std::io::BufRead) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_replace_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        set_password(&path, "alice", b"secret1").unwrap();
        set_password(&path, "bob", b"hunter2").unwrap();
        let users = Users::load(&path).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.verify(b"alice", b"secret1"));
        assert!(!users.verify(b"alice", b"secret2"));
        assert!(!users.verify(b"carol", b"secret1"));
        // Replace alice; bob survives; the file holds no password.
        set_password(&path, "alice", b"new").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("secret1") && !text.contains("new\n"));
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("$argon2id$"));
        let users = Users::load(&path).unwrap();
        assert!(users.verify(b"alice", b"new"));
        assert!(!users.verify(b"alice", b"secret1"));
        assert!(users.verify(b"bob", b"hunter2"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// The unknown-user path runs Argon2 with the users' own parameters: structurally (the
    /// dummy hash has the entry's parameters) and in time (loosely: the fastest of several
    /// runs of each path within a factor of 4 of the other; skipping the hash would be
    /// hundreds of times faster).
    #[test]
    fn unknown_users_cost_as_much_as_wrong_passwords() {
        // Non-default parameters (8 MiB, t = 3), as an older or tuned file might hold.
        let params = argon2::Params::new(8192, 3, 1, None).unwrap();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon.hash_password(b"pw", &salt).unwrap().to_string();
        let users = Users::parse(&format!("alice:{hash}\n"), Path::new("u")).unwrap();
        let dummy = PasswordHash::new(&users.dummy).unwrap();
        let real = PasswordHash::new(&hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_ne!(dummy.salt, real.salt);
        assert!(users.verify(b"alice", b"pw"));
        assert!(!users.verify(b"bob", b"pw"));

        let time = |name: &[u8]| {
            let t = std::time::Instant::now();
            assert!(!users.verify(name, b"wrong"));
            t.elapsed()
        };
        let (mut unknown, mut wrong) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..5 {
            unknown = unknown.min(time(b"nobody-here"));
            wrong = wrong.min(time(b"alice"));
        }
        assert!(
            unknown * 4 >= wrong && wrong * 4 >= unknown,
            "unknown user {unknown:?}, wrong password {wrong:?}"
        );
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash_password(b"x").unwrap(), hash_password(b"x").unwrap());
    }

    #[test]
    fn comments_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        fs::write(&path, "# socksgate users\n\n").unwrap();
        set_password(&path, "alice", b"pw").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# socksgate users\n\nalice:$argon2id$"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let err = Users::parse("# c\nalice\n", Path::new("u"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("u:2:"), "{err}");
        let err = Users::parse("alice:plaintext\n", Path::new("u"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("u:1:"), "{err}");
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(check_name("").is_err());
        assert!(check_name("a:b").is_err());
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name("alice").is_ok());
        assert!(hash_password(b"").is_err());
        assert!(hash_password(&[b'x'; 256]).is_err());
    }

    #[test]
    fn password_from_stdin_line() {
        assert_eq!(read_password(&b"pw\r\nrest"[..]).unwrap(), b"pw");
        assert_eq!(read_password(&b"pw"[..]).unwrap(), b"pw");
    }
}
