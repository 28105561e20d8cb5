//! UDP ASSOCIATE: which datagrams a relay forwards, and RFC 1928 §7 fragment reassembly.
//!
//! The header itself lives in [`wire::udp`](crate::wire::udp).
//!
//! * [`Association`] — one association's decisions: the client it belongs to, the
//!   destinations it contacted (the only sources whose datagrams reach the client), the rules
//!   for every datagram, reassembly and the idle deadline. Every front end relays through it,
//!   so every front end drops the same datagrams.
//! * [`Reassembler`] — one §7 reassembly queue and timer, with fixed capacity.
//! * [`protected`] — the decisions about GSS-API-protected datagrams (RFC 1961 §5) around an
//!   association: which are unwrapped, which are dropped, when a drop is logged.

pub mod association;
pub mod protected;
pub mod reassembly;

pub use association::{Association, Contacted, Dropped, Outbound, PeerList, Unresolved};
pub use reassembly::{Reassembled, Reassembler, ReassemblyError};

pub use crate::time::Instant;
