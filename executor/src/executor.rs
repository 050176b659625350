//! [`LocalReactor`]: a reactor plus a local task executor, and the crank
//! that drives them.
//!
//! One crank:
//! 1. poll up to `budget` queued tasks (Pony's `batch`: a task that keeps
//!    waking itself cannot starve I/O or the other tasks: the reactor turns
//!    every crank, and reaps even when nothing makes it enter the kernel,
//!    as `tests/budget.rs` checks under each ring setting);
//! 2. fire expired timers;
//! 3. turn the reactor once: without waiting if anything is runnable,
//!    otherwise waiting until the earliest timer at most, so one kernel
//!    timeout covers every timer;
//! 4. move tasks woken from other threads onto the run queue.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tally_reactor::{Reactor, Registration, Signals};

use crate::context::{self, Core, Enter, Runnable as _, TaskId, TaskWaker};
use crate::task::{JoinHandle, Task};
use crate::timers::Clock;

/// Spawns a task on the executor running on this thread.
///
/// # Panics
///
/// Panics when called outside a running tally executor.
///
/// # Examples
///
/// ```
/// let rt = tally::LocalReactor::new().unwrap();
/// rt.block_on(async {
///     let h = tally::spawn(async { "hi" });
///     assert_eq!(h.await.unwrap(), "hi");
/// });
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_on(&context::current(), future)
}

/// Spawns a task on executor `core`; it is queued to run at its next crank.
fn spawn_on<F>(core: &Rc<Core>, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let task = core.insert_task(|header| Task::new(future, header));
    core.run_queue.borrow_mut().push_back(task.header().id);
    JoinHandle::new(task)
}

/// What a worker of a [`Runtime`](crate::Runtime) publishes for its
/// coordinator's liveness check: cranks done, and whether it is parked in
/// the reactor (idle, waiting for events), where a still count is fine.
/// Plain atomics on the worker's side: no syscall, no shared write by the
/// reader.
#[derive(Debug, Default)]
pub(crate) struct Heartbeat {
    pub(crate) cranks: std::sync::atomic::AtomicU64,
    pub(crate) parked: std::sync::atomic::AtomicBool,
    /// What is being polled: a spawned task's slot index + 1, or
    /// [`Heartbeat::MAIN`] for `block_on`'s future; 0 between polls.
    pub(crate) running: std::sync::atomic::AtomicU64,
}

impl Heartbeat {
    /// `running` while `block_on`'s own future is polled.
    pub(crate) const MAIN: u64 = u64::MAX;
}

/// Publishes what is being polled in a [`Heartbeat`], until dropped (a
/// panicking poll included).
struct Polling<'a>(Option<&'a Heartbeat>);

impl<'a> Polling<'a> {
    fn new(heartbeat: Option<&'a Heartbeat>, what: u64) -> Polling<'a> {
        if let Some(hb) = heartbeat {
            hb.running.store(what, Ordering::Relaxed);
        }
        Polling(heartbeat)
    }
}

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        if let Some(hb) = self.0 {
            hb.running.store(0, Ordering::Relaxed);
        }
    }
}

/// The crank of one [`LocalReactor`], around the [`Core`] its tasks,
/// timers and sockets share.
pub(crate) struct Executor {
    pub(crate) core: Rc<Core>,
    remote_scratch: RefCell<Vec<TaskId>>,
    wake_scratch: RefCell<Vec<Waker>>,
    budget: usize,
    /// Consecutive failed turns; a reactor that keeps failing is fatal.
    failures: Cell<u32>,
    heartbeat: Option<Arc<Heartbeat>>,
    backend: tally_reactor::Backend,
}

impl Executor {
    fn new(
        reactor: Reactor,
        budget: usize,
        clock: Clock,
        heartbeat: Option<Arc<Heartbeat>>,
    ) -> Executor {
        let backend = reactor.metrics().backend;
        Executor {
            core: Core::new(reactor, clock),
            remote_scratch: RefCell::new(Vec::new()),
            wake_scratch: RefCell::new(Vec::new()),
            budget: budget.max(1),
            failures: Cell::new(0),
            heartbeat,
            backend,
        }
    }

    /// Polls task `id` once, if it is still alive, and takes it out of the
    /// slab if it ended.
    fn run_task(&self, id: TaskId) {
        let Some(task) = self.core.task(id) else { return };
        let ran = {
            let _polling = Polling::new(self.heartbeat.as_deref(), u64::from(id.index) + 1);
            task.run()
        };
        if ran {
            // Dropped here, outside the slab's borrow.
            let ended = self.core.remove_task(id);
            drop(ended);
        }
    }

    /// Runs up to `budget` queued tasks. Returns how many ran.
    fn run_ready(&self) -> usize {
        let mut ran = 0;
        while ran < self.budget {
            let Some(id) = self.core.run_queue.borrow_mut().pop_front() else { break };
            self.run_task(id);
            ran += 1;
        }
        ran
    }

