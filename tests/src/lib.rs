//! Shared harness for socksgate's end-to-end tests.
#![forbid(unsafe_code)]
