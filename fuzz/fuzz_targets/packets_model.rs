//! Fuzz target: `tally-packets` against its sequential reference model.
//!
//! `cargo fuzz run -s none packets_model` (from `fuzz/`, on stable).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tally_fuzz::packets_model::run(data));