    /// Wakes every timer whose deadline has passed.
    pub(crate) fn fire_timers(&self) -> usize {
        // A crank with no timer skips the clock read (a vDSO call, but one
        // per crank on the hottest path).
        if self.core.timers.borrow().is_idle() {
            return 0;
        }
        let now = self.core.clock.now();
        let mut wakers = std::mem::take(&mut *self.wake_scratch.borrow_mut());
        self.core.timers.borrow_mut().fire(now, &mut wakers);
        let fired = wakers.len();
        for w in wakers.drain(..) {
            w.wake();
        }
        *self.wake_scratch.borrow_mut() = wakers;
        fired
    }

    fn drain_remote(&self) {
        let mut scratch = self.remote_scratch.borrow_mut();
        self.core.shared.take_remote(&mut scratch);
        if !scratch.is_empty() {
            self.core.run_queue.borrow_mut().extend(scratch.drain(..));
        }
    }

    /// One crank. `main_ready` says whether `block_on`'s future was woken.
    /// Returns how many completions the reactor reaped.
    fn crank(&self, main_ready: &dyn Fn() -> bool, may_block: bool) -> usize {
        self.run_ready();
        self.fire_timers();
        let busy = !self.core.run_queue.borrow().is_empty() || main_ready();
        let timeout = if busy || !may_block {
            Some(Duration::ZERO)
        } else {
            self.core
                .timers
                .borrow_mut()
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
        };
        let parks = timeout != Some(Duration::ZERO);
        if let Some(hb) = &self.heartbeat {
            hb.cranks.fetch_add(1, Ordering::Relaxed);
            if parks {
                hb.parked.store(true, Ordering::Relaxed);
            }
        }
        let turned = self.core.reactor.turn(timeout);
        if let Some(hb) = self.heartbeat.as_ref().filter(|_| parks) {
            hb.parked.store(false, Ordering::Relaxed);
        }
        let reaped = match turned {
            Ok(reaped) => {
                self.failures.set(0);
                reaped
            }
            Err(e) => {
                let n = self.failures.get() + 1;
                self.failures.set(n);
                assert!(n < 16, "tally: the reactor failed {n} turns in a row: {e}");
                0
            }
        };
        context::set_batch_sends(self.backend, reaped);
        self.drain_remote();
        reaped
    }

    /// Whether anything can make progress without outside events.
    pub(crate) fn has_runnable(&self) -> bool {
        !self.core.run_queue.borrow().is_empty()
    }

    /// Runs `future` to completion on this thread, driving tasks and I/O.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _enter = Enter::new(&self.core);
        // Tasks woken while no executor ran on this thread went to the
        // remote queue: queue them now, so they run in the first crank.
        self.drain_remote();
        let main = Arc::new(TaskWaker::new(TaskId::MAIN, self.core.shared.clone(), true));
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        let main_ready = || main.scheduled.load(Ordering::Acquire);
        let may_block = !self.core.clock.is_fake();
        loop {
            if main.scheduled.swap(false, Ordering::AcqRel) {
                let polling = Polling::new(self.heartbeat.as_deref(), Heartbeat::MAIN);
                if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    return out;
                }
                drop(polling);
            }
            self.crank(&main_ready, may_block);
        }
    }

    /// Runs tasks and I/O until nothing can make progress without time
    /// passing or outside events; polls `future` whenever it is woken.
    pub(crate) fn run_until_stalled<F: Future + Unpin>(&self, future: &mut F) -> Poll<F::Output> {
        let _enter = Enter::new(&self.core);
        // Tasks woken while no executor ran on this thread went to the
        // remote queue: queue them now, so they run in the first crank.
        self.drain_remote();
        let main = Arc::new(TaskWaker::new(TaskId::MAIN, self.core.shared.clone(), true));
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let main_ready = || main.scheduled.load(Ordering::Acquire);
        loop {
            if main.scheduled.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = std::pin::Pin::new(&mut *future).poll(&mut cx) {
                    return Poll::Ready(out);
                }
            }
            let progressed = self.crank(&main_ready, false) > 0;
            if !progressed && !self.has_runnable() && !main_ready() {
                return Poll::Pending;
            }
        }
    }
}

/// Builds a [`LocalReactor`].
#[derive(Debug, Clone)]
pub struct Builder {
    reactor: tally_reactor::Builder,
    budget: usize,
    heartbeat: Option<Arc<Heartbeat>>,
    blocking: crate::blocking::PoolConfig,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: the reactor's defaults and a budget of 128 polls per crank.
    pub fn new() -> Builder {
        Builder {
            reactor: tally_reactor::Builder::new(),
            budget: 128,
            heartbeat: None,
            blocking: crate::blocking::PoolConfig::default(),
        }
    }

    /// Submission queue entries of the ring.
    pub fn entries(mut self, entries: u32) -> Builder {
        self.reactor = self.reactor.entries(entries);
        self
    }

