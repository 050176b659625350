//! The executor running on this thread, and [`Core`]: the part of an
//! executor that its tasks, wakers, timers and sockets reach.
//!
//! This is the bottom of the executor: it imports no other module of this
//! crate but `timers.rs`, and everything else reaches the running executor
//! through it, so imports run one way: the crank (`executor.rs`), join
//! handles (`task.rs`), sleeps (`time.rs`), sockets and signals sit above.
//! The task table, the run queue and the wakers live here together because
//! they need each other: `spawn` reaches the table through the thread-local,
//! and a waker consults the thread-local to find its run queue.
//!
//! A task is one allocation made at spawn (`task.rs`'s `Task`: this
//! module's [`TaskWaker`], the future, its output and the handle's state);
//! the slab here holds it as a [`Runnable`]. Polling and waking allocate
//! nothing.
//!
//! A waker carries the task's id, the id of the executor that owns it, and a
//! `scheduled` flag. Waking sets the flag; only the wake that sets it queues
//! the task, so a task woken N times before it runs is polled once. On the
//! owning thread, while its executor runs, the id goes straight onto the
//! local run queue; from anywhere else it goes onto the executor's remote
//! queue and the reactor is woken (one kernel wake-up per crank at most).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Wake;

use tally_reactor::{BufGroup, Reactor, RemoteWaker};

use crate::blocking::{Pool, PoolConfig};
use crate::sync::{AtomicBool, Mutex};
use crate::timers::{Clock, Timers};

/// Buffers in the shared receive ring.
const RECV_BUFFERS: u16 = 1024;
/// Bytes per receive buffer.
const RECV_BUFFER_SIZE: u32 = 4096;

static NEXT_EXECUTOR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The executor running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
    /// Whether the executor on this thread should queue its sends in the
    /// ring rather than try them inline; see [`set_batch_sends`].
    static BATCH_SENDS: Cell<bool> = const { Cell::new(false) };
    /// Full reads made inline on readiness since the last crank; see
    /// [`read_budget_spent`].
    static FULL_READS: Cell<u32> = const { Cell::new(0) };
}

/// Full reads on readiness (reads that filled their buffer, so that the
/// socket may hold more) a thread makes between two cranks before a read
/// yields to the other tasks.
const FULL_READS_PER_CRANK: u32 = 128;

/// Completions per turn past which an io_uring executor batches its sends.
const BATCH_SENDS_ABOVE: usize = 4;

/// Records how the last turn went, for [`batch_sends`]: on io_uring, a
/// turn that reaped more than a few completions means many streams are
/// busy, and their sends cost less queued in the ring (one enter submits
/// them all) than as one `send(2)` each; with few (a ping-pong), a send
/// tried inline saves a completion and a trip through the ring. On epoll a
/// queued send is tried at once anyway, so inline is always cheaper.
pub(crate) fn set_batch_sends(backend: tally_reactor::Backend, reaped: usize) {
    let batch = backend == tally_reactor::Backend::IoUring && reaped > BATCH_SENDS_ABOVE;
    let _ = BATCH_SENDS.try_with(|b| b.set(batch));
    let _ = FULL_READS.try_with(|n| n.set(0));
}

/// Counts a read on readiness that filled its buffer. A socket read on
/// readiness whose peer writes faster than it reads never runs dry, so a
/// task reading it in a loop would never return `Pending` and the other
/// tasks would never run; with the completion backend, a drained chunk
/// queue makes it wait. Returns whether this thread's reads have had their
/// share of this crank: the read should then yield (wake itself and
/// return `Pending`).
pub(crate) fn note_full_read() -> bool {
    FULL_READS
        .try_with(|n| {
            let v = n.get() + 1;
            n.set(v);
            v > FULL_READS_PER_CRANK
        })
        .unwrap_or(false)
}

/// Whether a stream's send should go through the ring without an inline
/// try first (see [`set_batch_sends`]).
pub(crate) fn batch_sends() -> bool {
    BATCH_SENDS.try_with(Cell::get).unwrap_or(false)
}

/// The executor running on this thread.
///
/// # Panics
///
/// Panics when no tally executor is running on this thread.
pub(crate) fn current() -> Rc<Core> {
    try_current().expect(
        "no tally executor is running on this thread: call this inside LocalReactor::block_on",
    )
}

/// The executor running on this thread, if any.
pub(crate) fn try_current() -> Option<Rc<Core>> {
    CURRENT.with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
}

/// Queues `id` on the local run queue if executor `executor_id` is running
/// on this thread. Returns false otherwise.
fn push_local(executor_id: u64, id: TaskId) -> bool {
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

/// A task's index in the executor's slab plus a generation, so that a stale
/// waker never schedules a newer task that reuses the slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TaskId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl TaskId {
    /// The future passed to `block_on`, which lives outside the slab.
    pub(crate) const MAIN: TaskId = TaskId { index: u32::MAX, generation: u32::MAX };
}

/// The generation after `g`, wrapping from `u32::MAX - 1` back to 1:
/// `u32::MAX` is [`TaskId::MAIN`]'s, and 0 is never used.
fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 | u32::MAX => 1,
        next => next,
    }
}

