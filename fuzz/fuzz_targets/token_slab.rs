//! Fuzz target: the generational token slab against a plain model, and
//! the reactor's registrations (dropped busy, their slots reused) against
//! what each one issued, on a real ring or epoll (the backend
//! `TALLY_BACKEND` picks).
//!
//! `cargo fuzz run -s none token_slab` (from `fuzz/`, on stable).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_fuzz::token_slab::run(data));
