//! Fuzz target: compat-mio's readiness against a model of mio's promises,
//! on a real `Poll` (the backend `TALLY_BACKEND` picks).
//!
//! `cargo fuzz run -s none mio_readiness` (from `fuzz/`, on stable).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_fuzz::mio_readiness::run(data));
