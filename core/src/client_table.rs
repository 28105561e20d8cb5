//! A fixed-capacity map from client networks to small values, in storage the caller owns.
//!
//! The per-client decisions ([`crate::client_limits`], [`crate::login_throttle`]) keep one
//! value per client key (a [`Cidr`] from [`ClientPrefixes::key`](crate::policy::ClientPrefixes::key)).
//! The table lives in whatever the caller gives it — an array on a microcontroller, a boxed
//! slice of tens of thousands of places on a server — so the core needs no allocator and the
//! capacity is the caller's choice: a table holds at most as many keys as it has places.
//!
//! Open addressing with linear probing and backward-shift deletion (no tombstones), hashed
//! with SipHash-1-3 under a key the caller supplies: clients choose their addresses, so a
//! server should pass a random key to keep them from crowding one probe sequence. Finding a
//! key probes from its home place to the first empty place, so a table kept at most three
//! quarters full ([`places_for`]) answers in a few probes; a full one still answers, by
//! scanning every place. A table of at most [`SCANNED`] places is not hashed but scanned
//! from its first place: as quick at that size, and for an array of places the hash code is
//! then left out of the build (a firmware's tables are that small). Nothing here panics.
//!
//! Written here rather than taken from `heapless::IndexMap`: that map's capacity is a
//! power-of-two type parameter and it is built by value, which puts a server-sized table on
//! the stack; this one works on any slice.

use core::hash::{Hash, Hasher};

use siphasher::sip::SipHasher13;

use crate::rules::Cidr;

/// One place of a [`ClientTable`]: empty or one client's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Place<V>(Option<(Cidr, V)>);

impl<V> Place<V> {
    /// An empty place (to fill the storage with).
    pub const EMPTY: Self = Self(None);
}

impl<V> Default for Place<V> {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Tables of at most this many places are scanned in order rather than hashed.
pub const SCANNED: usize = 64;

/// Places a table needs to hold `clients` keys while at most three quarters full, the load
/// the [`login_throttle`](crate::login_throttle) keeps by evicting.
pub const fn places_for(clients: usize) -> usize {
    clients.saturating_add(clients.div_ceil(3))
}

/// The table is full: no place for another key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Full;

/// A map from client keys to `V` in the places `S` (`[Place<V>; N]`, `Box<[Place<V>]>`, …);
/// see the [module documentation](self).
#[derive(Clone)]
pub struct ClientTable<V, S> {
    places: S,
    len: usize,
    hash_key: (u64, u64),
    _value: core::marker::PhantomData<V>,
}

impl<V, S> core::fmt::Debug for ClientTable<V, S> {
    /// The count only: a server's table has tens of thousands of places.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientTable")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V: Copy, S: AsRef<[Place<V>]> + AsMut<[Place<V>]>> ClientTable<V, S> {
    /// An empty table in `places` (whatever they held is cleared), hashing with `hash_key`
    /// (random on a server; any value where clients cannot fill the table anyway).
    pub fn new(mut places: S, hash_key: [u64; 2]) -> Self {
        places.as_mut().fill(Place::EMPTY);
        Self {
            places,
            len: 0,
            hash_key: (hash_key[0], hash_key[1]),
            _value: core::marker::PhantomData,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys the table can hold: its places.
    pub fn capacity(&self) -> usize {
        self.places.as_ref().len()
    }

    fn home(&self, key: &Cidr) -> usize {
        // For an array the length is a constant here, so a small table has no hashing code.
        let n = self.places.as_ref().len();
        if n <= SCANNED {
            return 0;
        }
        // The remainder is below the slice length, which fits in usize.
        usize::try_from(hash(key, self.hash_key) % n as u64).unwrap_or(0)
    }

    /// Where `key` is (`Ok`), or the empty place where it would go (`Err(Some)`), or
    /// `Err(None)` when the table is full without it.
    fn find(&self, key: &Cidr) -> Result<usize, Option<usize>> {
        let places = self.places.as_ref();
        let mut i = self.home(key);
        for _ in 0..places.len() {
            match places.get(i) {
                Some(Place(Some((k, _)))) if k == key => return Ok(i),
                Some(Place(None)) => return Err(Some(i)),
                _ => i = next(i, places.len()),
            }
        }
        Err(None)
    }

    /// The value of `key`.
    pub fn get(&self, key: &Cidr) -> Option<&V> {
        let i = self.find(key).ok()?;
        match self.places.as_ref().get(i) {
            Some(Place(Some((_, v)))) => Some(v),
            _ => None,
        }
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &Cidr) -> Option<&mut V> {
        let i = self.find(key).ok()?;
        match self.places.as_mut().get_mut(i) {
            Some(Place(Some((_, v)))) => Some(v),
            _ => None,
        }
    }

    /// The value of `key`, inserting `value` first if `key` is absent; [`Full`] if it is
    /// absent and there is no place for it.
    pub fn get_or_insert(&mut self, key: Cidr, value: V) -> Result<&mut V, Full> {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(Some(i)) => {
                if let Some(place) = self.places.as_mut().get_mut(i) {
                    *place = Place(Some((key, value)));
                    self.len += 1;
                }
                i
            }
            Err(None) => return Err(Full),
        };
        match self.places.as_mut().get_mut(i) {
            Some(Place(Some((_, v)))) => Ok(v),
            _ => Err(Full),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &Cidr) -> Option<V> {
        let hole = self.find(key).ok()?;
        let removed = self.take(hole);
        self.close_gap(hole);
        removed
    }

    fn take(&mut self, i: usize) -> Option<V> {
        let place = self.places.as_mut().get_mut(i)?;
        let (_, v) = core::mem::replace(place, Place::EMPTY).0?;
        self.len = self.len.saturating_sub(1);
        Some(v)
    }

    /// Backward-shift deletion: moves later members of the probe run into the hole left at
    /// `hole` when their home is not between the hole and where they are, so every key
    /// stays reachable from its home without tombstones.
    fn close_gap(&mut self, mut hole: usize) {
        let n = self.places.as_ref().len();
        let mut j = hole;
        for _ in 0..n {
            j = next(j, n);
            let Some(&Place(Some((key, value)))) = self.places.as_ref().get(j) else {
                return;
            };
            let home = self.home(&key);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                let places = self.places.as_mut();
                if let Some(place) = places.get_mut(hole) {
                    *place = Place(Some((key, value)));
                }
                if let Some(place) = places.get_mut(j) {
                    *place = Place::EMPTY;
                }
                hole = j;
            }
        }
    }

    /// Every key and its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Cidr, &V)> {
        self.places
            .as_ref()
            .iter()
            .filter_map(|p| p.0.as_ref().map(|(k, v)| (k, v)))
    }
}

/// One copy of the hash for every table type.
#[inline(never)]
fn hash(key: &Cidr, (k0, k1): (u64, u64)) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(k0, k1);
    key.hash(&mut hasher);
    hasher.finish()
}

