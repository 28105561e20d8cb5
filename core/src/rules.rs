//! Access rules (in progress).
