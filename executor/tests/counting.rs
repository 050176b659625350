//! Counting tests in the async-task style: every future's polls and drops,
//! and every waker's wakes, are counted and asserted after every step.

mod util;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use tally::{JoinError, LocalReactor};
use util::{Counters, CountingWaker, crank, gate, poll_once, poll_with};

/// A value that counts its drops, to follow a task's output.
struct Output(Rc<Cell<usize>>);

impl Drop for Output {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

struct Gate {
    open: Rc<Cell<bool>>,
    waker: Rc<Cell<Option<Waker>>>,
}

impl Gate {
    fn new() -> Gate {
        Gate { open: Rc::default(), waker: Rc::default() }
    }

    fn future(&self) -> impl Future<Output = ()> + 'static {
        gate(self.open.clone(), self.waker.clone())
    }

    /// The waker the gated task stored at its last poll.
    fn waker(&self) -> Waker {
        let w = self.waker.take().expect("the gated task has been polled");
        self.waker.set(Some(w.clone()));
        w
    }

    fn open(&self) {
        self.open.set(true);
        self.waker().wake();
    }
}

#[test]
fn spawn_polls_once_and_an_unwoken_task_is_not_polled_again() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let g = Gate::new();
    let h = rt.spawn(c.wrap(g.future()));
    c.assert("spawn", 0, 0);
    crank(&rt);
    c.assert("first crank", 1, 0);
    for i in 0..5 {
        crank(&rt);
        c.assert(&format!("idle crank {i}"), 1, 0);
    }
    assert!(!h.is_finished());
    g.open();
    crank(&rt);
    c.assert("open", 2, 1);
    assert!(h.is_finished());
    assert_eq!(poll_once(&mut { h }), Poll::Ready(Ok(())));
    drop(rt);
    c.assert("drop reactor", 2, 1);
}

#[test]
fn a_task_woken_many_times_before_it_runs_is_polled_once() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let g = Gate::new();
    let _h = rt.spawn(c.wrap(g.future()));
    crank(&rt);
    c.assert("first crank", 1, 0);

    // Woken ten times from inside the running executor (the local queue).
    let w = g.waker();
    rt.block_on(async {
        for _ in 0..10 {
            w.wake_by_ref();
        }
        util::yield_now().await;
    });
    c.assert("ten local wakes", 2, 0);

    // Woken ten times on this thread while no executor runs (the remote
    // queue, drained at the next crank).
    let w = g.waker();
    for _ in 0..10 {
        w.wake_by_ref();
    }
    c.assert("ten wakes, not yet run", 2, 0);
    crank(&rt);
    c.assert("ten wakes while stopped", 3, 0);
    crank(&rt);
    c.assert("no wake", 3, 0);

    // Clones and by-value wakes dedup too.
    let w = g.waker();
    for _ in 0..10 {
        let clone = w.clone();
        clone.wake();
    }
    crank(&rt);
    c.assert("ten wakes by value", 4, 0);

    g.open();
    crank(&rt);
    c.assert("open", 5, 1);

    // A waker that outlives its task schedules nothing.
    w.wake_by_ref();
    crank(&rt);
    c.assert("stale wake", 5, 1);
}

#[test]
fn a_stale_waker_never_polls_the_task_that_reuses_its_slot() {
    let rt = LocalReactor::new().unwrap();
    let (ca, cb) = (Counters::new(), Counters::new());
    let (ga, gb) = (Gate::new(), Gate::new());
    let _a = rt.spawn(ca.wrap(ga.future()));
    crank(&rt);
    let stale = ga.waker();
    ga.open();
    crank(&rt);
    ca.assert("a finished", 2, 1);
    let _b = rt.spawn(cb.wrap(gb.future()));
    crank(&rt);
    cb.assert("b spawned", 1, 0);
    for _ in 0..3 {
        stale.wake_by_ref();
        crank(&rt);
    }
    cb.assert("a's stale waker woken", 1, 0);
    ca.assert("a's stale waker woken", 2, 1);
}

#[test]
fn a_wake_from_another_thread_goes_through_the_remote_queue() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let first = Rc::new(Cell::new(true));
    let task = {
        let slot = slot.clone();
        c.wrap(std::future::poll_fn(move |cx| {
            if first.replace(false) {
                *slot.lock().unwrap() = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }))
    };
    let h = rt.spawn(task);
    crank(&rt);
    c.assert("first crank", 1, 0);
    let waker = slot.lock().unwrap().take().unwrap();
    let kicks_before = rt.metrics().kernel_wakes;
    let waker_thread = std::thread::spawn(move || {
        // Long enough for the reactor to block in the kernel: only the
        // remote wake-up can get it out (its timeout is the watchdog's).
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..10 {
            waker.wake_by_ref();
        }
    });
    let out = util::bounded(&rt, "the remotely woken task", h);
    waker_thread.join().unwrap();
    assert_eq!(out, Ok(()));
    c.assert("ten remote wakes", 2, 1);
    let kicks = rt.metrics().kernel_wakes - kicks_before;
    assert!(kicks >= 1, "the blocked reactor was not woken through the kernel");
    assert!(kicks <= 10, "{kicks} kernel wake-ups for ten coalescable wakes");
}

