//! Timers under fake time ([`TestExecutor`]), plus one smoke test on the
//! real clock with a generous tolerance.

mod util;

use std::cell::RefCell;
use std::future::{Future, pending};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tally::TestExecutor;
use tally::time::{Elapsed, interval, sleep, sleep_until, timeout};
use util::Counters;

const MS: Duration = Duration::from_millis(1);

/// Runs `ex` until it stalls, with nothing of the test's own to poll.
fn stall(ex: &TestExecutor) {
    assert_eq!(ex.run_until_stalled(&mut pending::<()>()), Poll::Pending);
}

type Log = Rc<RefCell<Vec<(u32, Duration)>>>;

#[test]
fn sleeps_complete_in_deadline_order_at_their_fake_instants() {
    let ex = TestExecutor::new().unwrap();
    let t0 = ex.now();
    let log: Log = Rc::default();
    for ms in [30u32, 10, 20, 50, 40] {
        let log = log.clone();
        drop(ex.spawn(async move {
            sleep(MS * ms).await;
            log.borrow_mut().push((ms, tally::time::now() - t0));
        }));
    }
    stall(&ex);
    assert_eq!(ex.pending_timers(), 5);
    assert!(log.borrow().is_empty());

    ex.advance(MS * 9);
    stall(&ex);
    assert!(log.borrow().is_empty(), "nothing is due at 9 ms");
    ex.advance(MS);
    stall(&ex);
    assert_eq!(*log.borrow(), [(10, MS * 10)]);
    assert_eq!(ex.pending_timers(), 4);
    ex.advance(MS * 15);
    stall(&ex);
    assert_eq!(*log.borrow(), [(10, MS * 10), (20, MS * 25)]);
    assert_eq!(ex.pending_timers(), 3);
    // Three deadlines pass in one step: they still complete in order.
    ex.advance(MS * 100);
    stall(&ex);
    let order: Vec<u32> = log.borrow().iter().map(|&(ms, _)| ms).collect();
    assert_eq!(order, [10, 20, 30, 40, 50]);
    assert_eq!(ex.pending_timers(), 0);
    assert_eq!(ex.now() - t0, MS * 125);
}

#[test]
fn a_thousand_shuffled_timers_fire_in_order() {
    let ex = TestExecutor::new().unwrap();
    let t0 = ex.now();
    let log: Log = Rc::default();
    let mut x: u32 = 12345;
    for i in 0..1000u32 {
        // A small LCG: deterministic, shuffled deadlines, some equal.
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let ms = 1 + (x >> 16) % 500;
        let log = log.clone();
        drop(ex.spawn(async move {
            sleep(MS * ms).await;
            log.borrow_mut().push((i, tally::time::now() - t0));
            ms
        }));
    }
    stall(&ex);
    assert_eq!(ex.pending_timers(), 1000);
    let mut fired = 0;
    for step in 0..51 {
        ex.advance(MS * 10);
        stall(&ex);
        let log = log.borrow();
        let now = MS * 10 * (step + 1);
        // Every timer due by now has fired, at the instant it was seen.
        assert!(log.iter().all(|&(_, at)| at <= now));
        assert!(log[fired..].iter().all(|&(_, at)| at == now));
        fired = log.len();
        assert_eq!(ex.pending_timers(), 1000 - fired);
    }
    assert_eq!(fired, 1000);
}

