//! Tasks: the one allocation a spawned task lives in (`Task`), its
//! owner's end, [`JoinHandle`] with [`JoinError`], and [`spawn_blocking`].
//!
//! A task is a single `Arc` made at spawn (the async-task layout): the
//! waker state the executor's core defines (`TaskWaker`), the future and,
//! once it finishes, its output, in one `RefCell`, and the handle's waker
//! and flags. The executor's slab keeps the task as a `Runnable`; the
//! handle keeps it as a `Join` of its output type; a `Waker` is the same
//! `Arc` again. Polling and waking allocate nothing.
//!
//! # Threads
//!
//! The future and its output need not be `Send`. A `Waker` is, so a task's
//! allocation may be shared with, and freed by, another thread. This is
//! sound because another thread only ever reaches the `TaskWaker` (atomics
//! and an `Arc`), and because the future and the output are always dropped
//! on the executor's thread, before the last reference can be elsewhere:
//!
//! * the executor drops the future in place when the task ends (finished,
//!   panicked or cancelled) and when the executor itself is dropped (it
//!   cancels every task left in its slab);
//! * an output is stored only while the `JoinHandle` lives; a detached
//!   task's output is dropped as soon as it is made, and dropping the handle
//!   drops a stored one.
//!
//! So when a waker on another thread drops the last reference, nothing but
//! plain memory (and, at most, a `JoinError`, which is `Send`) is left.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::channel::oneshot;
use futures::task::{ArcWake, waker_ref};

use crate::context::{Runnable, TaskWaker};

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

/// What a task's cell holds: the future, then its result, then nothing.
enum Stage<F: Future> {
    Running(F),
    Done(Result<F::Output, JoinError>),
    /// The result was taken, or dropped because nobody waits for it.
    Gone,
}

/// A spawned task: everything it needs, in one allocation.
pub(crate) struct Task<F: Future> {
    /// What wakers reach, from any thread.
    header: TaskWaker,
    /// Borrowed mutably by the executor across each poll and each drop of
    /// the future, so that a handle polled from inside its own task (which
    /// would alias the future) sees the borrow and answers `Pending`.
    stage: RefCell<Stage<F>>,
    /// The waker of whoever awaits the [`JoinHandle`].
    join_waker: Cell<Option<Waker>>,
    /// Set by [`JoinHandle::abort`]: the executor drops the future at its
    /// next look at the task instead of polling it.
    aborted: Cell<bool>,
    /// Set when the [`JoinHandle`] is dropped: the output is dropped at once.
    detached: Cell<bool>,
}

// SAFETY: see the module doc, "Threads". Another thread reaches a task only
// through a `Waker`, whose wake and clone touch `header` alone (atomics, a
// `Copy` id, an `Arc<Shared>` that is `Send + Sync`). Every other field is
// touched only through `Runnable` (called by the executor, whose core is
// `!Send`) and `Join` (called by `JoinHandle`, which is `!Send`), both on
// the executor's thread. The future and the output are dropped on that
// thread before its last reference can be elsewhere, so the final drop on
// another thread frees plain memory.
unsafe impl<F: Future> Send for Task<F> {}
// SAFETY: as for `Send`: shared access from other threads is to `header`
// only, which is `Sync`.
unsafe impl<F: Future> Sync for Task<F> {}

impl<F: Future> ArcWake for Task<F> {
    fn wake_by_ref(task: &Arc<Self>) {
        task.header.schedule();
    }
}

impl<F: Future + 'static> Task<F> {
    /// A task around `future`, with waker state `header`, queued or not as
    /// `header` says.
    pub(crate) fn new(future: F, header: TaskWaker) -> Arc<Task<F>> {
        Arc::new(Task {
            header,
            stage: RefCell::new(Stage::Running(future)),
            join_waker: Cell::new(None),
            aborted: Cell::new(false),
            detached: Cell::new(false),
        })
    }

    /// Drops the future in place (it is pinned there), leaving `Gone`. A
    /// panic in its destructor propagates, after the cell is `Gone`.
    fn drop_future(&self) {
        let mut stage = self.stage.borrow_mut();
        if matches!(*stage, Stage::Running(_)) {
            *stage = Stage::Gone;
        }
    }

    /// Hands `result` to the handle and wakes whoever awaits it; or drops
    /// it, if the handle is gone.
    fn complete(&self, result: Result<F::Output, JoinError>) {
        if self.detached.get() {
            drop(result);
            return;
        }
        *self.stage.borrow_mut() = Stage::Done(result);
        if let Some(w) = self.join_waker.take() {
            w.wake();
        }
    }
}

