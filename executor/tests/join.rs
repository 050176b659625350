//! JoinHandle semantics: output, panics, nested spawns and nested
//! `block_on`.

mod util;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::Duration;

use tally::{JoinError, LocalReactor};
use util::{Counters, bounded};

/// The message of a caught panic.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p.downcast::<&'static str>().map(|s| s.to_string()).unwrap_or_default(),
    }
}

#[test]
fn awaiting_a_handle_yields_the_output() {
    let rt = LocalReactor::new().unwrap();
    let out = bounded(&rt, "join", async {
        let a = tally::spawn(async { 40u64 });
        let b = tally::spawn(async { String::from("two") });
        let c = tally::spawn(async {
            tally::time::sleep(Duration::from_millis(1)).await;
            vec![1u8, 2, 3]
        });
        (a.await, b.await, c.await)
    });
    assert_eq!(out, (Ok(40), Ok("two".to_string()), Ok(vec![1, 2, 3])));
}

#[test]
fn a_panicking_task_reports_its_message_and_the_executor_keeps_going() {
    let rt = LocalReactor::new().unwrap();
    let survivor = Counters::new();
    let long_lived = rt.spawn(survivor.wrap(async {
        for _ in 0..3 {
            tally::time::sleep(Duration::from_millis(2)).await;
        }
        "survived"
    }));
    let (str_panic, string_panic, after) = bounded(&rt, "panics", async {
        let a = tally::spawn(async {
            tally::time::sleep(Duration::from_millis(1)).await;
            panic!("static message");
        });
        let b = tally::spawn(async {
            let n = 42;
            if n == 42 {
                panic!("formatted message {n}");
            }
        });
        let (a, b) = (a.await, b.await);
        // Spawning after a panic works as before.
        let after = tally::spawn(async { 5 }).await;
        (a, b, after)
    });
    assert_eq!(str_panic, Err(JoinError::Panicked("static message".into())));
    assert_eq!(string_panic, Err(JoinError::Panicked("formatted message 42".into())));
    assert_eq!(after, Ok(5));
    assert_eq!(bounded(&rt, "the survivor", long_lived), Ok("survived"));
    assert_eq!(survivor.drops(), 1);
    let shown = JoinError::Panicked("static message".into()).to_string();
    assert!(shown.contains("static message"), "{shown}");
}

#[test]
fn a_panic_drops_the_task_once_and_its_captures() {
    let rt = LocalReactor::new().unwrap();
    let c = Counters::new();
    let held = Rc::new(());
    let h = rt.spawn(c.wrap({
        let held = held.clone();
        async move {
            let _held = held;
            panic!("boom");
        }
    }));
    assert_eq!(Rc::strong_count(&held), 2);
    let r = bounded(&rt, "panicking task", h);
    assert_eq!(r, Err(JoinError::Panicked("boom".into())));
    c.assert("panicked", 1, 1);
    assert_eq!(Rc::strong_count(&held), 1, "the task's captures were dropped");
}

#[test]
fn tasks_spawn_tasks_several_levels_deep() {
    fn level(
        depth: u32,
        log: Rc<RefCell<Vec<u32>>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = u64>>> {
        Box::pin(async move {
            log.borrow_mut().push(depth);
            if depth == 0 {
                return 1;
            }
            // Two children per level, each spawned from inside this task.
            let left = tally::spawn(level(depth - 1, log.clone()));
            let right = tally::spawn(level(depth - 1, log.clone()));
            tally::time::sleep(Duration::from_micros(100)).await;
            left.await.unwrap() + right.await.unwrap()
        })
    }
    let rt = LocalReactor::new().unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let leaves = bounded(&rt, "nested spawns", level(6, log.clone()));
    assert_eq!(leaves, 64);
    assert_eq!(log.borrow().len(), 127);
    for depth in 0..=6 {
        let n = log.borrow().iter().filter(|&&d| d == depth).count();
        assert_eq!(n, 1 << (6 - depth), "tasks at depth {depth}");
    }

    // A task that outlives its spawner still runs to completion.
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    bounded(&rt, "orphan", async move {
        tally::spawn(async move {
            tally::spawn(async move {
                tally::time::sleep(Duration::from_millis(2)).await;
                d.set(true);
            });
        })
        .await
        .unwrap();
        tally::time::sleep(Duration::from_millis(20)).await;
    });
    assert!(done.get());
}

#[test]
fn nested_block_on_in_the_main_future_panics_with_a_clear_message() {
    let rt = LocalReactor::new().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            rt.block_on(async { 1 });
        })
    }));
    let msg = panic_message(r.expect_err("nested block_on must panic"));
    assert!(msg.contains("nested block_on"), "unclear message: {msg:?}");
    assert!(msg.contains("spawn"), "the message should say what to do instead: {msg:?}");
    // The reactor is still usable.
    assert_eq!(bounded(&rt, "after nesting", async { tally::spawn(async { 3 }).await }), Ok(3));
}

#[test]
fn nested_block_on_in_a_task_fails_that_task_only() {
    let rt = LocalReactor::new().unwrap();
    let other = LocalReactor::new().unwrap();
    let (same, different) = bounded(&rt, "nesting tasks", async {
        let rt2 = LocalReactor::new().unwrap();
        let same = tally::spawn(async move {
            // tally::reactor() works; the executor itself is running.
            let _ = tally::reactor();
            rt2.block_on(async {});
        });
        let different = tally::spawn(async {
            tally::time::sleep(Duration::from_millis(1)).await;
        });
        (same.await, different.await)
    });
    let Err(JoinError::Panicked(msg)) = same else { panic!("expected a panic, got {same:?}") };
    assert!(msg.contains("nested block_on"), "unclear message: {msg:?}");
    assert_eq!(different, Ok(()));
    // Blocking on the same reactor from its own task.
    let rt = Rc::new(rt);
    let inner = rt.clone();
    let r = bounded(&rt, "same reactor", async move {
        tally::spawn(async move { inner.block_on(async { 1 }) }).await
    });
    let Err(JoinError::Panicked(msg)) = r else { panic!("expected a panic, got {r:?}") };
    assert!(msg.contains("nested block_on"), "unclear message: {msg:?}");
    // Both reactors still work afterwards.
    assert_eq!(other.block_on(async { tally::spawn(async { 1 }).await }), Ok(1));
    assert_eq!(rt.block_on(async { tally::spawn(async { 2 }).await }), Ok(2));
}

#[test]
fn spawn_outside_an_executor_panics_with_a_clear_message() {
    let r = catch_unwind(|| drop(tally::spawn(async {})));
    let msg = panic_message(r.expect_err("spawn outside an executor must panic"));
    assert!(msg.contains("no tally executor"), "unclear message: {msg:?}");
}

#[test]
fn two_reactors_on_one_thread_run_one_after_the_other() {
    let a = LocalReactor::new().unwrap();
    let b = LocalReactor::new().unwrap();
    let ha = a.spawn(async { tally::spawn(async { "a" }).await.unwrap() });
    let hb = b.spawn(async { tally::spawn(async { "b" }).await.unwrap() });
    assert_eq!(bounded(&b, "b", hb), Ok("b"));
    assert_eq!(bounded(&a, "a", ha), Ok("a"));
}