    /// Task polls per crank before the reactor is turned again.
    pub fn budget(mut self, budget: usize) -> Builder {
        self.budget = budget.max(1);
        self
    }

    /// Which backend the reactor runs on (default [`Backend::Auto`](tally_reactor::Backend::Auto):
    /// io_uring, else epoll; `TALLY_BACKEND` overrides `Auto`).
    pub fn backend(mut self, backend: tally_reactor::Backend) -> Builder {
        self.reactor = self.reactor.backend(backend);
        self
    }

    /// Replaces the reactor settings wholesale.
    pub fn reactor(mut self, reactor: tally_reactor::Builder) -> Builder {
        self.reactor = reactor;
        self
    }

    /// Builds the reactor and the executor.
    ///
    /// # Errors
    ///
    /// As [`tally_reactor::Builder::build`].
    pub fn build(self) -> io::Result<LocalReactor> {
        let reactor = self.reactor.build()?;
        let exec = Executor::new(reactor, self.budget, Clock::Real, self.heartbeat);
        exec.core.blocking_config.set(self.blocking);
        Ok(LocalReactor { exec })
    }

    /// Threads the blocking pool ([`task::spawn_blocking`](crate::task::spawn_blocking))
    /// may run at once (default 64; at least 1). Jobs past it wait.
    pub fn blocking_threads(mut self, max: usize) -> Builder {
        self.blocking.max_threads = max.max(1);
        self
    }

    /// How long an idle blocking-pool thread waits for a job before it
    /// exits (default 10 s).
    pub fn blocking_keep_alive(mut self, keep_alive: Duration) -> Builder {
        self.blocking.keep_alive = keep_alive;
        self
    }

    /// Publishes this executor's cranks to `heartbeat` (a runtime worker).
    pub(crate) fn heartbeat(mut self, heartbeat: Arc<Heartbeat>) -> Builder {
        self.heartbeat = Some(heartbeat);
        self
    }

    pub(crate) fn build_fake_clock(self) -> io::Result<LocalReactor> {
        let reactor = self.reactor.build()?;
        let exec = Executor::new(reactor, self.budget, Clock::fake(), self.heartbeat);
        exec.core.blocking_config.set(self.blocking);
        Ok(LocalReactor { exec })
    }
}

/// A reactor plus a local task executor. `!Send`: one per thread.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let rt = tally::LocalReactor::new().unwrap();
/// let n = rt.block_on(async {
///     tally::time::sleep(Duration::from_millis(1)).await;
///     let a = tally::spawn(async { 1 });
///     let b = tally::spawn(async { 2 });
///     a.await.unwrap() + b.await.unwrap()
/// });
/// assert_eq!(n, 3);
/// ```
pub struct LocalReactor {
    pub(crate) exec: Executor,
}

impl LocalReactor {
    /// A local reactor with default settings.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> io::Result<LocalReactor> {
        Builder::new().build()
    }

    /// A builder.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Spawns a task. It starts running at the next crank of `block_on`.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        spawn_on(&self.exec.core, future)
    }

    /// Runs `future` to completion, driving spawned tasks, timers and I/O.
    ///
    /// # Panics
    ///
    /// Panics (with a message saying so) when called from inside a running
    /// tally executor on this thread: nesting would deadlock. Panics if the
    /// ring fails on every turn for a long stretch.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.exec.block_on(future)
    }

    /// The underlying reactor, to register handles and submit operations.
    pub fn reactor(&self) -> &Reactor {
        &self.exec.core.reactor
    }

    /// Registers `fd`, watched for `interest`; see
    /// [`Reactor::register_fd`].
    ///
    /// # Errors
    ///
    /// As [`Reactor::register_fd`].
    pub fn register_fd(&self, fd: RawFd, interest: Signals) -> io::Result<Registration> {
        self.exec.core.reactor.register_fd(fd, interest)
    }

    /// A registration fed only by its signalers, senders and operations.
    pub fn register(&self) -> Registration {
        self.exec.core.reactor.register()
    }

    /// The reactor's metrics.
    pub fn metrics(&self) -> tally_reactor::Metrics {
        self.exec.core.reactor.metrics()
    }

    /// Threads in this executor's blocking pool now, busy or idle (0
    /// before its first [`task::spawn_blocking`](crate::task::spawn_blocking)).
    pub fn blocking_threads(&self) -> usize {
        self.exec.core.blocking_threads()
    }

    /// Spawned tasks that have not ended yet (running, queued or waiting),
    /// detached ones included; `block_on`'s own future is not counted.
    pub fn live_tasks(&self) -> usize {
        self.exec.core.tasks.borrow().len()
    }
}

impl fmt::Debug for LocalReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalReactor").field("id", &self.exec.core.id).finish_non_exhaustive()
    }
}

/// The reactor of the executor running on this thread.
///
/// # Panics
///
/// Panics when called outside a running tally executor.
pub fn reactor() -> Reactor {
    context::current().reactor.clone()
}
