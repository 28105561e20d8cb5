//! Browser and edge-runtime binding of the socksgate inspector.
#![forbid(unsafe_code)]
