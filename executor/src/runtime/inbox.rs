//! A worker's inbox: the jobs and the shutdown deadline that the outside
//! (handles, the coordinator) hands a worker, and the raise that wakes it.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tally_reactor::{Signaler, Signals};

/// A job for a worker: builds a future there and spawns it.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// What a worker's outside shares with it.
pub(super) struct Inbox {
    pub(super) jobs: Mutex<VecDeque<Job>>,
    /// Jobs it holds at most; a push past it is refused (back pressure).
    cap: usize,
    /// Set once: shut down, letting tasks run until this instant.
    pub(super) shutdown: Mutex<Option<Instant>>,
    /// Raises the worker's control registration.
    pub(super) wake: Signaler,
    /// Futures waiting for the shutdown to start (`Handle::shutdown_requested`).
    waiters: Mutex<Vec<Waker>>,
}

impl Inbox {
    /// An empty inbox for at most `cap` jobs, whose worker `wake` raises.
    pub(super) fn new(wake: Signaler, cap: usize) -> Inbox {
        Inbox {
            jobs: Mutex::new(VecDeque::new()),
            cap,
            shutdown: Mutex::new(None),
            wake,
            waiters: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn push(&self, job: Job) -> io::Result<()> {
        if self.shutdown.lock().is_some() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the runtime is shutting down"));
        }
        let mut jobs = self.jobs.lock();
        if jobs.len() >= self.cap {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the worker's inbox is full: it has not caught up with earlier spawns",
            ));
        }
        jobs.push_back(job);
        drop(jobs);
        self.kick()
    }

    /// `Ready` once this inbox's shutdown has started; otherwise stores
    /// the waker, which the shutdown wakes.
    pub(super) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut waiters = self.waiters.lock();
        // Under the waiters' lock: a shutdown that sets the deadline after
        // this check takes the lock next, and finds the waker.
        if self.shutdown.lock().is_some() {
            return Poll::Ready(());
        }
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(super) fn kick(&self) -> io::Result<()> {
        self.wake.raise(Signals::user(0), 1).map(drop)
    }
}

/// Sets each inbox's shutdown deadline, `grace` from now, unless it has
/// one, and wakes its worker.
pub(super) fn shut_down<'a>(inboxes: impl IntoIterator<Item = &'a Arc<Inbox>>, grace: Duration) {
    let deadline = Instant::now() + grace;
    for inbox in inboxes {
        let mut at = inbox.shutdown.lock();
        if at.is_none() {
            *at = Some(deadline);
            drop(at);
            // A worker that is gone needs no kick.
            let _ = inbox.kick();
            let waiters = std::mem::take(&mut *inbox.waiters.lock());
            waiters.into_iter().for_each(Waker::wake);
        }
    }
}
