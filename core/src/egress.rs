//! Egress: which profile a session leaves through, and which source address it uses.
//!
//! A front end configures named egress profiles (source addresses, an interface, a firewall
//! mark) and says which applies to what: one globally, per listen address, per user and per
//! access rule. Two decisions are made here, the same for every front end:
//!
//! * **Which profile** ([`select`]): the most specific one wins — the deciding rule's, then
//!   the user's, then the listener's, then the global one. No profile: the kernel decides
//!   everything (the default, and free).
//! * **Which source address** ([`Pool::source`]) for a destination of a given family:
//!   * `Session` rotation: round robin over the pool's addresses of that family, one step per
//!     session (the caller counts sessions);
//!   * `User` rotation: the same address for a user every time ([`user_key`], a stable hash
//!     of the name), round robin for sessions without a user;
//!   * `Same` rotation: the address the client connected to (Dante's "same-same"), when it
//!     has the destination's family; otherwise the pool's addresses of that family as for
//!     `Session`.
//!
//! A profile that names no address (only an interface or a mark) leaves the address to the
//! kernel ([`Source::Kernel`]). A profile that does constrain the address but has none of the
//! destination's family gives [`Source::Unavailable`]: the request is refused (SOCKS5 reply 4,
//! "host unreachable") rather than sent from an address the operator did not choose — an
//! egress is usually about which network traffic leaves by, and falling back to the default
//! route could leak it there.

use core::net::IpAddr;

/// How a profile's addresses are shared among sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Rotation {
    /// Round robin, one step per session.
    #[default]
    Session,
    /// The same address for a user's every session (a stable hash of the name).
    User,
    /// The address the client connected to, when it has the destination's family.
    Same,
}

/// The profile that applies: the most specific one given — `rule`, then `user`, then
/// `listener`, then `global` — or `None` when none is.
pub const fn select<P: Copy>(
    rule: Option<P>,
    user: Option<P>,
    listener: Option<P>,
    global: Option<P>,
) -> Option<P> {
    match (rule, user, listener) {
        (Some(p), _, _) | (None, Some(p), _) | (None, None, Some(p)) => Some(p),
        (None, None, None) => global,
    }
}

/// A stable key for a user name (FNV-1a, 32 bits): the same name always maps to the same
/// address of a pool, across sessions, reloads and restarts.
pub const fn user_key(name: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        // `i < name.len()` is checked just above; const fn cannot use iterators.
        #[allow(clippy::indexing_slicing)]
        let byte = name[i];
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// The source address for one outbound socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Source {
    /// Bind to this address before connecting or sending.
    Address(IpAddr),
    /// Let the kernel choose (the profile does not constrain the address).
    Kernel,
    /// The profile constrains the address but has none of the destination's family: refuse.
    Unavailable,
}

/// What identifies a session for the rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey<'a> {
    /// The session's place in its profile's sequence (a counter the caller keeps per
    /// profile, stepped once per session).
    pub sequence: u32,
    /// The authenticated user, if any.
    pub user: Option<&'a [u8]>,
    /// The address the client connected to (this server's side of the control connection).
    pub local: IpAddr,
}

/// A profile's source addresses and how they rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool<'a> {
    /// The addresses, IPv4 and IPv6 in any order; may be empty.
    pub addresses: &'a [IpAddr],
    /// How sessions share them.
    pub rotation: Rotation,
}

