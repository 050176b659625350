//! Tasks: their slots, their `Send + Sync` wakers, and [`JoinHandle`].
//!
//! A task is three allocations made once at spawn: the boxed future, the
//! `Arc` that backs its waker, and the `Rc` its [`JoinHandle`] shares.
//! Polling and waking allocate nothing.
//!
//! A waker carries the task's id, the id of the executor that owns it, and a
//! `scheduled` flag. Waking sets the flag; only the wake that sets it queues
//! the task, so a task woken N times before it runs is polled once. On the
//! owning thread, while its executor runs, the id goes straight onto the
//! local run queue; from anywhere else it goes onto the executor's remote
//! queue and the reactor is woken (one kernel wake-up per crank at most).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use tally_reactor::RemoteWaker;

use crate::executor::{self, Executor};

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

/// What other threads share with an executor.
pub(crate) struct Shared {
    pub(crate) executor_id: u64,
    /// Tasks woken from other threads, drained once per crank.
    pub(crate) remote: Mutex<Vec<TaskId>>,
    pub(crate) reactor: RemoteWaker,
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

    fn schedule(&self) {
        // AcqRel: the waker's writes before waking are visible to the poll
        // that follows, and only one wake wins the false→true edge.
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if executor::push_local(self.shared.executor_id, self.id) {
            return;
        }
        if self.id != TaskId::MAIN {
            self.shared.remote.lock().push(self.id);
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

/// A spawned task, as the executor stores it.
pub(crate) struct TaskSlot {
    pub(crate) generation: u32,
    /// `None` while the task is being polled.
    pub(crate) future: Option<Pin<Box<dyn Future<Output = ()>>>>,
    /// The task's waker state; each poll's `Waker` is made from it.
    pub(crate) header: Arc<TaskWaker>,
    pub(crate) join: Rc<dyn JoinNotify>,
}

/// The executor's view of a task's join state, whatever its output type.
pub(crate) trait JoinNotify {
    fn is_aborted(&self) -> bool;
    fn finish_err(&self, err: JoinError);
}

/// Why a task produced no output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The task panicked; the panic message, if it had one.
    Panicked(String),
    /// The task was aborted with [`JoinHandle::abort`], or its executor was
    /// dropped before it finished.
    Cancelled,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(msg) => write!(f, "task panicked: {msg}"),
            JoinError::Cancelled => f.write_str("task was cancelled"),
        }
    }
}

impl std::error::Error for JoinError {}

impl JoinError {
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> JoinError {
        let msg = match payload.downcast::<String>() {
            Ok(s) => *s,
            Err(payload) => match payload.downcast::<&'static str>() {
                Ok(s) => s.to_string(),
                Err(_) => "<non-string panic payload>".to_string(),
            },
        };
        JoinError::Panicked(msg)
    }
}

enum JoinState<T> {
    Running,
    Done(Result<T, JoinError>),
    Taken,
}

pub(crate) struct JoinInner<T> {
    state: RefCell<JoinState<T>>,
    waker: RefCell<Option<Waker>>,
    aborted: Cell<bool>,
    pub(crate) task: Cell<TaskId>,
    executor: Weak<Executor>,
}

impl<T> JoinInner<T> {
    pub(crate) fn new(executor: Weak<Executor>) -> JoinInner<T> {
        JoinInner {
            state: RefCell::new(JoinState::Running),
            waker: RefCell::new(None),
            aborted: Cell::new(false),
            task: Cell::new(TaskId::MAIN),
            executor,
        }
    }

    pub(crate) fn finish(&self, result: Result<T, JoinError>) {
        {
            let mut state = self.state.borrow_mut();
            if !matches!(*state, JoinState::Running) {
                return;
            }
            *state = JoinState::Done(result);
        }
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> JoinNotify for JoinInner<T> {
    fn is_aborted(&self) -> bool {
        self.aborted.get()
    }

    fn finish_err(&self, err: JoinError) {
        self.finish(Err(err));
    }
}

/// An owned permission to await a spawned task's output.
///
/// Awaiting it yields the task's output, or a [`JoinError`] if the task
/// panicked or was aborted. **Dropping it detaches the task**: the task runs
/// on to completion and its output is dropped.
///
/// # Examples
///
/// ```
/// let rt = tally::LocalReactor::new().unwrap();
/// let out = rt.block_on(async {
///     let h = tally::spawn(async { 6 * 7 });
///     h.await
/// });
/// assert_eq!(out, Ok(42));
/// ```
pub struct JoinHandle<T> {
    pub(crate) inner: Rc<JoinInner<T>>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped exactly once, without being
    /// polled again, at the executor's next crank (or as soon as its
    /// current poll returns, if the task aborts itself), and awaiting this
    /// handle then yields [`JoinError::Cancelled`]. Aborting a finished
    /// task does nothing: its output stays available.
    pub fn abort(&self) {
        if !matches!(*self.inner.state.borrow(), JoinState::Running) {
            return;
        }
        self.inner.aborted.set(true);
        if let Some(exec) = self.inner.executor.upgrade() {
            exec.schedule_abort(self.inner.task.get());
        }
    }

    /// Whether the task has finished (with output, panic or cancellation).
    pub fn is_finished(&self) -> bool {
        !matches!(*self.inner.state.borrow(), JoinState::Running)
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.inner.state.borrow_mut();
        match std::mem::replace(&mut *state, JoinState::Taken) {
            JoinState::Done(result) => Poll::Ready(result),
            JoinState::Running => {
                *state = JoinState::Running;
                drop(state);
                let mut slot = self.inner.waker.borrow_mut();
                match &*slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            JoinState::Taken => panic!("JoinHandle polled after it returned its output"),
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}