#[test]
fn a_dropped_sleep_never_fires_and_frees_its_timer() {
    let ex = TestExecutor::new().unwrap();
    let c = Counters::new();
    let fired = Rc::new(RefCell::new(false));
    let f = fired.clone();
    let h = ex.spawn(c.wrap(async move {
        sleep(MS * 10).await;
        *f.borrow_mut() = true;
    }));
    stall(&ex);
    c.assert("armed", 1, 0);
    assert_eq!(ex.pending_timers(), 1);
    h.abort();
    stall(&ex);
    c.assert("aborted", 1, 1);
    assert_eq!(ex.pending_timers(), 0);
    ex.advance(MS * 20);
    stall(&ex);
    assert!(!*fired.borrow());
    c.assert("after the deadline", 1, 1);

    // A Sleep polled once and dropped by hand.
    let mut fut = Box::pin(async {
        let mut a = Box::pin(sleep(MS * 5));
        let mut b = Box::pin(sleep(MS * 6));
        std::future::poll_fn(|cx| {
            assert!(a.as_mut().poll(cx).is_pending());
            assert!(b.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        assert_eq!(tally::time::now(), tally::time::now());
        drop(a);
        sleep(MS * 10).await;
    });
    assert_eq!(ex.run_until_stalled(&mut fut), Poll::Pending);
    assert_eq!(ex.pending_timers(), 2, "b and the last sleep are armed; a is not");
    ex.advance(MS * 10);
    assert_eq!(ex.run_until_stalled(&mut fut), Poll::Ready(()));
    assert_eq!(ex.pending_timers(), 0, "dropping a pending sleep frees its timer");
}

#[test]
fn many_cancelled_timers_leave_nothing_behind() {
    let ex = TestExecutor::new().unwrap();
    for round in 0..5 {
        let handles: Vec<_> = (0..200u32).map(|i| ex.spawn(sleep(MS * (i + 1)))).collect();
        stall(&ex);
        assert_eq!(ex.pending_timers(), 200, "round {round}");
        for h in handles.iter().step_by(2) {
            h.abort();
        }
        stall(&ex);
        assert_eq!(ex.pending_timers(), 100, "round {round}");
        ex.advance(MS * 200);
        stall(&ex);
        assert_eq!(ex.pending_timers(), 0, "round {round}");
        let mut cancelled = 0;
        for mut h in handles {
            match util::poll_once(&mut h) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(tally::JoinError::Cancelled)) => cancelled += 1,
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(cancelled, 100);
    }
}

#[test]
fn timeout_both_ways() {
    let ex = TestExecutor::new().unwrap();
    let late = ex.spawn(timeout(MS * 10, sleep(MS * 20)));
    let early = ex.spawn(timeout(MS * 20, async {
        sleep(MS * 10).await;
        "in time"
    }));
    let never = ex.spawn(timeout(MS * 15, pending::<()>()));
    let ready = ex.spawn(timeout(Duration::ZERO, async { 1 }));
    stall(&ex);
    assert!(ready.is_finished(), "a ready future wins even a zero timeout");
    assert_eq!(ex.pending_timers(), 5);
    ex.advance(MS * 9);
    stall(&ex);
    assert!(!late.is_finished() && !early.is_finished());
    ex.advance(MS);
    stall(&ex);
    assert!(late.is_finished(), "the 10 ms timeout has elapsed");
    assert!(early.is_finished(), "the 10 ms sleep under a 20 ms timeout is done");
    assert!(!never.is_finished());
    // late: its timeout and its inner sleep are gone; early: both gone.
    assert_eq!(ex.pending_timers(), 1);
    ex.advance(MS * 5);
    stall(&ex);
    assert_eq!(ex.pending_timers(), 0);
    let mut all = Box::pin(async { (late.await, early.await, never.await, ready.await) });
    let Poll::Ready(out) = ex.run_until_stalled(&mut all) else { panic!("handles not ready") };
    assert_eq!(out, (Ok(Err(Elapsed)), Ok(Ok("in time")), Ok(Err(Elapsed)), Ok(Ok(1))));
}

#[test]
fn interval_ticks_at_the_right_fake_instants() {
    let ex = TestExecutor::new().unwrap();
    let t0 = ex.now();
    let ticks: Rc<RefCell<Vec<(Duration, Duration)>>> = Rc::default();
    let log = ticks.clone();
    let _h = ex.spawn(async move {
        let mut every = interval(MS * 10);
        assert_eq!(every.period(), MS * 10);
        for _ in 0..16 {
            let at = every.tick().await;
            log.borrow_mut().push((at - t0, tally::time::now() - t0));
        }
    });
    let mut expect = Vec::new();
    let mut step = |by: u32, new: &[(u32, u32)]| {
        ex.advance(MS * by);
        stall(&ex);
        expect.extend(new.iter().map(|&(at, seen)| (MS * at, MS * seen)));
        assert_eq!(*ticks.borrow(), expect, "after advancing to {:?}", ex.now() - t0);
    };
    step(0, &[]);
    step(9, &[]);
    step(1, &[(10, 10)]);
    step(5, &[]);
    step(5, &[(20, 20)]);
    step(10, &[(30, 30)]);
    // Late by half a period: the tick fires at once and the schedule keeps
    // its phase.
    step(15, &[(40, 45)]);
    step(5, &[(50, 50)]);
    // Late by a whole period or more: one tick, then the schedule restarts
    // from now.
    step(25, &[(60, 75)]);
    step(5, &[]);
    step(5, &[(85, 85)]);
    // Late by exactly one period: no burst either.
    step(20, &[(95, 105)]);
    step(10, &[(115, 115)]);
}

#[test]
fn a_sleep_made_outside_the_executor_measures_fake_time() {
    let ex = TestExecutor::new().unwrap();
    let mut s = Box::pin(sleep(Duration::from_secs(1)));
    let mut every = interval(MS * 10);
    let mut tick = Box::pin(std::future::poll_fn(move |cx| every.poll_tick(cx)));
    assert_eq!(ex.run_until_stalled(&mut s), Poll::Pending);
    let t0 = ex.now();
    assert_eq!(ex.run_until_stalled(&mut tick), Poll::Pending);
    ex.advance(MS * 10);
    assert_eq!(ex.run_until_stalled(&mut tick), Poll::Ready(t0 + MS * 10));
    ex.advance(Duration::from_secs(1) - MS * 11);
    assert_eq!(ex.run_until_stalled(&mut s), Poll::Pending);
    ex.advance(MS);
    assert_eq!(ex.run_until_stalled(&mut s), Poll::Ready(()));
    // sleep_until's deadline is absolute.
    let mut until = Box::pin(sleep_until(ex.now() + MS * 3));
    assert_eq!(ex.run_until_stalled(&mut until), Poll::Pending);
    ex.advance(MS * 3);
    assert_eq!(ex.run_until_stalled(&mut until), Poll::Ready(()));
}

#[test]
fn a_reset_sleep_moves_its_deadline() {
    let ex = TestExecutor::new().unwrap();
    let t0 = ex.now();
    let mut fut: Pin<Box<dyn Future<Output = Duration>>> = Box::pin(async move {
        let mut s = Box::pin(sleep(MS * 10));
        std::future::poll_fn(|cx| {
            let _ = s.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        s.as_mut().reset(t0 + MS * 30);
        assert_eq!(s.deadline(), t0 + MS * 30);
        s.await;
        tally::time::now() - t0
    });
    assert_eq!(ex.run_until_stalled(&mut fut), Poll::Pending);
    assert_eq!(ex.pending_timers(), 1);
    ex.advance(MS * 20);
    assert_eq!(ex.run_until_stalled(&mut fut), Poll::Pending);
    ex.advance(MS * 10);
    assert_eq!(ex.run_until_stalled(&mut fut), Poll::Ready(MS * 30));
}

#[test]
fn real_clock_smoke() {
    let rt = tally::LocalReactor::new().unwrap();
    let start = Instant::now();
    let (slept, timed_out) = util::bounded(&rt, "real sleeps", async {
        sleep(MS * 20).await;
        let slept = start.elapsed();
        let t = timeout(MS * 20, sleep(Duration::from_secs(30))).await;
        (slept, t)
    });
    let total = start.elapsed();
    assert!(slept >= MS * 20, "a 20 ms sleep took {slept:?}");
    assert!(slept < Duration::from_secs(2), "a 20 ms sleep took {slept:?}");
    assert_eq!(timed_out, Err(Elapsed));
    assert!(total >= MS * 40 && total < Duration::from_secs(3), "{total:?}");
}

/// `Instant + Duration::MAX` overflows: a deadline past `Instant`'s range
/// must mean "never", not a panic, on both clocks.
#[test]
fn sleeps_and_timeouts_of_duration_max_never_fire_and_never_panic() {
    let ex = TestExecutor::new().unwrap();
    let fired = Rc::new(RefCell::new(false));
    let f = fired.clone();
    drop(ex.spawn(async move {
        sleep(Duration::MAX).await;
        *f.borrow_mut() = true;
    }));
    stall(&ex);
    ex.advance(Duration::from_secs(86_400 * 365));
    stall(&ex);
    assert!(!*fired.borrow(), "a sleep of Duration::MAX fired after a year");
    let mut ready = Box::pin(timeout(Duration::MAX, async { 7 }));
    assert_eq!(ex.run_until_stalled(&mut ready), Poll::Ready(Ok(7)));
    let mut every = interval(Duration::MAX);
    let mut tick = Box::pin(async move { every.tick().await });
    assert_eq!(ex.run_until_stalled(&mut tick), Poll::Pending);

    // The real clock, made outside the executor and inside it.
    let rt = tally::LocalReactor::new().unwrap();
    let early = sleep(Duration::MAX);
    let r = rt.block_on(async move {
        let inner = timeout(Duration::MAX, async { 3 }).await;
        let raced = timeout(MS, early).await;
        (inner, raced)
    });
    assert_eq!(r, (Ok(3), Err(Elapsed)));
}
