//! A task's single allocation: what may outlive the executor on another
//! thread (a waker), where a task's future and output are dropped (always
//! on the executor's thread), and a task that awaits its own handle.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::thread::{self, ThreadId};

use tally::{JoinError, JoinHandle, LocalReactor};

/// Where a [`DropSpy`] was dropped, once it is.
type DroppedOn = Rc<Cell<Option<ThreadId>>>;

/// Records the thread it is dropped on. `!Send`, like most local state.
struct DropSpy {
    dropped_on: DroppedOn,
}

impl Drop for DropSpy {
    fn drop(&mut self) {
        self.dropped_on.set(Some(thread::current().id()));
    }
}

/// Runs `rt` until `done()` holds, yielding between checks; panics after
/// 10,000 cranks, so a broken executor fails instead of hanging.
fn run_until(rt: &LocalReactor, done: impl Fn() -> bool) {
    let mut cranks = 0u32;
    rt.block_on(poll_fn(|cx| {
        if done() {
            return Poll::Ready(());
        }
        cranks += 1;
        assert!(cranks < 10_000, "the condition never held");
        cx.waker().wake_by_ref();
        Poll::Pending
    }));
}

/// Runs `rt` until a task sends a waker on `rx`, and returns it.
fn recv_running(rt: &LocalReactor, rx: &mpsc::Receiver<Waker>) -> Waker {
    let got = RefCell::new(None);
    run_until(rt, || {
        let mut got = got.borrow_mut();
        if got.is_none() {
            *got = rx.try_recv().ok();
        }
        got.is_some()
    });
    got.into_inner().unwrap()
}

/// Pending forever, handing its waker out on its first poll.
fn hand_out_waker(tx: mpsc::Sender<Waker>) -> impl Future<Output = ()> {
    let mut tx = Some(tx);
    poll_fn(move |cx: &mut Context<'_>| {
        if let Some(tx) = tx.take() {
            tx.send(cx.waker().clone()).unwrap();
        }
        Poll::Pending
    })
}

#[test]
fn a_waker_on_another_thread_outlives_the_executor_and_its_future_drops_at_home() {
    let home = thread::current().id();
    let future_dropped = Rc::new(Cell::new(None));
    let (tx, rx) = mpsc::channel();
    let rt = LocalReactor::new().unwrap();
    let spy = DropSpy { dropped_on: future_dropped.clone() };
    let handle = rt.spawn(async move {
        let _spy = spy;
        hand_out_waker(tx).await;
    });
    let waker = recv_running(&rt, &rx);
    // The other thread holds the last reference at the end: it wakes a task
    // whose executor is gone, then frees the allocation.
    let (go, wait) = mpsc::channel::<()>();
    let other = thread::spawn(move || {
        wait.recv().unwrap();
        waker.wake_by_ref();
        drop(waker);
    });
    drop(rt);
    assert_eq!(future_dropped.get(), Some(home), "the executor's drop cancels the task at home");
    drop(handle);
    go.send(()).unwrap();
    other.join().unwrap();
}

#[test]
fn a_detached_tasks_output_drops_at_home_even_when_a_waker_lives_elsewhere() {
    let home = thread::current().id();
    let (rt, handle, output_dropped, rx) = spawn_spy_output();
    drop(handle);
    run_until(&rt, || output_dropped.get().is_some());
    assert_eq!(output_dropped.get(), Some(home), "a detached task's output is dropped at once");
    let waker = rx.recv().unwrap();
    thread::spawn(move || drop(waker)).join().unwrap();
    assert_eq!(rt.live_tasks(), 0);
}

#[test]
fn a_stored_output_drops_with_its_handle_at_home() {
    let home = thread::current().id();
    let (rt, handle, output_dropped, rx) = spawn_spy_output();
    run_until(&rt, || handle.is_finished());
    let waker = rx.recv().unwrap();
    drop(rt);
    assert_eq!(output_dropped.get(), None, "the handle still holds the output");
    drop(handle);
    assert_eq!(output_dropped.get(), Some(home));
    thread::spawn(move || drop(waker)).join().unwrap();
}

/// A reactor with one task that hands its waker out on `rx`, then finishes
/// with a [`DropSpy`] as its output; the spy's cell.
fn spawn_spy_output() -> (LocalReactor, JoinHandle<DropSpy>, DroppedOn, mpsc::Receiver<Waker>) {
    let output_dropped = Rc::new(Cell::new(None));
    let (tx, rx) = mpsc::channel::<Waker>();
    let rt = LocalReactor::new().unwrap();
    let spy_cell = output_dropped.clone();
    let handle = rt.spawn(async move {
        hand_out_waker_then_finish(tx).await;
        DropSpy { dropped_on: spy_cell }
    });
    (rt, handle, output_dropped, rx)
}

/// Hands its waker to another thread, wakes itself, then finishes.
async fn hand_out_waker_then_finish(tx: mpsc::Sender<Waker>) {
    let mut tx = Some(tx);
    poll_fn(|cx| {
        if let Some(tx) = tx.take() {
            tx.send(cx.waker().clone()).unwrap();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(())
    })
    .await;
}

#[test]
fn a_task_awaiting_its_own_handle_is_pending_and_can_abort_itself() {
    let rt = LocalReactor::new().unwrap();
    let slot: Rc<RefCell<Option<JoinHandle<u32>>>> = Rc::new(RefCell::new(None));
    let seen = Rc::new(Cell::new(None));
    let (slot2, seen2) = (slot.clone(), seen.clone());
    let handle = rt.spawn(async move {
        let mut own = slot2.borrow_mut().take().unwrap();
        // Polling its own handle from inside its own poll: the task has not
        // finished, so the answer is Pending, not a panic or an alias.
        let mut cx = Context::from_waker(Waker::noop());
        let pending = Pin::new(&mut own).poll(&mut cx).is_pending();
        seen2.set(Some((pending, own.is_finished())));
        own.abort();
        // Dropping its own handle from inside: the task is detached.
        drop(own);
        std::future::pending::<u32>().await
    });
    *slot.borrow_mut() = Some(handle);
    run_until(&rt, || rt.live_tasks() == 0);
    assert_eq!(seen.get(), Some((true, false)));
    assert_eq!(rt.live_tasks(), 0, "the task aborted itself and ended");
}

#[test]
fn aborting_from_outside_block_on_cancels_at_the_next_block_on() {
    let rt = LocalReactor::new().unwrap();
    let polled = Rc::new(Cell::new(false));
    let flag = polled.clone();
    let handle = rt.spawn(async move {
        flag.set(true);
        std::future::pending::<()>().await
    });
    run_until(&rt, || polled.get());
    assert!(!handle.is_finished());
    handle.abort();
    let out = rt.block_on(handle);
    assert_eq!(out, Err(JoinError::Cancelled));
    assert_eq!(rt.live_tasks(), 0);
}
