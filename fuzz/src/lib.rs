//! Fuzz drivers for tally, one module per target.
//!
//! Each driver is plain code over `std` and the crate it fuzzes, so the stable
//! test suite can replay the committed corpus through it (see
//! `fuzz_corpus_replay.rs` in the tests of `packets`, `reactor` and
//! `compat-mio`); the files in `fuzz_targets/` only hand libFuzzer's bytes
//! to it.

pub mod mio_readiness;
pub mod packets_model;
pub mod reactor_ops;
pub mod token_slab;
