//! W6 `timers`: 100k timers set with deadlines spread over 20-40 ms from
//! now, every other one cancelled before it fires, and the rest waited for.
//!
//! Most of a run's wall-clock time is spent waiting for the deadlines, which
//! is the same for every engine, so the throughput is timers per second of
//! the thread's **CPU** time (`CLOCK_THREAD_CPUTIME_ID`): the cost of
//! setting, cancelling and firing them.
//!
//! * **mio**: mio has no timers, so the hand-written loop keeps the usual
//!   ones: a `BinaryHeap` of (deadline, id), cancellation by marking the id
//!   (entries are skipped when they surface), and `Poll::poll` with a
//!   timeout up to the next deadline.
//! * **tokio**: `tokio::time::sleep_until` futures (boxed, as `Sleep` is
//!   `!Unpin`), each polled once to enter the timer wheel; every other one
//!   is dropped (cancelled); the driving task then awaits the rest in order.
//! * **tally**: the tokio program on `tally::LocalReactor` with
//!   `tally::time::sleep_until`, unboxed (tally's `Sleep` is `Unpin`).
//! * **tally-epoll**: the tally program on an executor whose reactor is
//!   built with `Backend::Epoll`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll as TaskPoll;
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use tally_reactor::Backend;

use super::{Config, tally_executor_on, tokio_runtime};
use crate::harness::{Case, Engine, Run, Spec, Window};

/// Timers per run.
pub const TIMERS: u64 = 100_000;
/// The first deadline, from the start of the run.
const FIRST: Duration = Duration::from_millis(20);
/// The spread of deadlines after [`FIRST`].
const SPREAD: Duration = Duration::from_millis(20);

/// The W6 spec.
pub fn spec(_cfg: Config) -> Spec {
    Spec {
        name: "W6 timers".into(),
        unit: "timers/cpu-s",
        count: TIMERS,
        warmup: TIMERS / 10,
        cases: vec![
            Case::new(Engine::Tally, |n| tally(n, Backend::Auto)),
            Case::new(Engine::TallyEpoll, |n| tally(n, Backend::Epoll)),
            Case::new(Engine::Mio, mio),
            Case::new(Engine::Tokio, tokio),
        ],
    }
}

/// The deadline of timer `i` of `n`, after `start`.
fn deadline<I: std::ops::Add<Duration, Output = I>>(start: I, i: u64, n: u64) -> I {
    start + FIRST + SPREAD.mul_f64(i as f64 / n as f64)
}

fn mio(n: u64) -> io::Result<Run> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::with_capacity(n as usize);
    let mut cancelled = vec![false; n as usize];
    let window = Window::open_with_cpu();
    let start = Instant::now();
    for i in 0..n {
        heap.push(Reverse((deadline(start, i, n), i)));
    }
    for i in (0..n).step_by(2) {
        cancelled[i as usize] = true;
    }
    let want = n / 2;
    let mut fired = 0;
    while fired < want {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            if !cancelled[id as usize] {
                fired += 1;
            }
        }
        if fired < want {
            let next = heap.peek().map(|Reverse((at, _))| at.saturating_duration_since(now));
            crate::workloads::mio_poll(&mut poll, &mut events, next)?;
        }
    }
    Ok(window.close(n))
}

fn tokio(n: u64) -> io::Result<Run> {
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let mut sleeps = Vec::with_capacity(n as usize);
        let mut kept = Vec::with_capacity(n as usize / 2);
        let window = Window::open_with_cpu();
        let start = tokio::time::Instant::now();
        for i in 0..n {
            sleeps.push(Box::pin(tokio::time::sleep_until(deadline(start, i, n))));
        }
        // One poll each enters them in the timer wheel.
        std::future::poll_fn(|cx| {
            for s in &mut sleeps {
                let _ = s.as_mut().poll(cx);
            }
            TaskPoll::Ready(())
        })
        .await;
        for (i, s) in sleeps.drain(..).enumerate() {
            if i % 2 == 1 {
                kept.push(s);
            }
        }
        for s in kept.drain(..) {
            let s: Pin<Box<tokio::time::Sleep>> = s;
            s.await;
        }
        Ok(window.close(n))
    })
}

fn tally(n: u64, backend: Backend) -> io::Result<Run> {
    let rt = tally_executor_on(backend)?;
    rt.block_on(async {
        let mut sleeps = Vec::with_capacity(n as usize);
        let mut kept = Vec::with_capacity(n as usize / 2);
        let window = Window::open_with_cpu();
        let start = tally::time::now();
        for i in 0..n {
            // tally's `Sleep` is `Unpin`: no box.
            sleeps.push(tally::time::sleep_until(deadline(start, i, n)));
        }
        // One poll each enters them in the timer table.
        std::future::poll_fn(|cx| {
            for s in &mut sleeps {
                let _ = Pin::new(s).poll(cx);
            }
            TaskPoll::Ready(())
        })
        .await;
        for (i, s) in sleeps.drain(..).enumerate() {
            if i % 2 == 1 {
                kept.push(s);
            }
        }
        for s in kept.drain(..) {
            s.await;
        }
        Ok(window.close(n))
    })
}
