//! Client (in progress).
