//! Server (in progress).