impl Pool<'_> {
    /// Whether the profile constrains the source address at all.
    pub const fn constrains(&self) -> bool {
        !self.addresses.is_empty() || matches!(self.rotation, Rotation::Same)
    }

    /// The source address for a destination of family `dst_is_v6`, for the session `key`.
    pub fn source(&self, dst_is_v6: bool, key: SessionKey<'_>) -> Source {
        if !self.constrains() {
            return Source::Kernel;
        }
        let index = match (self.rotation, key.user) {
            (Rotation::Same, _) => {
                let local = key.local.to_canonical();
                if local.is_ipv6() == dst_is_v6 && !local.is_unspecified() {
                    return Source::Address(local);
                }
                key.sequence
            }
            (Rotation::User, Some(name)) => user_key(name),
            (Rotation::User, None) | (Rotation::Session, _) => key.sequence,
        };
        let of_family = || {
            self.addresses
                .iter()
                .map(|ip| ip.to_canonical())
                .filter(move |ip| ip.is_ipv6() == dst_is_v6)
        };
        let count = of_family().count();
        if count == 0 {
            return Source::Unavailable;
        }
        // `count` is at most the slice length, far below u32::MAX in any configuration.
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let nth = usize::try_from(index % count).unwrap_or(0);
        of_family()
            .nth(nth)
            .map_or(Source::Unavailable, Source::Address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key<'a>(sequence: u32, user: Option<&'a [u8]>, local: &str) -> SessionKey<'a> {
        SessionKey {
            sequence,
            user,
            local: ip(local),
        }
    }

    #[test]
    fn the_most_specific_profile_wins() {
        assert_eq!(select(Some(1), Some(2), Some(3), Some(4)), Some(1));
        assert_eq!(select(None, Some(2), Some(3), Some(4)), Some(2));
        assert_eq!(select(None, None, Some(3), Some(4)), Some(3));
        assert_eq!(select(None, None, None, Some(4)), Some(4));
        assert_eq!(select::<u8>(None, None, None, None), None);
        assert_eq!(select(Some(1), None, None, None), Some(1));
        assert_eq!(select(None, Some(2), None, Some(4)), Some(2));
    }

    #[test]
    fn session_rotation_is_round_robin_within_the_family() {
        let addrs = [ip("10.0.0.1"), ip("fd00::1"), ip("10.0.0.2"), ip("fd00::2")];
        let pool = Pool {
            addresses: &addrs,
            rotation: Rotation::Session,
        };
        let v4: [Source; 4] =
            core::array::from_fn(|i| pool.source(false, key(i as u32, None, "10.9.9.9")));
        assert_eq!(
            v4,
            [
                Source::Address(ip("10.0.0.1")),
                Source::Address(ip("10.0.0.2")),
                Source::Address(ip("10.0.0.1")),
                Source::Address(ip("10.0.0.2")),
            ]
        );
        assert_eq!(
            pool.source(true, key(1, None, "10.9.9.9")),
            Source::Address(ip("fd00::2"))
        );
        // A user does not make session rotation sticky.
        assert_ne!(
            pool.source(false, key(0, Some(b"alice"), "10.9.9.9")),
            pool.source(false, key(1, Some(b"alice"), "10.9.9.9"))
        );
        // The counter wrapping around stays in the pool.
        assert!(matches!(
            pool.source(false, key(u32::MAX, None, "10.9.9.9")),
            Source::Address(_)
        ));
    }

    #[test]
    fn user_rotation_is_sticky_per_user() {
        let addrs = [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")];
        let pool = Pool {
            addresses: &addrs,
            rotation: Rotation::User,
        };
        let alice = pool.source(false, key(0, Some(b"alice"), "10.9.9.9"));
        for sequence in 1..10 {
            assert_eq!(
                pool.source(false, key(sequence, Some(b"alice"), "10.9.9.9")),
                alice
            );
        }
        // Different users spread over the pool (these two hash apart).
        let users: [&[u8]; 6] = [b"alice", b"bob", b"carol", b"dave", b"erin", b"frank"];
        let mut seen = [false; 3];
        for u in users {
            if let Source::Address(a) = pool.source(false, key(0, Some(u), "10.9.9.9")) {
                let i = addrs.iter().position(|x| *x == a).unwrap();
                seen[i] = true;
            }
        }
        assert!(seen.iter().filter(|s| **s).count() >= 2, "{seen:?}");
        // Without a user: round robin.
        assert_eq!(
            pool.source(false, key(1, None, "10.9.9.9")),
            Source::Address(ip("10.0.0.2"))
        );
        assert_eq!(user_key(b"alice"), user_key(b"alice"));
        assert_eq!(user_key(b""), 0x811c_9dc5);
    }

    #[test]
    fn same_rotation_uses_the_address_the_client_reached() {
        let addrs = [ip("fd00::7")];
        let pool = Pool {
            addresses: &addrs,
            rotation: Rotation::Same,
        };
        assert_eq!(
            pool.source(false, key(3, None, "10.0.0.2")),
            Source::Address(ip("10.0.0.2"))
        );
        // A v4-mapped local address is the v4 address.
        assert_eq!(
            pool.source(false, key(3, None, "::ffff:10.0.0.3")),
            Source::Address(ip("10.0.0.3"))
        );
        // The other family: the pool's.
        assert_eq!(
            pool.source(true, key(3, None, "10.0.0.2")),
            Source::Address(ip("fd00::7"))
        );
        // With no pool, `same` still constrains: no address of the family is unavailable.
        let bare = Pool {
            addresses: &[],
            rotation: Rotation::Same,
        };
        assert!(bare.constrains());
        assert_eq!(
            bare.source(true, key(0, None, "10.0.0.2")),
            Source::Unavailable
        );
        assert_eq!(
            bare.source(true, key(0, None, "fd00::9")),
            Source::Address(ip("fd00::9"))
        );
    }

    #[test]
    fn a_pool_without_the_family_refuses_and_no_pool_leaves_it_to_the_kernel() {
        let addrs = [ip("10.0.0.1")];
        let pool = Pool {
            addresses: &addrs,
            rotation: Rotation::Session,
        };
        assert_eq!(
            pool.source(true, key(0, None, "10.9.9.9")),
            Source::Unavailable
        );
        let none = Pool {
            addresses: &[],
            rotation: Rotation::Session,
        };
        assert!(!none.constrains());
        assert_eq!(none.source(true, key(0, None, "::1")), Source::Kernel);
        assert_eq!(
            Pool {
                addresses: &[],
                rotation: Rotation::User
            }
            .source(false, key(0, Some(b"a"), "::1")),
            Source::Kernel
        );
    }
}