/// What other threads share with an executor.
pub(crate) struct Shared {
    pub(crate) executor_id: u64,
    /// Tasks woken from other threads, drained once per crank.
    remote: Mutex<Vec<TaskId>>,
    /// Set (Release) after a push to `remote`, before the reactor is woken;
    /// lets a crank with nothing queued skip the lock.
    remote_pending: AtomicBool,
    pub(crate) reactor: RemoteWaker,
}

impl Shared {
    /// What other threads share with executor `executor_id`.
    pub(crate) fn new(executor_id: u64, reactor: RemoteWaker) -> Shared {
        Shared {
            executor_id,
            remote: Mutex::new(Vec::new()),
            remote_pending: AtomicBool::new(false),
            reactor,
        }
    }

    /// Queues `id`, woken from another thread; the caller then wakes the
    /// reactor.
    fn push_remote(&self, id: TaskId) {
        self.remote.lock().push(id);
        self.remote_pending.store(true, Ordering::Release);
    }

    /// Moves the tasks woken from other threads into `out` (which should be
    /// empty), leaving `out`'s old allocation in the queue for reuse.
    ///
    /// Skips the lock when no push was seen. A push whose flag this load
    /// misses is followed by the pusher's reactor wake-up, so the next
    /// turn does not block and the next crank's load sees the flag (the
    /// reactor's Acquire of its own pending flag orders it). The flag is
    /// cleared before the lock, so a push the swap misses sets it again.
    pub(crate) fn take_remote(&self, out: &mut Vec<TaskId>) {
        if !self.remote_pending.load(Ordering::Acquire) {
            return;
        }
        self.remote_pending.store(false, Ordering::Relaxed);
        std::mem::swap(&mut *self.remote.lock(), out);
    }
}

/// The waker behind every task (and behind `block_on`'s future).
pub(crate) struct TaskWaker {
    pub(crate) id: TaskId,
    /// Set by the wake that queues the task; cleared just before it is
    /// polled, so that a wake during the poll queues it again.
    pub(crate) scheduled: AtomicBool,
    pub(crate) shared: Arc<Shared>,
}

impl TaskWaker {
    pub(crate) fn new(id: TaskId, shared: Arc<Shared>, scheduled: bool) -> TaskWaker {
        TaskWaker { id, scheduled: AtomicBool::new(scheduled), shared }
    }

    /// The executor is about to poll the task: clears `scheduled`, so that
    /// a wake from here on queues it again.
    ///
    /// A swap, not a store: reading the flag with Acquire pairs with the
    /// Release half of the wake that set it, so the poll sees what that
    /// waker wrote before waking. With a store, a wake whose swap found the
    /// flag still set returns without queuing, and the poll may miss its
    /// writes: a lost wake-up (`loom_model.rs` finds it).
    pub(crate) fn begin_poll(&self) {
        self.scheduled.swap(false, Ordering::AcqRel);
    }

    /// Queues the task, unless a wake since its last poll already did.
    pub(crate) fn schedule(&self) {
        // AcqRel: the waker's writes before waking are visible to the poll
        // that follows, and only one wake wins the false→true edge.
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if push_local(self.shared.executor_id, self.id) {
            return;
        }
        if self.id != TaskId::MAIN {
            self.shared.push_remote(self.id);
        }
        // A reactor that is gone has no tasks left to run.
        let _ = self.shared.reactor.wake();
    }
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.schedule();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.schedule();
    }
}

/// A spawned task, as the executor's slab holds it, whatever its future
/// and output types: implemented by `task.rs`'s `Task`.
pub(crate) trait Runnable {
    /// The task's waker state (its id, its `scheduled` flag).
    fn header(&self) -> &TaskWaker;
    /// Polls the task once (or cancels it, if its handle aborted it).
    /// Returns whether it ended: finished, panicked or cancelled; its
    /// future is dropped by then.
    fn run(self: Arc<Self>) -> bool;
    /// Drops the future without polling it again (if it has not ended);
    /// its handle yields `JoinError::Cancelled`.
    fn cancel(&self);
}

/// The state of one executor that its tasks, wakers, timers and sockets
/// reach, through [`current`] or a `Weak` they keep. The crank that drives
/// it is `executor.rs`'s.
pub(crate) struct Core {
    pub(crate) id: u64,
    pub(crate) reactor: Reactor,
    pub(crate) tasks: RefCell<slab::Slab<Arc<dyn Runnable>>>,
    /// The generation the next task's id gets: one counter for every slot,
    /// so that a stale id names no later task in the same slot (until 2^32
    /// more spawns).
    next_generation: Cell<u32>,
    pub(crate) run_queue: RefCell<VecDeque<TaskId>>,
    pub(crate) timers: RefCell<Timers>,
    pub(crate) clock: Clock,
    pub(crate) shared: Arc<Shared>,
    /// Set while `block_on` runs, to refuse nesting.
    running: Cell<bool>,
    /// The provided-buffer ring stream reads share, made on first use;
    /// `Some(None)` when the kernel has none to give.
    recv_group: Cell<Option<Option<BufGroup>>>,
    /// The blocking pool, made on first use.
    blocking: std::cell::OnceCell<Arc<Pool>>,
    /// Whether stream sockets read on readiness (the epoll backend; see
    /// `net/stream.rs`) rather than through completion-style recvs.
    pub(crate) ready_reads: bool,
    pub(crate) blocking_config: Cell<PoolConfig>,
}

