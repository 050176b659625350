//! Timers: [`sleep`], [`sleep_until`], [`timeout`] and [`interval`].
//!
//! Every timer of an executor lives in one binary heap of deadlines (see
//! `timers.rs`): insert is O(log n), cancel O(1). The reactor is never given
//! one kernel timeout per timer: each crank waits at most until the earliest
//! deadline, in a single `io_uring_enter`.
//!
//! The clock is real, or fake under [`TestExecutor`](crate::TestExecutor),
//! where time moves only when the test advances it.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

pub use std::time::Instant;

use crate::context::{self, Core};
use crate::timers::TimerKey;

/// The current time on the running executor's clock (fake under a
/// [`TestExecutor`](crate::TestExecutor)).
///
/// # Panics
///
/// Panics outside a running tally executor.
pub fn now() -> Instant {
    context::current().clock.now()
}

/// A future that completes at a deadline. Dropping it cancels the timer.
pub struct Sleep {
    deadline: Instant,
    /// The duration of a sleep made outside any executor, until it binds:
    /// a fake clock counts it from its own now, not from the real one.
    unbound: Option<Duration>,
    key: Option<TimerKey>,
    exec: Weak<Core>,
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
    match context::try_current() {
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
    Sleep::new(deadline, context::try_current().map_or_else(Weak::new, |e| Rc::downgrade(&e)))
}

impl Sleep {
    fn new(deadline: Instant, exec: Weak<Core>) -> Sleep {
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
                let exec = context::current();
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
