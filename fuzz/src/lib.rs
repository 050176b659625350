//! Fuzz drivers for tally, one module per target.
//!
//! Each driver is plain code over `std` and the crate it fuzzes, so the stable
//! test suite can replay the committed corpus through it (see
//! `packets/tests/fuzz_corpus_replay.rs` and
//! `compat-mio/tests/fuzz_corpus_replay.rs`); the files in `fuzz_targets/`
//! only hand libFuzzer's bytes to it.

pub mod mio_readiness;
pub mod packets_model;