impl<F: Future + 'static> Runnable for Task<F> {
    fn header(&self) -> &TaskWaker {
        &self.header
    }

    fn run(self: Arc<Self>) -> bool {
        if self.aborted.get() {
            self.cancel();
            return true;
        }
        self.header.begin_poll();
        // Borrows the Arc for the waker: no reference count per poll.
        let waker = waker_ref(&self);
        let mut cx = Context::from_waker(&waker);
        let polled = {
            let mut stage = self.stage.borrow_mut();
            let Stage::Running(future) = &mut *stage else { return true };
            // SAFETY: the future lives inside the task's `Arc` and is never
            // moved out of it: it is dropped in place (`drop_future`).
            let future = unsafe { Pin::new_unchecked(future) };
            catch_unwind(AssertUnwindSafe(|| future.poll(&mut cx)))
        };
        match polled {
            Ok(Poll::Pending) if !self.aborted.get() => false,
            Ok(Poll::Pending) => {
                self.cancel();
                true
            }
            Ok(Poll::Ready(out)) => {
                self.drop_future();
                self.complete(Ok(out));
                true
            }
            Err(payload) => {
                // The destructor of a future that panicked may panic too:
                // its panic is dropped, the first one is reported.
                drop(catch_unwind(AssertUnwindSafe(|| self.drop_future())));
                self.complete(Err(JoinError::from_panic(payload)));
                true
            }
        }
    }

    fn cancel(&self) {
        let running = matches!(*self.stage.borrow(), Stage::Running(_));
        if running {
            self.drop_future();
            self.complete(Err(JoinError::Cancelled));
        }
    }
}

/// A task's output side, whatever its future's type: what a
/// [`JoinHandle`] calls.
pub(crate) trait Join<T> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn abort(&self);
    fn is_finished(&self) -> bool;
    /// The handle is dropped: drop a stored output now, any later one when
    /// it is made.
    fn detach(&self);
}

impl<F: Future + 'static> Join<F::Output> for Task<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        // Busy: the task is polling (or dropping) its future, and that code
        // awaits its own handle. It is not finished.
        if let Ok(mut stage) = self.stage.try_borrow_mut() {
            match &*stage {
                // The future is pinned in the cell: only a finished stage
                // is moved out.
                Stage::Running(_) => {}
                Stage::Done(_) => {
                    if let Stage::Done(result) = std::mem::replace(&mut *stage, Stage::Gone) {
                        return Poll::Ready(result);
                    }
                }
                Stage::Gone => panic!("JoinHandle polled after it returned its output"),
            }
        }
        let w = match self.join_waker.take() {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        };
        self.join_waker.set(Some(w));
        Poll::Pending
    }

    fn abort(&self) {
        if self.is_finished() || self.aborted.get() {
            return;
        }
        self.aborted.set(true);
        // Queues the task so that the executor sees the flag: on its run
        // queue, or, from outside the executor, on its remote queue.
        self.header.schedule();
    }

    fn is_finished(&self) -> bool {
        self.stage.try_borrow().is_ok_and(|s| !matches!(*s, Stage::Running(_)))
    }

    fn detach(&self) {
        self.detached.set(true);
        self.join_waker.set(None);
        if let Ok(mut stage) = self.stage.try_borrow_mut() {
            if matches!(*stage, Stage::Done(_)) {
                *stage = Stage::Gone;
            }
        }
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
    /// The task's own allocation. `dyn Join<T>` is neither `Send` nor
    /// `Sync`, so neither is the handle.
    task: Arc<dyn Join<T>>,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: Arc<dyn Join<T>>) -> JoinHandle<T> {
        JoinHandle { task }
    }

    /// Cancels the task: its future is dropped exactly once, without being
    /// polled again, at the executor's next crank (or as soon as its
    /// current poll returns, if the task aborts itself), and awaiting this
    /// handle then yields [`JoinError::Cancelled`]. Aborting a finished
    /// task does nothing: its output stays available.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the task has finished (with output, panic or cancellation).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.task.poll_join(cx)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        self.task.detach();
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}

/// Runs `f` on the blocking pool of the executor running on this thread,
/// and returns a handle to its result: a task of this executor that waits
/// for it. A panic in `f` is the handle's [`JoinError::Panicked`](crate::JoinError).
///
/// # Panics
///
/// Panics when called outside a running tally executor.
///
/// # Examples
///
/// ```
/// let rt = tally::LocalReactor::new().unwrap();
/// let n = rt.block_on(async {
///     tally::task::spawn_blocking(|| std::fs::read_dir(".").unwrap().count()).await
/// });
/// assert!(n.unwrap() > 0);
/// ```
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    crate::context::current().blocking_pool().run(Box::new(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    }));
    crate::spawn(async move {
        match rx.await {
            Ok(Ok(out)) => out,
            // The job's own panic, re-raised in this task without running
            // the panic hook again: its handle reports the message.
            Ok(Err(payload)) => resume_unwind(payload),
            Err(oneshot::Canceled) => {
                resume_unwind(Box::new("the blocking pool dropped the job".to_string()))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// Bytes of a task's allocation besides its future: the `Arc`'s two
    /// counts and everything in [`Task`] but the stage's payload.
    fn overhead<F: Future>() -> usize {
        2 * size_of::<usize>() + size_of::<Task<F>>() - size_of::<F>()
    }

    #[test]
    fn a_task_is_at_most_96_bytes_plus_its_future() {
        let small = async { std::future::pending::<()>().await };
        fn of<F: Future>(_: &F) -> usize {
            overhead::<F>()
        }
        let big = async {
            let buf = [0u8; 256];
            std::future::pending::<()>().await;
            buf.len()
        };
        assert!(
            of(&small) <= 96,
            "{} bytes besides a {}-byte future",
            of(&small),
            size_of_val(&small)
        );
        assert!(of(&big) <= 96, "{} bytes besides a {}-byte future", of(&big), size_of_val(&big));
        println!(
            "task overhead: {} B (small future), {} B (257-byte future)",
            of(&small),
            of(&big)
        );
    }
}
