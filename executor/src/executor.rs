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
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::FutureExt;
use parking_lot::Mutex;
use tally_reactor::{Reactor, Registration, Signals};

use crate::task::{JoinError, JoinHandle, JoinInner, Shared, TaskId, TaskSlot, TaskWaker};
use crate::time::{Clock, Timers};

/// Buffers in the shared receive ring.
const RECV_BUFFERS: u16 = 1024;
/// Bytes per receive buffer.
const RECV_BUFFER_SIZE: u32 = 4096;

static NEXT_EXECUTOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The executor running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Executor>>> = const { RefCell::new(None) };
}

/// The executor running on this thread.
///
/// # Panics
///
/// Panics when no tally executor is running on this thread.
pub(crate) fn current() -> Rc<Executor> {
    try_current().expect(
        "no tally executor is running on this thread: call this inside LocalReactor::block_on",
    )
}

pub(crate) fn try_current() -> Option<Rc<Executor>> {
    CURRENT.with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
}

/// Queues `id` on the local run queue if executor `executor_id` is running
/// on this thread. Returns false otherwise.
pub(crate) fn push_local(executor_id: u64, id: TaskId) -> bool {
    CURRENT
        .try_with(|c| {
            let Ok(c) = c.try_borrow() else { return false };
            match c.as_ref() {
                Some(exec) if exec.id == executor_id => {
                    if id != TaskId::MAIN {
                        exec.run_queue.borrow_mut().push_back(id);
                    }
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false)
}

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
    Executor::spawn(&current(), future)
}

/// The executor's shared state. One per [`LocalReactor`].
pub(crate) struct Executor {
    pub(crate) id: u64,
    pub(crate) reactor: Reactor,
    tasks: RefCell<slab::Slab<TaskSlot>>,
    /// Generation of each task slot, bumped when its task ends.
    generations: RefCell<Vec<u32>>,
    pub(crate) run_queue: RefCell<VecDeque<TaskId>>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) clock: Clock,
    shared: Arc<Shared>,
    remote_scratch: RefCell<Vec<TaskId>>,
    wake_scratch: RefCell<Vec<Waker>>,
    budget: usize,
    /// Set while `block_on` runs, to refuse nesting.
    running: Cell<bool>,
    /// Consecutive failed turns; a reactor that keeps failing is fatal.
    failures: Cell<u32>,
    /// The provided-buffer ring stream reads share, made on first use;
    /// `Some(None)` when the kernel has none to give.
    recv_group: Cell<Option<Option<tally_reactor::BufGroup>>>,
}

impl Executor {
    fn new(reactor: Reactor, budget: usize, clock: Clock) -> Rc<Executor> {
        let id = NEXT_EXECUTOR_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            executor_id: id,
            remote: Mutex::new(Vec::new()),
            reactor: reactor.remote_waker(),
        });
        Rc::new(Executor {
            id,
            reactor,
            tasks: RefCell::new(slab::Slab::new()),
            generations: RefCell::new(Vec::new()),
            run_queue: RefCell::new(VecDeque::new()),
            timers: RefCell::new(Timers::new()),
            clock,
            shared,
            remote_scratch: RefCell::new(Vec::new()),
            wake_scratch: RefCell::new(Vec::new()),
            budget: budget.max(1),
            running: Cell::new(false),
            failures: Cell::new(0),
            recv_group: Cell::new(None),
        })
    }

    pub(crate) fn spawn<F>(this: &Rc<Executor>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let join = Rc::new(JoinInner::new(Rc::downgrade(this)));
        let completer = join.clone();
        let future = Box::pin(future.map(move |out| completer.finish(Ok(out))));
        let mut tasks = this.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let index = entry.key() as u32;
        let mut generations = this.generations.borrow_mut();
        if generations.len() <= index as usize {
            generations.resize(index as usize + 1, 1);
        }
        let id = TaskId { index, generation: generations[index as usize] };
        let header = Arc::new(TaskWaker::new(id, this.shared.clone(), true));
        entry.insert(TaskSlot {
            generation: id.generation,
            future: Some(future),
            header,
            join: join.clone(),
        });
        drop((tasks, generations));
        join.task.set(id);
        this.run_queue.borrow_mut().push_back(id);
        JoinHandle { inner: join }
    }

    /// Queues task `id` so that the executor notices it was aborted.
    pub(crate) fn schedule_abort(&self, id: TaskId) {
        let tasks = self.tasks.borrow();
        if let Some(slot) = tasks.get(id.index as usize).filter(|s| s.generation == id.generation) {
            if !slot.header.scheduled.swap(true, Ordering::AcqRel) {
                drop(tasks);
                self.run_queue.borrow_mut().push_back(id);
            }
        }
    }

    fn remove_task(&self, id: TaskId) -> Option<TaskSlot> {
        let mut tasks = self.tasks.borrow_mut();
        tasks.get(id.index as usize).filter(|s| s.generation == id.generation)?;
        let slot = tasks.remove(id.index as usize);
        let mut generations = self.generations.borrow_mut();
        let g = &mut generations[id.index as usize];
        *g = g.wrapping_add(1).max(1);
        Some(slot)
    }

    /// Polls task `id` once, if it is still alive.
    fn run_task(&self, id: TaskId) {
        let (mut future, waker, join) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(slot) =
                tasks.get_mut(id.index as usize).filter(|s| s.generation == id.generation)
            else {
                return;
            };
            if slot.join.is_aborted() {
                drop(tasks);
                self.cancel_task(id);
                return;
            }
            let Some(future) = slot.future.take() else { return };
            slot.header.scheduled.store(false, Ordering::Release);
            // A Waker made from the Arc: a reference count, no allocation.
            (future, Waker::from(slot.header.clone()), slot.join.clone())
        };
        let mut cx = Context::from_waker(&waker);
        let result = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        match result {
            Ok(Poll::Pending) if !join.is_aborted() => {
                let mut tasks = self.tasks.borrow_mut();
                if let Some(slot) = tasks.get_mut(id.index as usize) {
                    slot.future = Some(future);
                }
            }
            Ok(Poll::Pending) => {
                drop(future);
                self.cancel_task(id);
            }
            Ok(Poll::Ready(())) => {
                let slot = self.remove_task(id);
                drop(future);
                drop(slot);
            }
            Err(payload) => {
                let slot = self.remove_task(id);
                // Drop the future outside any borrow: its destructors may
                // touch the executor.
                let dropped = catch_unwind(AssertUnwindSafe(move || drop(future)));
                drop(dropped);
                join.finish_err(JoinError::from_panic(payload));
                drop(slot);
            }
        }
    }

    fn cancel_task(&self, id: TaskId) {
        if let Some(mut slot) = self.remove_task(id) {
            let future = slot.future.take();
            drop(future);
            slot.join.finish_err(JoinError::Cancelled);
        }
    }

    /// Runs up to `budget` queued tasks. Returns how many ran.
    fn run_ready(&self) -> usize {
        let mut ran = 0;
        while ran < self.budget {
            let Some(id) = self.run_queue.borrow_mut().pop_front() else { break };
            self.run_task(id);
            ran += 1;
        }
        ran
    }

    /// Wakes every timer whose deadline has passed.
    pub(crate) fn fire_timers(&self) -> usize {
        let now = self.clock.now();
        let mut wakers = std::mem::take(&mut *self.wake_scratch.borrow_mut());
        self.timers.borrow_mut().fire(now, &mut wakers);
        let fired = wakers.len();
        for w in wakers.drain(..) {
            w.wake();
        }
        *self.wake_scratch.borrow_mut() = wakers;
        fired
    }

    fn drain_remote(&self) {
        let mut scratch = self.remote_scratch.borrow_mut();
        std::mem::swap(&mut *self.shared.remote.lock(), &mut *scratch);
        self.run_queue.borrow_mut().extend(scratch.drain(..));
    }

    /// One crank. `main_ready` says whether `block_on`'s future was woken.
    /// Returns how many completions the reactor reaped.
    fn crank(&self, main_ready: &dyn Fn() -> bool, may_block: bool) -> usize {
        self.run_ready();
        self.fire_timers();
        let busy = !self.run_queue.borrow().is_empty() || main_ready();
        let timeout = if busy || !may_block {
            Some(Duration::ZERO)
        } else {
            self.timers
                .borrow_mut()
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
        };
        let reaped = match self.reactor.turn(timeout) {
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
        self.drain_remote();
        reaped
    }

    /// The buffer group stream reads receive into: 1024 buffers of 4 KiB
    /// shared by every stream of this executor. `None` if the kernel lacks
    /// provided-buffer rings or multishot recv.
    pub(crate) fn recv_group(&self) -> Option<tally_reactor::BufGroup> {
        if let Some(group) = self.recv_group.get() {
            return group;
        }
        let group = if self.reactor.features().multishot_recv {
            self.reactor.buf_ring(RECV_BUFFERS, RECV_BUFFER_SIZE).ok()
        } else {
            None
        };
        self.recv_group.set(Some(group));
        group
    }

    /// Whether anything can make progress without outside events.
    pub(crate) fn has_runnable(&self) -> bool {
        !self.run_queue.borrow().is_empty()
    }

    /// Runs `future` to completion on this thread, driving tasks and I/O.
    pub(crate) fn block_on<F: Future>(this: &Rc<Executor>, future: F) -> F::Output {
        let _enter = Enter::new(this);
        // Tasks woken while no executor ran on this thread went to the
        // remote queue: queue them now, so they run in the first crank.
        this.drain_remote();
        let main = Arc::new(TaskWaker::new(TaskId::MAIN, this.shared.clone(), true));
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        let main_ready = || main.scheduled.load(Ordering::Acquire);
        let may_block = !this.clock.is_fake();
        loop {
            if main.scheduled.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            this.crank(&main_ready, may_block);
        }
    }

    /// Runs tasks and I/O until nothing can make progress without time
    /// passing or outside events; polls `future` whenever it is woken.
    pub(crate) fn run_until_stalled<F: Future + Unpin>(
        this: &Rc<Executor>,
        future: &mut F,
    ) -> Poll<F::Output> {
        let _enter = Enter::new(this);
        // Tasks woken while no executor ran on this thread went to the
        // remote queue: queue them now, so they run in the first crank.
        this.drain_remote();
        let main = Arc::new(TaskWaker::new(TaskId::MAIN, this.shared.clone(), true));
        let waker = Waker::from(main.clone());
        let mut cx = Context::from_waker(&waker);
        let main_ready = || main.scheduled.load(Ordering::Acquire);
        loop {
            if main.scheduled.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = std::pin::Pin::new(&mut *future).poll(&mut cx) {
                    return Poll::Ready(out);
                }
            }
            let progressed = this.crank(&main_ready, false) > 0;
            if !progressed && !this.has_runnable() && !main_ready() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Cancel the tasks that never finished, dropping their futures (and
        // so their registrations) while the reactor is still alive.
        let slots: Vec<TaskSlot> = self.tasks.get_mut().drain().collect();
        for mut slot in slots {
            drop(slot.future.take());
            slot.join.finish_err(JoinError::Cancelled);
        }
    }
}

/// Marks this thread as running `exec`; restores the previous state on drop.
struct Enter {
    exec: Rc<Executor>,
    previous: Option<Rc<Executor>>,
}

impl Enter {
    fn new(exec: &Rc<Executor>) -> Enter {
        assert!(
            !exec.running.get(),
            "LocalReactor::block_on called from inside a task of the same LocalReactor: nested \
             block_on would deadlock; .await the future or tally::spawn it instead"
        );
        if let Some(other) = try_current() {
            assert!(
                !other.running.get(),
                "block_on called while another tally executor runs on this thread: nested \
                 block_on would stall it; .await the future instead"
            );
        }
        exec.running.set(true);
        let previous = CURRENT.with(|c| c.borrow_mut().replace(exec.clone()));
        Enter { exec: exec.clone(), previous }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        self.exec.running.set(false);
        let previous = self.previous.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = previous);
    }
}

