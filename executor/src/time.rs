//! Timers: [`sleep`], [`sleep_until`], [`timeout`] and [`interval`].
//!
//! Every timer of an executor lives in one binary heap of deadlines plus a
//! slab of slots. Insert is O(log n); cancel is O(1) (the slot is freed and
//! its generation bumped, so the heap entry goes stale and is skipped when it
//! reaches the top; the heap is rebuilt when stale entries outnumber live
//! ones). The reactor is never given one kernel timeout per timer: each
//! crank waits at most until the earliest deadline, in a single
//! `io_uring_enter`.
//!
//! The clock is real, or fake under [`TestExecutor`](crate::TestExecutor),
//! where time moves only when the test advances it.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub use std::time::Instant;

use crate::executor::{self, Executor};

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

/// The current time on the running executor's clock (fake under a
/// [`TestExecutor`](crate::TestExecutor)).
///
/// # Panics
///
/// Panics outside a running tally executor.
pub fn now() -> Instant {
    executor::current().clock.now()
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

/// A future that completes at a deadline. Dropping it cancels the timer.
pub struct Sleep {
    deadline: Instant,
    /// The duration of a sleep made outside any executor, until it binds:
    /// a fake clock counts it from its own now, not from the real one.
    unbound: Option<Duration>,
    key: Option<TimerKey>,
    exec: Weak<Executor>,
}

/// About 30 years: what a deadline past `Instant`'s range becomes (as in
/// tokio), so that `sleep(Duration::MAX)` means "never" instead of panicking.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `now + duration`, saturated to [`FAR_FUTURE`] from `now` when the sum
/// does not fit (or is further away than that).
fn deadline_after(now: Instant, duration: Duration) -> Instant {
    now + duration.min(FAR_FUTURE)
}

/// Waits until `duration` has passed. A duration too long for `Instant`
/// (say `Duration::MAX`) saturates to about 30 years: in effect, never.
///
/// It may be created outside an executor (say, as the argument of
/// `block_on`); it then binds to the executor that first polls it, and
/// measures from its creation on the real clock, or from the moment it
/// binds on a fake one ([`TestExecutor`](crate::TestExecutor)), whose time
/// has nothing to do with the real clock's.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let rt = tally::LocalReactor::new().unwrap();
/// rt.block_on(tally::time::sleep(Duration::from_millis(2)));
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    match executor::try_current() {
        Some(exec) => Sleep::new(deadline_after(exec.clock.now(), duration), Rc::downgrade(&exec)),
        None => {
            let mut sleep = Sleep::new(deadline_after(Instant::now(), duration), Weak::new());
            sleep.unbound = Some(duration);
            sleep
        }
    }
}

/// Waits until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep::new(deadline, executor::try_current().map_or_else(Weak::new, |e| Rc::downgrade(&e)))
}

impl Sleep {
    fn new(deadline: Instant, exec: Weak<Executor>) -> Sleep {
        Sleep { deadline, unbound: None, key: None, exec }
    }

    /// The instant this sleep completes at. For a sleep made outside an
    /// executor, it is counted on the real clock until the sleep is first
    /// polled.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline, re-arming the timer.
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.unbound = None;
        self.deadline = deadline;
    }

    fn cancel(&mut self) {
        if let (Some(key), Some(exec)) = (self.key.take(), self.exec.upgrade()) {
            let waker = exec.timers.borrow_mut().remove(key);
            drop(waker);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let exec = match self.exec.upgrade() {
            Some(exec) => exec,
            None if self.key.is_none() => {
                // Never bound (created outside an executor): bind now.
                let exec = executor::current();
                self.exec = Rc::downgrade(&exec);
                if let Some(duration) = self.unbound.take() {
                    if exec.clock.is_fake() {
                        self.deadline = deadline_after(exec.clock.now(), duration);
                    }
                }
                exec
            }
            // Bound, and the executor is gone: nothing will ever fire it.
            None => return Poll::Ready(()),
        };
        if exec.clock.now() >= self.deadline {
            self.cancel();
            return Poll::Ready(());
        }
        let mut timers = exec.timers.borrow_mut();
        let old = match self.key {
            Some(key) if timers.is_armed(key) => timers.set_waker(key, cx.waker()),
            Some(key) => {
                // Fired early (the fake clock moved back, or a spurious
                // fire): re-arm.
                let old = timers.remove(key);
                self.key = Some(timers.insert(self.deadline, cx.waker().clone()));
                old
            }
            None => {
                self.key = Some(timers.insert(self.deadline, cx.waker().clone()));
                None
            }
        };
        drop(timers);
        drop(old);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep").field("deadline", &self.deadline).finish()
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future` for at most `duration`. The future is polled first, so
/// one that is already ready wins even with a zero duration.
///
/// # Errors
///
/// [`Elapsed`] if the deadline passed first; `future` is then dropped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let rt = tally::LocalReactor::new().unwrap();
/// let r = rt.block_on(tally::time::timeout(
///     Duration::from_millis(1),
///     std::future::pending::<()>(),
/// ));
/// assert!(r.is_err());
/// ```
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut sleep = sleep(duration);
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(&mut sleep).poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// Ticks every `period`, starting one period from now.
///
/// A tick that falls behind (the task was busy) fires at once, and the next
/// deadline is counted from the missed one, so ticks do not drift; when a
/// whole period or more was missed, the schedule restarts from now: missed
/// ticks are not made up in a burst.
///
/// Made outside an executor, it binds to the executor that first polls it,
/// as [`sleep`] does.
///
/// # Panics
///
/// Panics if `period` is zero.
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    let sleep = sleep(period);
    Interval { period, sleep }
}

/// See [`interval`].
#[derive(Debug)]
pub struct Interval {
    period: Duration,
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick and returns its scheduled instant.
    pub async fn tick(&mut self) -> Instant {
        poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Read after the poll: a sleep made outside an executor fixes its
        // deadline when it binds.
        let deadline = self.sleep.deadline;
        let now = self.sleep.exec.upgrade().map_or_else(Instant::now, |e| e.clock.now());
        let mut next = deadline_after(deadline, self.period);
        if next <= now {
            next = deadline_after(now, self.period);
        }
        self.sleep.reset(next);
        Poll::Ready(deadline)
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
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
