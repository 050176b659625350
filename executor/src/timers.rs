//! [`Timers`], the timer heap of one executor, and [`Clock`], the time its
//! deadlines are measured on.
//!
//! Every timer of an executor lives in one binary heap of deadlines plus a
//! slab of slots. Insert is O(log n); cancel is O(1) (the slot is freed and
//! its generation bumped, so the heap entry goes stale and is skipped when it
//! reaches the top; the heap is rebuilt when stale entries outnumber live
//! ones). The futures that use them ([`Sleep`](crate::time::Sleep) and the
//! rest) are in [`time`](crate::time); this module knows nothing of
//! executors, so that the executor's core can hold both without an import
//! loop.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::Waker;
use std::time::{Duration, Instant};

/// The executor's clock.
pub(crate) enum Clock {
    Real,
    Fake(Cell<Instant>),
}

impl Clock {
    pub(crate) fn fake() -> Clock {
        Clock::Fake(Cell::new(Instant::now()))
    }

    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::Real => Instant::now(),
            Clock::Fake(t) => t.get(),
        }
    }

    pub(crate) fn is_fake(&self) -> bool {
        matches!(self, Clock::Fake(_))
    }

    pub(crate) fn advance(&self, by: Duration) {
        if let Clock::Fake(t) = self {
            t.set(t.get() + by);
        }
    }
}

/// A slot in the timer slab.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TimerKey {
    slot: u32,
    generation: u32,
}

struct TimerSlot {
    generation: u32,
    armed: bool,
    waker: Option<Waker>,
}

/// The timer heap of one executor.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    slots: Vec<TimerSlot>,
    free: Vec<u32>,
    live: usize,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers { heap: BinaryHeap::new(), slots: Vec::new(), free: Vec::new(), live: 0 }
    }

    /// Whether the heap holds no entry at all, live or stale: then nothing
    /// can fire and the clock need not be read.
    pub(crate) fn is_idle(&self) -> bool {
        self.heap.is_empty()
    }

    /// How many timers are armed.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerKey {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(TimerSlot { generation: 0, armed: false, waker: None });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.armed = true;
        s.waker = Some(waker);
        self.live += 1;
        self.heap.push(Reverse((deadline, slot, s.generation)));
        TimerKey { slot, generation: s.generation }
    }

    /// Replaces the waker of an armed timer. Returns the old one, to be
    /// dropped by the caller.
    pub(crate) fn set_waker(&mut self, key: TimerKey, waker: &Waker) -> Option<Waker> {
        let s = self.slot_mut(key)?;
        match &s.waker {
            Some(w) if w.will_wake(waker) => None,
            _ => s.waker.replace(waker.clone()),
        }
    }

    /// Whether the timer is still armed (not fired, not cancelled).
    pub(crate) fn is_armed(&self, key: TimerKey) -> bool {
        self.slots.get(key.slot as usize).is_some_and(|s| s.generation == key.generation && s.armed)
    }

    /// Cancels or retires a timer. Returns its waker, to be dropped by the
    /// caller outside any borrow.
    pub(crate) fn remove(&mut self, key: TimerKey) -> Option<Waker> {
        let s = self.slots.get_mut(key.slot as usize)?;
        if s.generation != key.generation {
            return None;
        }
        if s.armed {
            self.live -= 1;
        }
        s.armed = false;
        s.generation = s.generation.wrapping_add(1);
        let waker = s.waker.take();
        self.free.push(key.slot);
        if self.heap.len() > 64 && self.heap.len() > 2 * self.live {
            self.compact();
        }
        waker
    }

    fn slot_mut(&mut self, key: TimerKey) -> Option<&mut TimerSlot> {
        self.slots.get_mut(key.slot as usize).filter(|s| s.generation == key.generation && s.armed)
    }

    fn is_live(&self, slot: u32, generation: u32) -> bool {
        let s = &self.slots[slot as usize];
        s.generation == generation && s.armed
    }

    /// Drops heap entries of cancelled timers.
    fn compact(&mut self) {
        let slots = &self.slots;
        self.heap.retain(|Reverse((_, slot, g))| {
            let s = &slots[*slot as usize];
            s.generation == *g && s.armed
        });
    }

    /// The earliest armed deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, slot, generation))) = self.heap.peek() {
            if self.is_live(slot, generation) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Disarms every timer due at `now` and moves its waker into `out`.
    pub(crate) fn fire(&mut self, now: Instant, out: &mut Vec<Waker>) {
        while let Some(&Reverse((deadline, slot, generation))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if self.is_live(slot, generation) {
                let s = &mut self.slots[slot as usize];
                s.armed = false;
                self.live -= 1;
                if let Some(w) = s.waker.take() {
                    out.push(w);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Nop;
    impl Wake for Nop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn fires_in_order_and_skips_cancelled() {
        let w = Waker::from(Arc::new(Nop));
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let a = timers.insert(t0 + Duration::from_millis(3), w.clone());
        let b = timers.insert(t0 + Duration::from_millis(1), w.clone());
        let c = timers.insert(t0 + Duration::from_millis(2), w.clone());
        assert!(timers.remove(c).is_some());
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(1)));
        let mut out = Vec::new();
        timers.fire(t0 + Duration::from_millis(2), &mut out);
        assert_eq!(out.len(), 1);
        assert!(!timers.is_armed(b));
        assert!(timers.is_armed(a));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn compaction_keeps_live_timers() {
        let w = Waker::from(Arc::new(Nop));
        let t0 = Instant::now();
        let mut timers = Timers::new();
        let keys: Vec<_> =
            (0..1000).map(|i| timers.insert(t0 + Duration::from_micros(i), w.clone())).collect();
        for k in keys.iter().step_by(2) {
            timers.remove(*k);
        }
        assert!(timers.heap.len() <= 1000);
        let mut out = Vec::new();
        timers.fire(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 500);
    }
}
