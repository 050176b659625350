//! The synchronisation facade: `std`'s atomics and `parking_lot`'s mutex
//! normally, loom's under `--cfg loom`.
//!
//! Everything other threads touch (the remote queue and its sleep
//! handshake, a registration's user queue and flags) is reached through
//! here, so the loom models in `remote/loom_model.rs` check the code that
//! ships.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

/// loom's mutex with `parking_lot`'s face: `lock` cannot be poisoned.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Mutex<T> {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().expect("a loom model thread panicked holding the lock")
    }
}
