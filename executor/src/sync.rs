//! The synchronisation facade: `std`'s atomics and `parking_lot`'s mutex
//! normally, loom's under `--cfg loom`.
//!
//! What a task's waker shares with its executor (the `scheduled` flag and
//! the remote run queue) is reached through here, so `loom_model.rs` checks
//! the code that ships.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicBool;

#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicBool;

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
