//! [`TestExecutor`]: an executor with a fake clock, for deterministic tests
//! of timer logic, in the manner of fuchsia-async's.

use std::future::Future;
use std::io;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::executor::{Builder, LocalReactor};
use crate::task::JoinHandle;

/// An executor whose clock moves only when told to.
///
/// Real I/O still runs on a real ring; only timers see fake time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use std::task::Poll;
///
/// let ex = tally::TestExecutor::new().unwrap();
/// let mut fut = Box::pin(async {
///     tally::time::sleep(Duration::from_secs(3600)).await;
///     "an hour later"
/// });
/// assert_eq!(ex.run_until_stalled(&mut fut), Poll::Pending);
/// ex.advance(Duration::from_secs(3599));
/// assert_eq!(ex.run_until_stalled(&mut fut), Poll::Pending);
/// ex.advance(Duration::from_secs(1));
/// assert_eq!(ex.run_until_stalled(&mut fut), Poll::Ready("an hour later"));
/// ```
#[derive(Debug)]
pub struct TestExecutor {
    local: LocalReactor,
}

impl TestExecutor {
    /// A test executor whose fake clock starts at the real `Instant::now()`.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> io::Result<TestExecutor> {
        Ok(TestExecutor { local: Builder::new().build_fake_clock()? })
    }

    /// Spawns a task.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.local.spawn(future)
    }

    /// Runs tasks, I/O completions and due timers until nothing can make
    /// progress without the clock moving or an outside event; polls
    /// `future` whenever it is woken. Never blocks.
    pub fn run_until_stalled<F: Future + Unpin>(&self, future: &mut F) -> Poll<F::Output> {
        self.local.exec.run_until_stalled(future)
    }

    /// Moves the fake clock forward. Timers now due fire at the next
    /// [`run_until_stalled`](Self::run_until_stalled).
    pub fn advance(&self, by: Duration) {
        self.local.exec.core.clock.advance(by);
    }

    /// The fake clock's time.
    pub fn now(&self) -> Instant {
        self.local.exec.core.clock.now()
    }

    /// How many timers are armed.
    pub fn pending_timers(&self) -> usize {
        self.local.exec.core.timers.borrow().len()
    }

    /// The underlying local reactor.
    pub fn local(&self) -> &LocalReactor {
        &self.local
    }
}
