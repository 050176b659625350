//! loom models of the task waker: its `scheduled` flag and the executor's
//! remote run queue, woken from other threads, against an executor that
//! polls the task and cranks a [`ModelReactor`] (the reactor's remote-wake
//! handshake with the eventfd modelled as a flag). A lost wake-up leaves the
//! executor blocked with every waker done, which loom reports as a deadlock.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p tally --release --lib
//! loom_model`.

use std::sync::Arc;
use std::task::Wake;

use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;
use tally_reactor::ModelReactor;

use crate::context::{Shared, TaskId, TaskWaker};

const TASK: TaskId = TaskId { index: 0, generation: 1 };

/// Explores every interleaving with up to four preemptions.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(4);
    builder.check(f);
}

/// A task's waker on an executor (id 1) that is not running on any model
/// thread, so every wake takes the remote path, as a wake from another
/// thread does.
fn waker(reactor: &ModelReactor, scheduled: bool) -> Arc<TaskWaker> {
    let shared = Arc::new(Shared::new(1, reactor.remote_waker()));
    Arc::new(TaskWaker::new(TASK, shared, scheduled))
}

/// The executor's side: polls the task when it is queued (`begin_poll`,
/// then the task's "future": it is ready once it sees `want` events),
/// cranks the reactor and drains the remote run queue, as `Executor::crank`
/// does, until the task is ready. Panics if the task is queued twice
/// without a poll between.
fn run(reactor: &mut ModelReactor, task: &TaskWaker, events: &AtomicU32, want: u32, queued: bool) {
    let mut queue = Vec::new();
    let mut run_now = queued;
    loop {
        if run_now {
            task.begin_poll();
            // Relaxed: only the waker's Release and the poll's Acquire may
            // make the events visible.
            if events.load(Ordering::Relaxed) == want {
                return;
            }
        }
        reactor.crank(true);
        queue.clear();
        task.shared.take_remote(&mut queue);
        assert!(queue.len() <= 1, "the task was queued twice: {queue:?}");
        assert!(queue.iter().all(|&id| id == TASK));
        run_now = !queue.is_empty();
    }
}

/// One waker on another thread publishes an event and wakes the task,
/// which is parked (`queued` false) or about to be polled (`queued` true:
/// just spawned, so the wake races with its first `begin_poll`).
fn one_wake(queued: bool) {
    model(move || {
        let mut reactor = ModelReactor::new();
        let task = waker(&reactor, queued);
        let events = Arc::new(AtomicU32::new(0));
        let (t, e) = (task.clone(), events.clone());
        let h = thread::spawn(move || {
            e.store(1, Ordering::Relaxed);
            t.wake_by_ref();
        });
        run(&mut reactor, &task, &events, 1, queued);
        h.join().unwrap();
    });
}

#[test]
fn loom_model_a_wake_from_another_thread_reaches_a_parked_task() {
    one_wake(false);
}

#[test]
fn loom_model_a_wake_during_the_poll_is_not_lost() {
    one_wake(true);
}

#[test]
fn loom_model_two_wakers_queue_the_task_once_and_neither_is_lost() {
    model(|| {
        let mut reactor = ModelReactor::new();
        let task = waker(&reactor, false);
        let events = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (t, e) = (task.clone(), events.clone());
                thread::spawn(move || {
                    e.fetch_add(1, Ordering::Relaxed);
                    t.wake();
                })
            })
            .collect();
        run(&mut reactor, &task, &events, 2, false);
        for h in handles {
            h.join().unwrap();
        }
    });
}