/// Builds a [`LocalReactor`].
#[derive(Debug, Clone)]
pub struct Builder {
    reactor: tally_reactor::Builder,
    budget: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Defaults: the reactor's defaults and a budget of 128 polls per crank.
    pub fn new() -> Builder {
        Builder { reactor: tally_reactor::Builder::new(), budget: 128 }
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
        Ok(LocalReactor { exec: Executor::new(reactor, self.budget, Clock::Real) })
    }

    pub(crate) fn build_fake_clock(self) -> io::Result<LocalReactor> {
        let reactor = self.reactor.build()?;
        Ok(LocalReactor { exec: Executor::new(reactor, self.budget, Clock::fake()) })
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
    pub(crate) exec: Rc<Executor>,
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
        Executor::spawn(&self.exec, future)
    }

    /// Runs `future` to completion, driving spawned tasks, timers and I/O.
    ///
    /// # Panics
    ///
    /// Panics (with a message saying so) when called from inside a running
    /// tally executor on this thread: nesting would deadlock. Panics if the
    /// ring fails on every turn for a long stretch.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        Executor::block_on(&self.exec, future)
    }

    /// The underlying reactor, to register handles and submit operations.
    pub fn reactor(&self) -> &Reactor {
        &self.exec.reactor
    }

    /// Registers `fd`, watched for `interest`; see
    /// [`Reactor::register_fd`].
    ///
    /// # Errors
    ///
    /// As [`Reactor::register_fd`].
    pub fn register_fd(&self, fd: RawFd, interest: Signals) -> io::Result<Registration> {
        self.exec.reactor.register_fd(fd, interest)
    }

    /// A registration fed only by its signalers, senders and operations.
    pub fn register(&self) -> Registration {
        self.exec.reactor.register()
    }

    /// The reactor's metrics.
    pub fn metrics(&self) -> tally_reactor::Metrics {
        self.exec.reactor.metrics()
    }
}

impl fmt::Debug for LocalReactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalReactor").field("id", &self.exec.id).finish_non_exhaustive()
    }
}

/// The reactor of the executor running on this thread.
///
/// # Panics
///
/// Panics when called outside a running tally executor.
pub fn reactor() -> Reactor {
    current().reactor.clone()
}
