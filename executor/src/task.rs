//! Join handles: [`JoinHandle`], [`JoinError`], and the join state a task
//! shares with its handle.
//!
//! The task itself (its slot, its `Send + Sync` waker) is stored in the
//! executor's core, `context.rs`, which this module reaches to abort a task;
//! the core sees a task's join state only through
//! [`JoinNotify`].

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use crate::context::{Core, JoinNotify, TaskId};

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
    fn from_panic(payload: Box<dyn Any + Send>) -> JoinError {
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
    executor: Weak<Core>,
}

impl<T> JoinInner<T> {
    pub(crate) fn new(executor: Weak<Core>) -> JoinInner<T> {
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

    fn cancelled(&self) {
        self.finish(Err(JoinError::Cancelled));
    }

    fn panicked(&self, payload: Box<dyn Any + Send>) {
        self.finish(Err(JoinError::from_panic(payload)));
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
