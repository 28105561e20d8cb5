//! The per-client session cap: how many sessions one client may hold at once.
//!
//! A client is its key from [`ClientPrefixes::key`](crate::policy::ClientPrefixes::key) (an
//! IPv4 address or an IPv6 /64 by default), so a host rotating addresses inside its network
//! is one client. [`ClientSessions`] counts the open sessions of each client in a
//! [`ClientTable`] the caller provides; [`admit`](ClientSessions::admit) decides whether a
//! new session may start and counts it, [`release`](ClientSessions::release) uncounts it when
//! it ends. Only clients with open sessions are held, so a table with as many places as the
//! front end has sessions at most never fills; one that does refuses further clients
//! ([`CapRefusal::TableFull`]) rather than let them go uncounted.
//!
//! Every session is counted whether or not a cap is set, so a cap set while sessions are
//! open (a reload) applies to them at once.

use crate::client_table::{ClientTable, Place};
use crate::rules::Cidr;

/// Why [`ClientSessions::admit`] refused a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CapRefusal {
    /// The client holds the cap already.
    AtCap,
    /// The table holds as many clients as it has places; this one is new.
    TableFull,
}

/// Open sessions per client; see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct ClientSessions<S> {
    table: ClientTable<u32, S>,
}

impl<S: AsRef<[Place<u32>]> + AsMut<[Place<u32>]>> ClientSessions<S> {
    /// No session counted, in `places` (a table holds at most one client per place),
    /// hashing with `hash_key` (see [`ClientTable::new`]).
    pub fn new(places: S, hash_key: [u64; 2]) -> Self {
        Self {
            table: ClientTable::new(places, hash_key),
        }
    }

    /// Counts a new session of `client` unless it holds `cap` sessions already (`cap` 0:
    /// no cap; the session is still counted). Every admitted session must be
    /// [`release`](Self::release)d once.
    pub fn admit(&mut self, client: Cidr, cap: usize) -> Result<(), CapRefusal> {
        let held = self.sessions_of(&client);
        if cap > 0 && held >= cap {
            return Err(CapRefusal::AtCap);
        }
        let count = self
            .table
            .get_or_insert(client, 0)
            .map_err(|_| CapRefusal::TableFull)?;
        *count = count.saturating_add(1);
        Ok(())
    }

    /// Uncounts an admitted session of `client`; the client is forgotten with its last.
    pub fn release(&mut self, client: &Cidr) {
        let Some(count) = self.table.get_mut(client) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.table.remove(client);
        }
    }

    /// Sessions `client` holds.
    pub fn sessions_of(&self, client: &Cidr) -> usize {
        self.table
            .get(client)
            .map_or(0, |&n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Clients holding sessions.
    pub fn clients(&self) -> usize {
        self.table.len()
    }

    /// Clients the table can hold at once.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }
}

#[cfg(test)]
mod tests {
    use core::net::IpAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::ClientPrefixes;

    fn key(ip: &str) -> Cidr {
        ClientPrefixes::DEFAULT.key(ip.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn the_cap_counts_per_client_network() {
        let mut s = ClientSessions::new([Place::EMPTY; 4], [0, 0]);
        s.admit(key("2001:db8::1"), 2).unwrap();
        s.admit(key("2001:db8::2:3"), 2).unwrap();
        assert_eq!(
            s.admit(key("2001:db8::ffff"), 2),
            Err(CapRefusal::AtCap),
            "same /64"
        );
        s.admit(key("2001:db8:0:1::1"), 2).unwrap();
        s.admit(key("::ffff:192.0.2.1"), 1).unwrap();
        assert_eq!(
            s.admit(key("192.0.2.1"), 1),
            Err(CapRefusal::AtCap),
            "mapped"
        );
        assert_eq!(s.sessions_of(&key("2001:db8::")), 2);
        s.release(&key("2001:db8::1"));
        s.admit(key("2001:db8::1"), 2).unwrap();
        assert_eq!(s.clients(), 3);
    }

    #[test]
    fn no_cap_still_counts_and_a_full_table_refuses_new_clients() {
        let mut s = ClientSessions::new([Place::EMPTY; 2], [0, 0]);
        for _ in 0..5 {
            s.admit(key("192.0.2.1"), 0).unwrap();
        }
        assert_eq!(s.sessions_of(&key("192.0.2.1")), 5);
        assert_eq!(s.admit(key("192.0.2.1"), 5), Err(CapRefusal::AtCap));
        s.admit(key("192.0.2.2"), 0).unwrap();
        assert_eq!(s.admit(key("192.0.2.3"), 0), Err(CapRefusal::TableFull));
        s.release(&key("192.0.2.2"));
        s.admit(key("192.0.2.3"), 0).unwrap();
        // Releasing what was never admitted changes nothing.
        s.release(&key("192.0.2.9"));
        assert_eq!(s.clients(), 2);
    }

    proptest! {
        /// Whatever the order of admissions and releases, a client never holds more than
        /// the cap, and the table holds exactly the clients with sessions.
        #[test]
        fn never_over_the_cap(
            cap in 0..4usize,
            ops in proptest::collection::vec((any::<bool>(), 0..6u8), 0..300),
        ) {
            let mut s = ClientSessions::new([Place::EMPTY; 8], [3, 4]);
            let mut model = [0usize; 6];
            for (open, c) in ops {
                let k = Cidr::host(IpAddr::from([10, 0, 0, c]));
                let held = model.get_mut(usize::from(c)).unwrap();
                if open {
                    let admitted = s.admit(k, cap).is_ok();
                    prop_assert_eq!(admitted, cap == 0 || *held < cap);
                    if admitted {
                        *held += 1;
                    }
                } else if *held > 0 {
                    s.release(&k);
                    *held -= 1;
                }
                prop_assert_eq!(s.sessions_of(&k), *held);
                prop_assert_eq!(s.clients(), model.iter().filter(|&&n| n > 0).count());
            }
        }
    }
}