impl Core {
    /// The core of a new executor on `reactor`, with its own id.
    pub(crate) fn new(reactor: Reactor, clock: Clock) -> Rc<Core> {
        let id = NEXT_EXECUTOR_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(id, reactor.remote_waker()));
        let ready_reads = reactor.metrics().backend == tally_reactor::Backend::Epoll;
        Rc::new(Core {
            id,
            reactor,
            tasks: RefCell::new(slab::Slab::new()),
            next_generation: Cell::new(1),
            run_queue: RefCell::new(VecDeque::new()),
            timers: RefCell::new(Timers::new()),
            clock,
            shared,
            running: Cell::new(false),
            recv_group: Cell::new(None),
            blocking: std::cell::OnceCell::new(),
            ready_reads,
            blocking_config: Cell::new(PoolConfig::default()),
        })
    }

    /// Stores a new task, made by `make` from its waker state, in the slab;
    /// returns it. The task is marked scheduled: the caller queues its id.
    pub(crate) fn insert_task<T: Runnable + 'static>(
        &self,
        make: impl FnOnce(TaskWaker) -> Arc<T>,
    ) -> Arc<T> {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let generation = self.next_generation.get();
        self.next_generation.set(next_generation(generation));
        let id = TaskId { index: entry.key() as u32, generation };
        let task = make(TaskWaker::new(id, self.shared.clone(), true));
        entry.insert(task.clone());
        task
    }

    /// Task `id`, if it is still alive.
    pub(crate) fn task(&self, id: TaskId) -> Option<Arc<dyn Runnable>> {
        let tasks = self.tasks.borrow();
        tasks.get(id.index as usize).filter(|t| t.header().id == id).cloned()
    }

    /// Takes task `id` out of the slab, if it is still alive.
    pub(crate) fn remove_task(&self, id: TaskId) -> Option<Arc<dyn Runnable>> {
        let mut tasks = self.tasks.borrow_mut();
        tasks.get(id.index as usize).filter(|t| t.header().id == id)?;
        Some(tasks.remove(id.index as usize))
    }

    /// This executor's blocking pool (see `blocking.rs`), made on first
    /// use.
    pub(crate) fn blocking_pool(&self) -> &Arc<Pool> {
        self.blocking.get_or_init(|| Pool::new(self.blocking_config.get()))
    }

    /// The blocking pool's threads (0 before its first job).
    pub(crate) fn blocking_threads(&self) -> usize {
        self.blocking.get().map_or(0, |p| p.threads())
    }

    /// The buffer group stream reads receive into: 1024 buffers of 4 KiB
    /// shared by every stream of this executor. `None` if the kernel lacks
    /// provided-buffer rings or multishot recv.
    pub(crate) fn recv_group(&self) -> Option<BufGroup> {
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
}

impl Drop for Core {
    fn drop(&mut self) {
        // Cancel the tasks that never finished, dropping their futures (and
        // so their registrations) while the reactor is still alive.
        let tasks: Vec<Arc<dyn Runnable>> = self.tasks.get_mut().drain().collect();
        for task in tasks {
            task.cancel();
        }
        if let Some(pool) = self.blocking.get() {
            pool.close();
        }
    }
}

/// Marks this thread as running `exec`; restores the previous state on drop.
pub(crate) struct Enter {
    exec: Rc<Core>,
    previous: Option<Rc<Core>>,
}

impl Enter {
    /// Makes `exec` this thread's running executor, until the guard drops.
    ///
    /// # Panics
    ///
    /// Panics if `exec`, or another executor, is already running on this
    /// thread: nested `block_on` would deadlock or stall it.
    pub(crate) fn new(exec: &Rc<Core>) -> Enter {
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

#[cfg(test)]
mod tests {
    use super::next_generation;

    #[test]
    fn only_a_busy_io_uring_turn_batches_sends() {
        use super::{batch_sends, set_batch_sends};
        use tally_reactor::Backend;
        set_batch_sends(Backend::IoUring, 5);
        assert!(batch_sends());
        set_batch_sends(Backend::IoUring, 4);
        assert!(!batch_sends());
        set_batch_sends(Backend::Epoll, 1000);
        assert!(!batch_sends(), "a queued send on epoll is tried at once anyway");
    }

    #[test]
    fn generations_wrap_past_main_and_zero() {
        assert_eq!(next_generation(1), 2);
        assert_eq!(next_generation(u32::MAX - 2), u32::MAX - 1);
        assert_eq!(next_generation(u32::MAX - 1), 1);
        assert_eq!(next_generation(u32::MAX), 1);
    }
}