fn next(i: usize, n: usize) -> usize {
    if i + 1 >= n { 0 } else { i + 1 }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr};
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn key(i: u8) -> Cidr {
        Cidr::host(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)))
    }

    #[test]
    fn inserts_finds_removes_and_fills_up() {
        let mut t = ClientTable::new([Place::EMPTY; 4], [1, 2]);
        for i in 0..4 {
            *t.get_or_insert(key(i), 0u32).unwrap() += u32::from(i);
        }
        assert_eq!(t.len(), 4);
        assert_eq!(t.get_or_insert(key(9), 0), Err(Full));
        assert_eq!(
            t.get(&key(9)),
            None,
            "a full table still answers for absent keys"
        );
        assert_eq!(t.get(&key(3)), Some(&3));
        assert_eq!(t.remove(&key(3)), Some(3));
        assert_eq!(t.remove(&key(3)), None);
        assert_eq!(*t.get_or_insert(key(9), 7).unwrap(), 7);
        assert_eq!(t.iter().count(), 4);
    }

    #[test]
    fn a_hashed_table_spreads_keys() {
        let mut storage = vec![Place::EMPTY; 1024];
        let mut t = ClientTable::new(&mut storage[..], [7, 8]);
        for i in 0..=255 {
            t.get_or_insert(key(i), ()).unwrap();
        }
        // Keys are not packed from the first place as in a scanned table.
        assert!(storage[..256].iter().filter(|p| p.0.is_some()).count() < 200);
    }

    #[test]
    fn an_empty_table_holds_nothing() {
        let mut t = ClientTable::<u8, [Place<u8>; 0]>::new([], [0, 0]);
        assert_eq!(t.get_or_insert(key(1), 1), Err(Full));
        assert_eq!(t.get(&key(1)), None);
        assert_eq!(t.remove(&key(1)), None);
    }

    #[test]
    fn places_for_keeps_a_quarter_free() {
        for clients in [1, 3, 16, 32, 16_384, 65_536] {
            let n = places_for(clients);
            assert!(n - n / 4 >= clients, "{clients} → {n}");
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8, u16),
        Remove(u8),
        Add(u8),
    }

    /// Keys 0..`keys`: a few more than the places, so tables fill.
    fn op(keys: u8) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..keys, any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0..keys).prop_map(Op::Remove),
            (0..keys).prop_map(Op::Add),
        ]
    }

    /// A table size, scanned or hashed, and operations on a few more keys than it holds:
    /// long probe runs, wrap-around and deletion inside them.
    fn sized_ops() -> impl Strategy<Value = (usize, Vec<Op>)> {
        prop_oneof![0..10usize, (SCANNED + 1)..(SCANNED + 12)].prop_flat_map(|places| {
            let keys = u8::try_from(places + 4).unwrap();
            (Just(places), proptest::collection::vec(op(keys), 0..400))
        })
    }

    proptest! {
        /// The table behaves as a map (until full), whatever the hash key and the sequence.
        #[test]
        fn behaves_as_a_map(hash_key in any::<[u64; 2]>(), (places, ops) in sized_ops()) {
            let mut storage = [Place::EMPTY; SCANNED + 12];
            let storage = &mut storage[..places];
            let keys = u8::try_from(places + 4).unwrap();
            let mut t = ClientTable::new(storage, hash_key);
            let mut model = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let got = t.get_or_insert(key(k), v).map(|v| *v);
                        if let Some(old) = model.get(&k) {
                            prop_assert_eq!(got, Ok(*old));
                        } else if model.len() < places {
                            prop_assert_eq!(got, Ok(v));
                            model.insert(k, v);
                        } else {
                            prop_assert_eq!(got, Err(Full));
                        }
                    }
                    Op::Remove(k) => prop_assert_eq!(t.remove(&key(k)), model.remove(&k)),
                    Op::Add(k) => {
                        if let Some(v) = t.get_mut(&key(k)) {
                            *v = v.wrapping_add(1);
                        }
                        if let Some(v) = model.get_mut(&k) {
                            *v = v.wrapping_add(1);
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                for k in 0..keys {
                    prop_assert_eq!(t.get(&key(k)), model.get(&k));
                }
            }
        }
    }
}
