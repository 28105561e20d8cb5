//! Stored passwords: PBKDF2-HMAC-SHA256 with a per-user random salt, never the password.
//!
//! PBKDF2 rather than Argon2 (which the native server uses): Argon2 needs its memory blocks
//! (kilobytes per check) in RAM the firmware would have to set aside, PBKDF2 needs none, and
//! the RustCrypto crates are `no_std`. The iteration count is stored with each hash, so it
//! can be raised later without invalidating saved users.

use pbkdf2::pbkdf2_hmac;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Salt length in bytes.
pub const SALT_LEN: usize = 16;
/// Hash length in bytes (one SHA-256 output).
pub const HASH_LEN: usize = 32;
/// Iterations for new hashes: about 30 ms per check on a 400 MHz Cortex-M7. A check runs in
/// the gateway's task, so this bounds how long one login stalls the relays.
pub const ITERATIONS: u32 = 4096;

/// A salted password hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordHash {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The user's random salt.
    pub salt: [u8; SALT_LEN],
    /// PBKDF2-HMAC-SHA256(password, salt, iterations).
    pub hash: [u8; HASH_LEN],
}

impl PasswordHash {
    /// Hashes `password` with `salt` (which must be random per user) and [`ITERATIONS`].
    pub fn new(password: &[u8], salt: [u8; SALT_LEN]) -> Self {
        Self::with_iterations(password, salt, ITERATIONS)
    }

    /// Hashes `password` with `salt` and `iterations` (at least 1).
    pub fn with_iterations(password: &[u8], salt: [u8; SALT_LEN], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let mut hash = [0u8; HASH_LEN];
        pbkdf2_hmac::<Sha256>(password, &salt, iterations, &mut hash);
        Self {
            iterations,
            salt,
            hash,
        }
    }

    /// Whether `password` is the one hashed. The comparison takes the same time wherever
    /// (and whether) the hashes differ; the hashing takes the same time for every password
    /// of a given length class (SHA-256 blocks).
    pub fn verify(&self, password: &[u8]) -> bool {
        let candidate = Self::with_iterations(password, self.salt, self.iterations);
        candidate.hash.ct_eq(&self.hash).into()
    }
}

/// Checks `password` against the hash `found` for a user name. Exactly one hash is computed
/// whether or not the name exists (against a fixed dummy when it does not), so the time
/// says nothing about which part was wrong.
pub fn check(found: Option<&PasswordHash>, password: &[u8]) -> bool {
    const DUMMY: PasswordHash = PasswordHash {
        iterations: ITERATIONS,
        salt: [0; SALT_LEN],
        hash: [0; HASH_LEN],
    };
    found.unwrap_or(&DUMMY).verify(password) && found.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_hashed_password() {
        let stored = PasswordHash::with_iterations(b"s3cret", [7; SALT_LEN], 16);
        assert!(stored.verify(b"s3cret"));
        assert!(!stored.verify(b"s3cret "));
        assert!(!stored.verify(b"S3cret"));
        assert!(!stored.verify(b""));
        // Another salt gives another hash for the same password.
        let other = PasswordHash::with_iterations(b"s3cret", [8; SALT_LEN], 16);
        assert_ne!(stored.hash, other.hash);
    }

    #[test]
    fn matches_the_published_vector() {
        // PBKDF2-HMAC-SHA256("password", "salt", 1, 32), the SHA-256 variant of the
        // RFC 6070 vectors (draft-josefsson-pbkdf2-test-vectors).
        let mut out = [0u8; 32];
        pbkdf2_hmac::<Sha256>(b"password", b"salt", 1, &mut out);
        assert_eq!(out[..8], [0x12, 0x0f, 0xb6, 0xcf, 0xfc, 0xf8, 0xb3, 0x2c]);
    }
}
