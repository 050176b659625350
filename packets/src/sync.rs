//! The atomics facade: `std`'s atomics normally, loom's under `--cfg loom`.
//!
//! Every atomic in this crate is reached through here, so the loom tests check
//! exactly the code that ships.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
