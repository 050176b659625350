//! [`Waiters`]: the wakers of every future waiting on one shared
//! [`Registration`](tally_reactor::Registration) at once.
//!
//! A registration keeps only the waker of the last future to poll it. When
//! several tasks wait on one socket (two `accept`s on one listener, two
//! `recv_from`s on one datagram socket), that poller may go away (a
//! `timeout` or `select!` drops it), or take the readiness the others also
//! needed, and the registration then wakes no one who is still waiting.
//! So each waiting future also keeps its own waker here, in an entry its
//! [`Waiter`] owns; and whenever a waiter finishes or is dropped, it wakes
//! one of the others, marked [`woken`](Waiter::take_woken), which tries its
//! operation again and, if it must still wait, polls the registration and
//! so puts its own waker there. That one in turn wakes the next when it
//! finishes, so a burst of readiness is handed along until it runs out.
//!
//! Wakers are woken and dropped only once no borrow is held. A lone waiter
//! allocates nothing after its first wait: the slab keeps its capacity.

use std::cell::RefCell;
use std::fmt;
use std::task::Waker;

use slab::Slab;

/// The wakers of the futures waiting on one registration.
#[derive(Default)]
pub(crate) struct Waiters {
    list: Slab<Entry>,
}

/// One waiting future's waker, and whether another waiter woke it.
struct Entry {
    waker: Waker,
    woken: bool,
}

impl Waiters {
    /// No waiters.
    pub(crate) fn new() -> Waiters {
        Waiters { list: Slab::new() }
    }
}

impl fmt::Debug for Waiters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiters").field("len", &self.list.len()).finish()
    }
}

/// One future's place among the [`Waiters`] found by `waiters` in `cell`.
/// Dropping it (the future finished, or was dropped) leaves the list and
/// wakes one of the others not already woken, if there is one.
pub(crate) struct Waiter<'a, T> {
    cell: &'a RefCell<T>,
    waiters: fn(&mut T) -> &mut Waiters,
    key: Option<usize>,
}

impl<'a, T> Waiter<'a, T> {
    /// A waiter not yet waiting. Its entry is made by the first
    /// [`wait`](Self::wait).
    pub(crate) fn new(cell: &'a RefCell<T>, waiters: fn(&mut T) -> &mut Waiters) -> Self {
        Waiter { cell, waiters, key: None }
    }

    /// Records that this future waits, woken by `waker`; clears
    /// [`take_woken`](Self::take_woken). Call it when the future returns
    /// `Pending`, having polled the registration, and with no borrow of
    /// the cell held.
    pub(crate) fn wait(&mut self, waker: &Waker) {
        let mut cell = self.cell.borrow_mut();
        let list = &mut (self.waiters)(&mut cell).list;
        let replaced = match self.key {
            Some(key) => {
                let entry = &mut list[key];
                entry.woken = false;
                if entry.waker.will_wake(waker) {
                    None
                } else {
                    Some(std::mem::replace(&mut entry.waker, waker.clone()))
                }
            }
            None => {
                self.key = Some(list.insert(Entry { waker: waker.clone(), woken: false }));
                None
            }
        };
        drop(cell);
        drop(replaced);
    }

    /// Whether another waiter woke this one since its last
    /// [`wait`](Self::wait), clearing the mark: the readiness it waited
    /// for may have been taken by another, so it should try its operation
    /// again rather than wait on the registration for what already came.
    pub(crate) fn take_woken(&mut self) -> bool {
        let Some(key) = self.key else { return false };
        let mut cell = self.cell.borrow_mut();
        std::mem::take(&mut (self.waiters)(&mut cell).list[key].woken)
    }
}

impl<T> Drop for Waiter<'_, T> {
    fn drop(&mut self) {
        let mut cell = self.cell.borrow_mut();
        let list = &mut (self.waiters)(&mut cell).list;
        let mine = self.key.take().map(|key| list.remove(key));
        // One already woken will run anyway: wake another.
        let next = list.iter_mut().find(|(_, entry)| !entry.woken).map(|(_, entry)| {
            entry.woken = true;
            entry.waker.clone()
        });
        drop(cell);
        drop(mine);
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Waiter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter").field("key", &self.key).finish()
    }
}