#[test]
fn dropping_the_join_handle_detaches_the_task() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let g = Gate::new();
    let outputs = Rc::new(Cell::new(0));
    let task = {
        let outputs = outputs.clone();
        let fut = g.future();
        c.wrap(async move {
            fut.await;
            Output(outputs)
        })
    };
    drop(rt.spawn(task));
    c.assert("spawn and detach", 0, 0);
    crank(&rt);
    c.assert("first crank", 1, 0);
    g.open();
    crank(&rt);
    c.assert("finished detached", 2, 1);
    assert_eq!(outputs.get(), 1, "a detached task's output is dropped once");
    drop(rt);
    c.assert("drop reactor", 2, 1);
    assert_eq!(outputs.get(), 1);
}

#[test]
fn abort_before_the_first_poll_drops_the_future_once() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let g = Gate::new();
    let mut h = rt.spawn(c.wrap(g.future()));
    h.abort();
    h.abort();
    crank(&rt);
    c.assert("abort, crank", 0, 1);
    assert!(h.is_finished());
    assert_eq!(poll_once(&mut h), Poll::Ready(Err(JoinError::Cancelled)));
    crank(&rt);
    drop(rt);
    c.assert("drop reactor", 0, 1);
}

#[test]
fn abort_of_a_pending_task_drops_it_once_and_wakes_the_awaiter_once() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let g = Gate::new();
    let mut h = rt.spawn(c.wrap(g.future()));
    crank(&rt);
    c.assert("first crank", 1, 0);
    let (awaiter, waker) = CountingWaker::new();
    assert!(poll_with(&mut h, &waker).is_pending());
    assert_eq!(awaiter.wakes(), 0);
    let task_waker = g.waker();
    h.abort();
    c.assert("abort", 1, 0);
    crank(&rt);
    c.assert("abort, crank", 1, 1);
    assert_eq!(awaiter.wakes(), 1, "the awaiter is woken once");
    assert_eq!(Arc::strong_count(&awaiter), 2, "the handle let go of the awaiter's waker");
    // Waking the dead task or aborting it again does nothing.
    task_waker.wake();
    h.abort();
    crank(&rt);
    c.assert("wake and abort again", 1, 1);
    assert_eq!(awaiter.wakes(), 1);
    assert_eq!(poll_with(&mut h, &waker), Poll::Ready(Err(JoinError::Cancelled)));
    drop(rt);
    c.assert("drop reactor", 1, 1);
}

#[test]
fn aborting_a_finished_task_is_a_no_op() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let outputs = Rc::new(Cell::new(0));
    let mut h = rt.spawn(c.wrap({
        let outputs = outputs.clone();
        async move { Output(outputs) }
    }));
    crank(&rt);
    c.assert("ran to completion", 1, 1);
    assert!(h.is_finished());
    h.abort();
    crank(&rt);
    c.assert("abort after finish", 1, 1);
    assert_eq!(outputs.get(), 0, "abort must not drop a finished task's output");
    match poll_once(&mut h) {
        Poll::Ready(Ok(out)) => drop(out),
        other => panic!("expected the output, got {:?}", other.map(|r| r.map(|_| ()))),
    }
    assert_eq!(outputs.get(), 1);
}

#[test]
fn a_task_that_aborts_itself_is_dropped_once() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let me: Rc<Cell<Option<tally::JoinHandle<()>>>> = Rc::default();
    let task = {
        let me = me.clone();
        c.wrap(async move {
            let h = me.take().expect("the handle is stored before the first poll");
            h.abort();
            // Stay pending; the executor drops the future after this poll.
            std::future::pending::<()>().await;
        })
    };
    let h = rt.spawn(task);
    me.set(Some(h));
    crank(&rt);
    c.assert("self-abort", 1, 1);
    crank(&rt);
    c.assert("crank again", 1, 1);
}

#[test]
fn the_join_handle_wakes_its_awaiter_once_when_the_task_finishes() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let g = Gate::new();
    let mut h = rt.spawn(c.wrap({
        let fut = g.future();
        async move {
            fut.await;
            7
        }
    }));
    let (awaiter, waker) = CountingWaker::new();
    assert!(poll_with(&mut h, &waker).is_pending());
    // Polling again with the same waker stores no second clone.
    assert!(poll_with(&mut h, &waker).is_pending());
    assert_eq!(Arc::strong_count(&awaiter), 3, "handle + test's waker + the stored clone");
    crank(&rt);
    c.assert("first crank", 1, 0);
    assert_eq!(awaiter.wakes(), 0);
    g.open();
    crank(&rt);
    c.assert("finished", 2, 1);
    assert_eq!(awaiter.wakes(), 1);
    assert_eq!(Arc::strong_count(&awaiter), 2, "the stored waker is released on wake");
    assert_eq!(poll_with(&mut h, &waker), Poll::Ready(Ok(7)));
}

