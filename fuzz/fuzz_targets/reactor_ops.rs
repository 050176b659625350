//! Fuzz target: the reactor against what it owes (no stale packet, bytes, buffers and fds conserved),
//! on a real ring or epoll (the backend `TALLY_BACKEND` picks).
//!
//! `cargo fuzz run -s none reactor_ops` (from `fuzz/`, on stable).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_fuzz::reactor_ops::run(data));