#[test]
fn dropping_the_reactor_drops_unfinished_tasks_exactly_once() {
    let rt = LocalReactor::new().unwrap();
    let (never_polled, pending, detached, done) =
        (Counters::new(), Counters::new(), Counters::new(), Counters::new());
    let g = Gate::new();
    let mut h1 = rt.spawn(pending.wrap(g.future()));
    let mut h3 = rt.spawn(done.wrap(async { 3 }));
    drop(rt.spawn(detached.wrap(std::future::pending::<()>())));
    crank(&rt);
    let mut h0 = rt.spawn(never_polled.wrap(std::future::pending::<()>()));
    never_polled.assert("before drop", 0, 0);
    pending.assert("before drop", 1, 0);
    detached.assert("before drop", 1, 0);
    done.assert("before drop", 1, 1);
    let (awaiter, waker) = CountingWaker::new();
    assert!(poll_with(&mut h1, &waker).is_pending());
    let stale = g.waker();

    drop(rt);
    never_polled.assert("drop reactor", 0, 1);
    pending.assert("drop reactor", 1, 1);
    detached.assert("drop reactor", 1, 1);
    done.assert("drop reactor", 1, 1);
    assert_eq!(awaiter.wakes(), 1);
    assert_eq!(poll_once(&mut h0), Poll::Ready(Err(JoinError::Cancelled)));
    assert_eq!(poll_once(&mut h1), Poll::Ready(Err(JoinError::Cancelled)));
    assert_eq!(poll_once(&mut h3), Poll::Ready(Ok(3)));
    // Wakers and handles that outlive the reactor are harmless.
    stale.wake();
    h0.abort();
    never_polled.assert("late wake and abort", 0, 1);
    pending.assert("late wake and abort", 1, 1);
}

#[test]
fn spawning_while_stopped_runs_at_the_next_crank_in_spawn_order() {
    let rt = LocalReactor::new().unwrap();
    let order = Rc::new(std::cell::RefCell::new(Vec::new()));
    let counters: Vec<Counters> = (0..5).map(|_| Counters::new()).collect();
    for (i, c) in counters.iter().enumerate() {
        let order = order.clone();
        drop(rt.spawn(c.wrap(async move { order.borrow_mut().push(i) })));
    }
    for c in &counters {
        c.assert("spawned", 0, 0);
    }
    crank(&rt);
    for c in &counters {
        c.assert("crank", 1, 1);
    }
    assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn a_remote_wake_gets_a_reactor_blocked_without_timeout_out_of_the_kernel() {
    // No timer at all: the reactor blocks in the kernel with no timeout,
    // and only the remote wake-up can end the wait. The watchdog turns a
    // lost wake-up into a failure instead of a hang.
    let _watchdog = util::Watchdog::new("a reactor blocked with no timeout", util::BUDGET);
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let s = slot.clone();
    let polled = Rc::new(Cell::new(false));
    let p = polled.clone();
    let task = rt.spawn(c.wrap(std::future::poll_fn(move |cx| {
        if p.replace(true) {
            Poll::Ready("woken")
        } else {
            *s.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    })));
    let main_slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let ms = main_slot.clone();
    let waker_thread = std::thread::spawn(move || {
        // Wake the task, then (later) the block_on future itself.
        let deadline = std::time::Instant::now() + util::BUDGET;
        let task_waker = loop {
            if let Some(w) = slot.lock().unwrap().take() {
                break w;
            }
            assert!(std::time::Instant::now() < deadline, "the task never ran");
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(Duration::from_millis(30));
        task_waker.wake();
        let main_waker = loop {
            if let Some(w) = ms.lock().unwrap().take() {
                break w;
            }
            assert!(std::time::Instant::now() < deadline, "main never waited");
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(Duration::from_millis(30));
        main_waker.wake();
    });
    let kicks = rt.metrics().kernel_wakes;
    assert_eq!(rt.block_on(task), Ok("woken"));
    c.assert("remote wake", 2, 1);
    // Now the block_on future itself, woken from the other thread.
    let mut first = true;
    rt.block_on(std::future::poll_fn(|cx| {
        if std::mem::take(&mut first) {
            *main_slot.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }));
    waker_thread.join().unwrap();
    assert!(rt.metrics().kernel_wakes - kicks >= 2, "each wait ended by a kernel wake-up");
}
